"""The benchmark's verdict on the issue's targets (cli/bench/targets.py)."""

from __future__ import annotations

from typing import Any

from meridian.cli.bench.targets import check_targets


def document(ratios: dict[str, dict[str, Any]], *, open_loop: float = 0.0) -> dict[str, Any]:
    return {"options": {"open_loop_rate": open_loop}, "ratios": ratios}


def verdicts(checks: list[Any]) -> dict[tuple[str, str], bool]:
    return {(check.target.split(" (")[0], check.operation): check.met for check in checks}


def test_each_target_is_met_or_not_by_its_limit() -> None:
    checks = check_targets(
        document(
            {
                "Encrypt": {"of_ceiling": 0.8, "p99_vs_ceiling_p99": 2.5, "vs_moto": 12.0},
                "Decrypt": {"of_ceiling": 0.79, "p99_vs_ceiling_p99": 2.0, "vs_moto": 3.1},
                "BatchEncrypt": {"of_ceiling": 0.02, "items_vs_single": 5.2},
                "BatchDecrypt": {"items_vs_single": 4.9},
                # Not an operation the throughput targets name: no rows of its own.
                "Sign-ECC_NIST_P256": {"of_ceiling": 0.2, "vs_moto": 2.0},
            }
        )
    )
    assert verdicts(checks) == {
        ("throughput >= 0.8 x the empty call's, audit on", "Encrypt"): True,
        ("p99 <= 2 x the empty call's p99", "Encrypt"): False,
        (">= 10 x moto's throughput", "Encrypt"): True,
        ("throughput >= 0.8 x the empty call's, audit on", "Decrypt"): False,
        ("p99 <= 2 x the empty call's p99", "Decrypt"): True,
        (">= 10 x moto's throughput", "Decrypt"): False,
        ("batch of 100: >= 5 x the items/s of single calls", "BatchEncrypt"): True,
        ("batch of 100: >= 5 x the items/s of single calls", "BatchDecrypt"): False,
    }


def test_an_open_loop_run_speaks_to_latency_only() -> None:
    checks = check_targets(
        document(
            {
                "Encrypt": {"of_ceiling": 1.0, "p99_vs_ceiling_p99": 1.5},
                "BatchEncrypt": {"items_vs_single": 9.0},
            },
            open_loop=500,
        )
    )
    assert [(check.target, check.met) for check in checks] == [
        ("p99 <= 2 x the empty call's p99 (same offered load)", True)
    ]


def test_what_did_not_run_is_left_out() -> None:
    assert check_targets(document({"GenerateDataKey": {}})) == []
    assert check_targets({"ratios": {}}) == []


def test_replication_targets_come_from_the_lag_and_each_catch_up() -> None:
    from meridian.cli.bench.targets import check_replication_targets, target_lines

    checks = check_replication_targets(
        {
            "lag": {"achieved_rate_per_s": 48.4, "lag_ms": {"p99": 100.0}},
            "catch_up": [
                {"backlog_entries": 5000, "entries_per_s_since_restart": 1414.0},
                {"backlog_entries": 20000, "entries_per_s_since_restart": 5100.0},
            ],
        }
    )
    assert [(check.operation, check.met) for check in checks] == [
        ("48.4 changes/s", True),
        ("5000 entries", False),
        ("20000 entries", True),
    ]
    lines = target_lines(checks)
    assert lines[1].endswith("1414 (limit 5000) NOT met")
    assert check_replication_targets({"lag": {}, "catch_up": []}) == []
