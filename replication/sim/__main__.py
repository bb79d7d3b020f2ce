import sys

from meridian.replication.sim.run import main

sys.exit(main())
