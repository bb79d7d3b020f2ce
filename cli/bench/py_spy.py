"""py-spy as the benchmarks run it: sampling a node's GIL while it serves a workload.

``--gil`` keeps the samples where a thread holds the GIL, which is what bounds one
node process; ``--nonblocking`` samples without stopping it, which perturbs the figures
less; the output is collapsed stacks (one line per stack and its count), which
`flamegraph.pl` or speedscope draw, grep reads and `profile_summary.py` sorts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SAMPLES_PER_S = 200


def find_py_spy() -> str | None:
    """The py-spy executable (the `bench` extra installs it beside Python), or None."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def record(
    py_spy: str, pid: int, output: Path, duration_s: float, *, subprocesses: bool = False
) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` (and its children, with ``subprocesses``) into ``output``."""
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--gil",
            *(["--subprocesses"] if subprocesses else []),
            "--nonblocking",
            "--rate",
            str(SAMPLES_PER_S),
            "--format",
            "raw",
            "--duration",
            str(max(1, round(duration_s))),
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
