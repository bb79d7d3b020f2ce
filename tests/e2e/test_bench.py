"""`meridian bench` runs end to end and writes figures (a smoke run, not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

OPERATIONS = ("Encrypt", "GenerateMac", "Verify-ML_DSA_65")


def bench(*arguments: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`meridian bench ARGUMENTS` in a child process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "meridian", "bench", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bench_smoke(tmp_path: Path) -> None:
    """A tiny run of every part but the peer: the ceiling, audit on, audit off."""
    output = tmp_path / "bench.json"
    result = bench(
        "--ops",
        ",".join(OPERATIONS),
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--concurrency",
        "2",
        "--no-peer",
        "--output",
        str(output),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(output.read_text())
    assert document["options"]["operations"] == list(OPERATIONS)
    assert document["options"]["audit_off"] is True
    assert len(document["rounds"]) == 1
    by_run = {(r["target"], r["operation"]): r for r in document["results"]}
    expected = [("ceiling (empty)", "Empty")] + [
        (target, operation)
        for operation in OPERATIONS
        for target in ("meridian", "meridian (audit off)")
    ]
    assert sorted(by_run) == sorted(expected)
    for key in expected:
        run = by_run[key]
        assert run["operations"] > 0, key
        assert run["errors"] == 0, key
        assert run["p50_ms"] <= run["p99_ms"] <= run["p999_ms"], key
        assert run["server_cpu_ms_per_op"] is not None, key
        assert run["server_cpu_ms_per_op"] > 0, key
    assert set(document["ratios"]) == set(OPERATIONS)
    for operation in OPERATIONS:
        row = document["ratios"][operation]
        assert row["of_ceiling"] > 0
        assert row["cpu_vs_ceiling"] > 0
        assert row["p99_vs_ceiling_p99"] > 0
        assert row["audit_off_of_ceiling"] > 0
        assert row["audit_on_vs_off"] > 0
        assert "vs_moto" not in row  # the peer was not run
    # The final tables, printed plainly off a terminal.
    assert "Meridian side by side" in result.stdout
    assert "Verify-ML_DSA_65" in result.stdout


def test_bench_workers_smoke(tmp_path: Path) -> None:
    """`--workers 1,2`: a single call and a batch on a node of one and of two workers,
    with the CPU per item of the node and of the load generator, and the table."""
    output = tmp_path / "workers.json"
    result = bench(
        "--workers",
        "1,2",
        "--ops",
        "Encrypt,BatchEncrypt",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--concurrency",
        "4",
        "--output",
        str(output),
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(output.read_text())
    runs = {(row["workers"], row["operation"]): row for row in document["results"]}
    assert sorted(runs) == [
        (1, "BatchEncrypt"),
        (1, "Encrypt"),
        (2, "BatchEncrypt"),
        (2, "Encrypt"),
    ]
    for key, row in runs.items():
        assert row["errors"] == 0, key
        assert row["items_per_s"] > 0, key
        assert row["node_cpu_ms_per_item"] > 0, key
        assert row["load_generator_cpu_ms_per_item"] > 0, key
        # The supervisor, then each worker; a lone node is one process.
        assert len(row["cpu_cores"]["node_per_process"]) == 1 + (key[0] > 1) * key[0], key
    batch = runs[(1, "BatchEncrypt")]
    assert batch["items_per_call"] == 100
    assert batch["items_per_s"] == pytest.approx(batch["ops_per_s"] * 100, rel=0.01)
    summary = {row["operation"]: row for row in document["summary"]}
    assert set(summary) == {"Encrypt", "BatchEncrypt"}
    for row in summary.values():
        assert set(row["items_per_s"]) == {"1", "2"}
        assert row["measured_ratio"]["1"] == 1.0
        assert row["ceiling_ratio"]["2"] > 0
    assert "ceiling x" in result.stdout and "BatchEncrypt" in result.stdout


def test_bench_open_loop_runs_at_the_rate(tmp_path: Path) -> None:
    """`--open-loop`: the ceiling and the operation both at the same fixed rate."""
    output = tmp_path / "open-loop.json"
    result = bench(
        "--ops",
        "Encrypt",
        "--open-loop",
        "40",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--no-audit-off",
        "--output",
        str(output),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "open loop at 40 calls/s" in result.stdout
    document = json.loads(output.read_text())
    assert document["options"]["open_loop_rate"] == 40
    runs = {(r["target"], r["operation"]): r for r in document["results"]}
    # The peer is not run in open loop; both of ours made every call that was due.
    assert sorted(runs) == [("ceiling (empty)", "Empty"), ("meridian", "Encrypt")]
    for run in runs.values():
        assert run["errors"] == 0
        assert 36 <= run["operations"] <= 44, run
    # The report judges the latency target only: at one rate, throughput says nothing.
    assert [check["target"] for check in document["targets"]] == [
        "p99 <= 2 x the empty call's p99 (same offered load)"
    ]
    assert "Targets (issue 9) against this run" in result.stdout


def test_bench_side_by_side_on_nodes_of_two_workers(tmp_path: Path) -> None:
    """`--node-workers 2`: the ceiling and the operation on a node of two workers, its
    CPU counted over every worker process."""
    output = tmp_path / "node-workers.json"
    result = bench(
        "--ops",
        "Encrypt",
        "--node-workers",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--concurrency",
        "4",
        "--no-peer",
        "--no-audit-off",
        "--output",
        str(output),
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 workers: pids [" in result.stdout
    document = json.loads(output.read_text())
    assert document["options"]["node_workers"] == 2
    for run in document["results"]:
        assert run["errors"] == 0 and run["operations"] > 0, run
        assert run["server_cpu_ms_per_op"] > 0, run
    bad = bench("--node-workers", "0", timeout=60)
    assert bad.returncode == 2 and "--node-workers takes 1 to" in bad.stdout
