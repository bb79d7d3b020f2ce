"""The replication benchmark's options and figures (cli/bench/replication.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from meridian.cli.bench import replication


def _parse(*argv: str, standalone: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    replication.add_arguments(parser, standalone=standalone)
    if not standalone:
        parser.add_argument("--duration", type=float, default=None)
        parser.add_argument("--output", type=Path, default=Path("bench-results/latest.json"))
    return parser.parse_args(list(argv))


def test_options_and_their_defaults() -> None:
    options = replication.options_from(_parse("--changes", "5000,20000", "--rate", "80"))
    assert options.changes == [5000, 20000] and options.rate_per_s == 80.0
    assert options.duration_s == replication.DURATION_S_DEFAULT
    assert options.output == replication.OUTPUT_DEFAULT
    # Under `meridian bench`, its own default output is replaced by this benchmark's file,
    # and a file the user names is kept.
    bench_default = Path("bench-results/latest.json")
    args = _parse("--replication", standalone=False)
    assert args.replication
    assert replication.options_from(args, default_output=bench_default).output == (
        replication.OUTPUT_DEFAULT
    )
    named = _parse("--replication", "--output", "x.json", standalone=False)
    assert replication.options_from(named, default_output=bench_default).output == Path("x.json")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (("--changes", "1"), "--changes"),
        (("--changes", ""), "--changes"),
        (("--rate", "0"), "--rate"),
        (("--duration", "0"), "--duration"),
        (("--writers", "0"), "--writers"),
    ],
)
def test_bad_options_are_refused(argv: tuple[str, ...], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        replication.options_from(_parse(*argv))


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    summary = replication._summary(values)
    assert summary == {
        "count": 100,
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "max": 100.0,
        "mean": 50.5,
    }
    assert replication._summary([7.0])["p99"] == 7.0
    assert replication._summary([])["count"] == 0


def test_the_table_ends_with_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    from meridian.cli.bench.replication import print_table

    summary = {"p50": 54.0, "p90": 85.0, "p99": 100.0, "max": 127.0}
    print_table(
        {
            "host": {"load_average_at_start": 1.7},
            "lag": {
                "changes": 500,
                "target_rate_per_s": 50,
                "achieved_rate_per_s": 48.4,
                "errors": 0,
                "lag_ms": summary,
                "replicate_key_latency_ms": summary,
            },
            "catch_up": [
                {
                    "changes": 5000,
                    "backlog_entries": 5001,
                    "first_batch_after_restart_s": 1.5,
                    "zero_backlog_after_restart_s": 5.2,
                    "entries_per_s_since_restart": 953.0,
                    "entries_per_s_after_first_batch": 1220.0,
                    "node_cpu_ms_per_entry": {"us-east-1": 0.43, "eu-west-1": 0.55},
                }
            ],
        }
    )
    printed = capsys.readouterr().out
    assert "targets (issue 9) against this run" in printed
    assert "replication lag p99 <= 200 ms on loopback under load [48.4 changes/s]: 100" in printed
    assert "[5001 entries]: 953 (limit 5000) NOT met" in printed
