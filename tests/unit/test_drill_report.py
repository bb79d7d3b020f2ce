"""A drill's numbers from a recorded history, and its PNG timeline, without a cluster."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import pytest

from meridian.cli import cluster_inspect, cluster_state, deploy_gen
from meridian.cli.drill import checks, report, timeline
from meridian.cli.drill.checks import Verification
from meridian.cli.drill.report import DrillResult, Event
from meridian.cli.drill.workload import DrillKeys, LagSample, Record


def record(start: float, kind: str, region: str | None, error: str | None = None) -> Record:
    return Record(started_s=start, duration_s=0.1, kind=kind, region=region, error=error)


def result(records: list[Record], verification: Verification | None = None) -> DrillResult:
    return DrillResult(
        name="region-outage",
        target="us-east-1",
        exercises=("something",),
        skipped=None,
        fault_window=(2.0, 6.0),
        events=(Event(0.0, "workload started"), Event(2.0, "kill"), Event(6.0, "start")),
        records=tuple(records),
        verification=verification,
        duration_s=10.0,
    )


HISTORY = [
    record(0.5, "random", "us-east-1"),
    record(1.5, "srk:us-east-1", "us-east-1"),
    record(2.1, "random", "us-east-1", "ServiceUnavailableError"),
    record(2.2, "srk:us-east-1", "us-east-1", "ServiceUnavailableError"),
    record(3.0, "random", "eu-west-1"),  # failed over: ends at 3.1
    record(3.5, "srk:eu-west-1", "eu-west-1"),
    record(7.0, "srk:us-east-1", "us-east-1"),  # recovered: ends at 7.1
    record(9.0, "random", "us-east-1"),
    record(9.5, "write:us-east-1", None, "ServiceUnavailableError"),
]


def test_failover_gap_and_recovery_times_follow_their_definitions() -> None:
    drill = result(HISTORY)
    assert report.time_to_failover_s(drill) == pytest.approx(1.1)
    # Successes of failover-capable calls end at 3.1 and 9.1: the gap is 6.0 s.
    assert report.longest_gap_s(drill) == pytest.approx(6.0)
    assert report.time_to_recover_s(drill) == pytest.approx(1.1)
    # Successful random calls: 0.5 (target), 3.0 (elsewhere), 9.0 (target).
    assert report.served_by_target_percent(drill) == {
        "before": 100.0,
        "during": 0.0,
        "after": 100.0,
    }


def test_the_summary_counts_calls_per_region_and_operation() -> None:
    verification = Verification(
        writes_acknowledged=4,
        writes_lost=(),
        writes_unverified=1,
        ciphertexts_checked=3,
        ciphertexts_failed=(),
        convergence_s=None,
        convergence_note="nothing replicates here",
        audit="not checked",
    )
    document = report.summarize(result(HISTORY, verification))
    assert document["calls"]["by_region"] == {
        "eu-west-1": {"attempted": 2, "succeeded": 2, "failed": 0},
        "unknown": {"attempted": 1, "succeeded": 0, "failed": 1},
        "us-east-1": {"attempted": 6, "succeeded": 4, "failed": 2},
    }
    assert document["calls"]["by_operation"]["random"] == {
        "attempted": 4,
        "succeeded": 3,
        "failed": 1,
        "errors": {"ServiceUnavailableError": 1},
    }
    assert document["failover"]["errors_in_failover_capable_calls_during_fault"] == 1
    assert document["checks"]["acknowledged_writes_lost"] == 0
    assert report.passed(document)
    lines = report.terminal_lines(document)
    assert "  time to fail over: 1.100 s" in lines
    assert (
        "  failover-capable calls served by us-east-1: before 100%, during 0%, after 100%" in lines
    )
    assert "  acknowledged writes lost: 0 of 4 (1 unverified)" in lines
    assert lines[-1] == "  result: PASS (DESIGN.md section 7)"

    lost = Verification(**{**verification.__dict__, "writes_lost": ("arn:lost",)})
    failed = report.summarize(result(HISTORY, lost))
    assert not report.passed(failed)
    assert report.terminal_lines(failed)[-1] == "  result: FAIL (DESIGN.md section 7)"
    broken = Verification(**{**verification.__dict__, "audit": "BROKEN: us-east-1: gap"})
    assert not report.passed(report.summarize(result(HISTORY, broken)))
    diverged = Verification(
        **{**verification.__dict__, "shared_settings": "DIVERGED: eu-west-1 says False"}
    )
    assert not report.passed(report.summarize(result(HISTORY, diverged)))


def test_no_failover_is_reported_as_missing_not_as_zero() -> None:
    only_home = [record(3.0, "random", "us-east-1", "ServiceUnavailableError")]
    drill = result(only_home)
    assert report.time_to_failover_s(drill) is None
    assert report.time_to_recover_s(drill) is None
    assert report.longest_gap_s(drill) == pytest.approx(8.0)


def test_the_timeline_is_a_valid_png_with_the_fault_shaded() -> None:
    canvas = timeline.render(result(HISTORY))
    data = canvas.png()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (canvas.width, canvas.height)
    # Decoding the image data gives one filter byte plus a row of RGB per line.
    idat_length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_length])
    assert len(raw) == height * (1 + width * 3)
    # The middle of the fault window, above the lanes' bars, is shaded.
    x = timeline.LEFT + int((width - timeline.LEFT - timeline.RIGHT) * 4.0 / 10.0)
    y = timeline.TOP + 5
    offset = y * (1 + width * 3) + 1 + x * 3
    assert tuple(raw[offset : offset + 3]) == timeline.SHADE


def test_convergence_is_timed_from_the_replication_status(tmp_path: Path) -> None:
    cluster_state.write(deploy_gen.node_spec(tmp_path))
    keys = DrillKeys("us-east-1", {}, None, (), "no MRK")
    polls = {"count": 0}

    def probe(spec: object, region: str, timeout_s: float) -> list[cluster_inspect.PeerLag]:
        polls["count"] += 1
        # Behind for the first two rounds over the three regions (and the first check).
        backlog = 3 if polls["count"] <= 7 else 0
        return [cluster_inspect.PeerLag("eu-west-1", 10, backlog, 0.5 if backlog else 0.0)]

    moments = iter(float(second) for second in range(100))
    seconds, note = checks.wait_converged(
        tmp_path, keys, None, clock=lambda: next(moments), replication_probe=probe
    )
    assert note == "every peer's replication backlog is empty"
    # The fake clock ticks once per read: start, three rounds (two behind), the answer.
    assert seconds == 4.0

    none, why = checks.wait_converged(
        tmp_path, keys, None, replication_probe=cluster_inspect.replication_not_reported
    )
    assert none is None
    assert why.startswith("nothing replicates here (no multi-region key)")


def test_replication_lag_is_reported_and_drawn() -> None:
    samples = (LagSample(1.0, "us-east-1", 0.2, 1), LagSample(4.0, "eu-west-1", 2.5, 40))
    drill = dataclasses.replace(result(HISTORY), lag_samples=samples)
    document = report.summarize(drill)
    assert document["replication_lag"]["max_lag_s"] == 2.5
    assert "  replication lag: at most 2.500 s (2 samples)" in report.terminal_lines(document)
    canvas = timeline.render(drill)
    assert bytes(timeline.LAG) in bytes(canvas.pixels)

    without = dataclasses.replace(result(HISTORY), lag_note="not reported (issue 3)")
    lines = report.terminal_lines(report.summarize(without))
    assert "  replication lag: not reported (issue 3)" in lines
