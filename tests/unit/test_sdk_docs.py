"""docs/sdk.md's retry table and exception trees are generated from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_sdk_guide_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-sdk-docs"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        "docs/sdk.md is stale (the operation table or an exception tree changed): "
        f"run scripts/gen-sdk-docs\n{result.stdout}{result.stderr}"
    )
