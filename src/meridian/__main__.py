"""`python -m meridian` is the `meridian` command."""

import sys

from meridian.cli.main import main

sys.exit(main())
