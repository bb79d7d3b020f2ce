"""The committed protobuf/gRPC code is exactly what scripts/gen-proto makes from proto/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _files(base: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(base)): path
        for path in base.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto"), str(tmp_path)],
        check=True,
        cwd=ROOT,
        env={"PYTHON": sys.executable, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    fresh = _files(tmp_path / "meridian" / "proto")
    committed = _files(ROOT / "src" / "meridian" / "proto")
    assert sorted(fresh) == sorted(committed), "generated files differ: run scripts/gen-proto"
    stale = [
        name
        for name, path in fresh.items()
        if not filecmp.cmp(path, committed[name], shallow=False)
    ]
    assert stale == [], f"stale generated code {stale}: run scripts/gen-proto"
