"""`meridian bench` runs end to end and writes figures (a smoke run, not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_bench_smoke(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meridian",
            "bench",
            "--operations",
            "Encrypt,Decrypt",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--concurrency",
            "4",
            "--no-peer",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(output.read_text())
    by_operation = {(r["target"], r["operation"]): r for r in document["results"]}
    for key in (("ceiling (empty)", "Empty"), ("meridian", "Encrypt"), ("meridian", "Decrypt")):
        assert by_operation[key]["operations"] > 0
        assert by_operation[key]["errors"] == 0
    assert document["ratios"]["Encrypt"]["of_ceiling"] > 0
    assert "of ceiling" in result.stdout
