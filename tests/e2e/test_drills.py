"""Short versions of every drill against a real three-region cluster behind its proxies.

`meridian drill NAME --dir DIR` runs the long versions (5 s + 10 s + 10 s phases).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.cli import cluster, cluster_network
from meridian.cli.drill import drills, report
from meridian.cli.drill.report import DrillResult

pytestmark = pytest.mark.e2e

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
TARGET = "us-east-1"


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("drills") / "cluster"
    # Flat links keep the drills short; the faults are the drills' own.
    cluster.up(directory, REGIONS, network="flat")
    try:
        yield directory.resolve()
    finally:
        with contextlib.suppress(cluster.ClusterError):
            cluster.down(directory, stop_timeout_s=5)


def run(cluster_dir: Path, name: str) -> tuple[DrillResult, dict]:
    result = drills.run(name, cluster_dir, target=TARGET, durations=drills.Durations.short())
    return result, report.summarize(result)


def during_fault(result: DrillResult, kind: str) -> list:
    assert result.fault_window is not None
    start, heal = result.fault_window
    return [
        item
        for item in result.records
        if item.kind == kind
        and item.started_s >= start
        and item.started_s + item.duration_s <= heal
    ]


def assert_whole_afterwards(cluster_dir: Path, document: dict) -> None:
    assert report.passed(document), json.dumps(document["checks"], indent=2)
    assert document["checks"]["acknowledged_writes_lost"] == 0
    assert document["checks"]["ciphertexts_that_no_longer_decrypt"] == []
    assert document["checks"]["ciphertexts_checked"] > 0
    assert all(item.health == "SERVING" for item in cluster.status(cluster_dir))
    assert cluster_network.network_faults(cluster_dir) == {}


def test_region_outage(cluster_dir: Path) -> None:
    result, document = run(cluster_dir, "region-outage")
    assert result.skipped is None
    assert [event.label for event in result.events][1:3] == [
        f"kill -9 {TARGET}",
        f"{TARGET} started again on its data",
    ]
    # The dead region's own keys fail while it is down; the others' never fail.
    lost = during_fault(result, f"srk:{TARGET}")
    assert lost and all(not item.ok for item in lost)
    for region in REGIONS[1:]:
        counts = document["calls"]["by_operation"][f"srk:{region}"]
        assert counts["succeeded"] > 0
        assert counts["failed"] == 0
    assert document["checks"]["acknowledged_writes"] > 0
    if "mrk-encrypt" in document["calls"]["by_operation"]:
        # The target: no MRK call fails while a replica region is up.
        assert document["failover"]["errors_in_failover_capable_calls_during_fault"] == 0
        assert document["failover"]["time_to_failover_s"] is not None
    assert_whole_afterwards(cluster_dir, document)


def test_partition_cuts_peers_not_clients(cluster_dir: Path) -> None:
    result, document = run(cluster_dir, "partition")
    assert result.skipped is None
    served = during_fault(result, f"srk:{TARGET}")
    assert served and all(item.ok for item in served)
    assert document["calls"]["by_operation"][f"write:{TARGET}"]["failed"] == 0
    assert_whole_afterwards(cluster_dir, document)


def test_slow_region_slows_its_own_calls(cluster_dir: Path) -> None:
    result, document = run(cluster_dir, "slow-region")
    slowed = [item for item in during_fault(result, f"srk:{TARGET}") if item.ok]
    # Encrypt and Decrypt: two round trips over a 300 ms one-way link.
    assert slowed and all(item.duration_s >= 2 * 2 * 0.300 for item in slowed)
    assert_whole_afterwards(cluster_dir, document)


def test_crash_loop_loses_no_acknowledged_write(cluster_dir: Path) -> None:
    result, document = run(cluster_dir, "crash-loop")
    kills = [event for event in result.events if event.label.startswith(f"kill -9 {TARGET}")]
    assert len(kills) == drills.CRASH_LOOP_KILLS
    assert document["calls"]["by_operation"][f"write:{TARGET}"]["succeeded"] > 0
    assert_whole_afterwards(cluster_dir, document)


def test_primary_outage_runs_or_says_what_it_needs(cluster_dir: Path) -> None:
    result, document = run(cluster_dir, "primary-outage")
    if result.skipped is not None:
        # Only a cluster without multi-region keys may skip it; one whose MRKs cannot be
        # replicated fails here.
        assert "needs a multi-region key with a replica" in result.skipped
        assert "not available on this cluster" in result.skipped, result.skipped
        assert report.passed(document)
        return
    labels = [event.label for event in result.events]
    assert labels[1].startswith(f"kill -9 {TARGET}, the primary region of mrk-")
    # The promotion was attempted through ReplicationAdmin, and its outcome recorded.
    assert any(label.startswith("forced promotion") for label in labels), labels
    assert any(label.startswith(f"old primary {TARGET} back") for label in labels), labels
    assert_whole_afterwards(cluster_dir, document)


def test_command_line_writes_the_reports(cluster_dir: Path, tmp_path: Path) -> None:
    json_path, png_path = tmp_path / "report.json", tmp_path / "timeline.png"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "meridian",
            "drill",
            "partition",
            "--dir",
            str(cluster_dir),
            "--target",
            "eu-west-1",
            "--baseline-s",
            "1",
            "--fault-s",
            "1",
            "--recovery-s",
            "1",
            "--json",
            str(json_path),
            "--png",
            str(png_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "result: PASS" in completed.stdout
    assert "calls per region" in completed.stdout
    document = json.loads(json_path.read_text())
    assert document["drill"] == "partition"
    assert document["target"] == "eu-west-1"
    assert set(document["calls"]["by_region"]) >= set(REGIONS)
    assert png_path.read_bytes().startswith(b"\x89PNG")

    unknown = subprocess.run(
        [
            sys.executable,
            "-m",
            "meridian",
            "drill",
            "region-outage",
            "--dir",
            str(cluster_dir),
            "--target",
            "mars-north-1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 1
    assert "unknown region 'mars-north-1'" in unknown.stderr
