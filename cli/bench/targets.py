"""The issue's targets, checked against a side-by-side run (issue 9: "in the
benchmark's report, not as timed tests").

Each target is a row: what it asks, what this run measured, and whether that meets it.
A target whose inputs did not run (no peer, no batch workload, an open-loop run for a
throughput target) is left out rather than shown as met or missed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Encrypt, Decrypt and GenerateDataKey: the operations the throughput targets name.
CORE_OPERATIONS = ("Encrypt", "Decrypt", "GenerateDataKey")
OF_CEILING_MIN = 0.80
P99_VS_CEILING_MAX = 2.0
VS_MOTO_MIN = 10.0
BATCH_ITEMS_VS_SINGLE_MIN = 5.0


@dataclass(frozen=True)
class TargetCheck:
    target: str  # what is asked, in words
    operation: str
    measured: float
    limit: float
    met: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "operation": self.operation,
            "measured": self.measured,
            "limit": self.limit,
            "met": self.met,
        }


def check_targets(document: Mapping[str, Any]) -> list[TargetCheck]:
    """The targets this run can speak to, from its ``ratios`` (cli/bench/runner.py)."""
    ratios: Mapping[str, Mapping[str, Any]] = document.get("ratios", {})
    open_loop = bool(document.get("options", {}).get("open_loop_rate"))
    checks: list[TargetCheck] = []
    for operation in CORE_OPERATIONS:
        row = ratios.get(operation)
        if row is None:
            continue
        of_ceiling = row.get("of_ceiling")
        if of_ceiling is not None and not open_loop:
            # In an open loop both run at the same rate: throughput says nothing there.
            checks.append(
                TargetCheck(
                    "throughput >= 0.8 x the empty call's, audit on",
                    operation,
                    of_ceiling,
                    OF_CEILING_MIN,
                    of_ceiling >= OF_CEILING_MIN,
                )
            )
        p99 = row.get("p99_vs_ceiling_p99")
        if p99 is not None:
            checks.append(
                TargetCheck(
                    "p99 <= 2 x the empty call's p99"
                    + (" (same offered load)" if open_loop else " (both saturated)"),
                    operation,
                    p99,
                    P99_VS_CEILING_MAX,
                    p99 <= P99_VS_CEILING_MAX,
                )
            )
        vs_moto = row.get("vs_moto")
        if vs_moto is not None:
            checks.append(
                TargetCheck(
                    ">= 10 x moto's throughput", operation, vs_moto, VS_MOTO_MIN, vs_moto >= 10
                )
            )
    for operation, row in ratios.items():
        items_vs_single = row.get("items_vs_single")
        if items_vs_single is not None and not open_loop:
            checks.append(
                TargetCheck(
                    "batch of 100: >= 5 x the items/s of single calls",
                    operation,
                    items_vs_single,
                    BATCH_ITEMS_VS_SINGLE_MIN,
                    items_vs_single >= BATCH_ITEMS_VS_SINGLE_MIN,
                )
            )
    return checks


REPLICATION_LAG_P99_MS_MAX = 200.0
CATCH_UP_ENTRIES_PER_S_MIN = 5000.0


def check_replication_targets(document: Mapping[str, Any]) -> list[TargetCheck]:
    """Lag p99 and catch-up rate (cli/bench/replication.py's document)."""
    checks: list[TargetCheck] = []
    p99 = document.get("lag", {}).get("lag_ms", {}).get("p99")
    if p99 is not None:
        checks.append(
            TargetCheck(
                "replication lag p99 <= 200 ms on loopback under load",
                f"{document['lag'].get('achieved_rate_per_s')} changes/s",
                p99,
                REPLICATION_LAG_P99_MS_MAX,
                p99 <= REPLICATION_LAG_P99_MS_MAX,
            )
        )
    for run in document.get("catch_up", []):
        rate = run.get("entries_per_s_since_restart")
        if rate is None:
            continue
        checks.append(
            TargetCheck(
                "catch-up >= 5,000 entries/s (from the restart)",
                f"{run.get('backlog_entries')} entries",
                rate,
                CATCH_UP_ENTRIES_PER_S_MIN,
                rate >= CATCH_UP_ENTRIES_PER_S_MIN,
            )
        )
    return checks


def target_lines(checks: Sequence[TargetCheck]) -> list[str]:
    """Plain lines for reports printed without a table."""
    return [
        f"  {check.target} [{check.operation}]: {check.measured:g} "
        f"(limit {check.limit:g}) {'met' if check.met else 'NOT met'}"
        for check in checks
    ]
