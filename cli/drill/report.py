"""A drill's numbers: per region and per operation, failover and recovery times, checks.

Definitions (cli/drill/DESIGN.md):

- *failover-capable* operations are those any region may serve (GenerateRandom) or any
  region holding the key (MRK encrypt/decrypt, data keys on the MRK); single-region keys
  (`srk:REGION`) and writes (`write:REGION`) belong to one region and are expected to
  fail while it is gone;
- *time to fail over*: from the fault until the first failover-capable call (started
  after the fault) succeeds in a region other than the faulted one;
- *longest gap*: the longest time without any successful failover-capable call, from the
  fault until the end of the drill: what a caller of the service would feel;
- *time to recover*: from the heal until the faulted region serves its own keys again.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from meridian.cli.drill.checks import AUDIT_BROKEN, DIVERGED, Verification
from meridian.cli.drill.workload import LagSample, Record, kinds_summary

__all__ = ["FAILOVER_KINDS", "DrillResult", "Event", "summarize", "terminal_lines"]

FAILOVER_KINDS = frozenset({"random", "mrk-encrypt", "mrk-data-key"})


@dataclasses.dataclass(frozen=True)
class Event:
    at_s: float
    label: str


@dataclasses.dataclass(frozen=True)
class DrillResult:
    name: str
    target: str
    exercises: tuple[str, ...]
    skipped: str | None
    fault_window: tuple[float, float] | None  # (start, heal) seconds since the drill began
    events: tuple[Event, ...]
    records: tuple[Record, ...]
    verification: Verification | None
    duration_s: float
    lag_samples: tuple[LagSample, ...] = ()
    lag_note: str | None = None  # why there are no lag samples


def _per_region(records: Sequence[Record]) -> dict[str, dict[str, int]]:
    regions: dict[str, dict[str, int]] = {}
    for record in records:
        entry = regions.setdefault(
            record.region or "unknown", {"attempted": 0, "succeeded": 0, "failed": 0}
        )
        entry["attempted"] += 1
        entry["succeeded" if record.ok else "failed"] += 1
    return dict(sorted(regions.items()))


def _failover_kind(record: Record) -> bool:
    return record.kind in FAILOVER_KINDS


def time_to_failover_s(result: DrillResult) -> float | None:
    if result.fault_window is None:
        return None
    start, _ = result.fault_window
    for record in sorted(result.records, key=lambda item: item.started_s):
        if (
            record.started_s >= start
            and _failover_kind(record)
            and record.ok
            and record.region != result.target
        ):
            return record.started_s + record.duration_s - start
    return None


def longest_gap_s(result: DrillResult) -> float | None:
    if result.fault_window is None:
        return None
    start, _ = result.fault_window
    successes = sorted(
        record.started_s + record.duration_s
        for record in result.records
        if _failover_kind(record) and record.ok
    )
    moments = [start, *(moment for moment in successes if moment > start), result.duration_s]
    return max(later - earlier for earlier, later in itertools.pairwise(moments))


def time_to_recover_s(result: DrillResult) -> float | None:
    if result.fault_window is None:
        return None
    _, heal = result.fault_window
    own = f"srk:{result.target}"
    for record in sorted(result.records, key=lambda item: item.started_s):
        if record.kind == own and record.ok and record.started_s >= heal:
            return record.started_s + record.duration_s - heal
    return None


def served_by_target_percent(result: DrillResult) -> dict[str, float | None]:
    """Share of successful failover-capable calls the target served, before/during/after.

    For slow-region this is the number that matters: a client that moves away from a slow
    nearest region shows a low share during the fault and a high one again after it.
    """
    if result.fault_window is None:
        return {}
    start, heal = result.fault_window
    phases = {"before": (0.0, start), "during": (start, heal), "after": (heal, result.duration_s)}
    shares: dict[str, float | None] = {}
    for phase, (begin, end) in phases.items():
        served = [
            record.region == result.target
            for record in result.records
            if _failover_kind(record) and record.ok and begin <= record.started_s < end
        ]
        shares[phase] = round(100 * sum(served) / len(served), 1) if served else None
    return shares


def summarize(result: DrillResult) -> dict[str, Any]:
    """The JSON report."""
    window = result.fault_window
    during = [r for r in result.records if window and window[0] <= r.started_s < window[1]]
    failover_errors = sum(1 for r in during if _failover_kind(r) and not r.ok)
    document: dict[str, Any] = {
        "drill": result.name,
        "target": result.target,
        "exercises": list(result.exercises),
        "skipped": result.skipped,
        "duration_s": round(result.duration_s, 3),
        "fault_window_s": None if window is None else [round(v, 3) for v in window],
        "events": [{"at_s": round(e.at_s, 3), "label": e.label} for e in result.events],
        "calls": {
            "by_region": _per_region(result.records),
            "by_operation": kinds_summary(result.records),
            "during_fault_by_region": _per_region(during),
        },
        "replication_lag": {
            "samples": [
                {
                    "at_s": round(sample.at_s, 3),
                    "region": sample.region,
                    "lag_s": sample.lag_s,
                    "backlog_entries": sample.backlog_entries,
                }
                for sample in result.lag_samples
            ],
            "max_lag_s": max((sample.lag_s for sample in result.lag_samples), default=None),
            "note": result.lag_note,
        },
        "failover": {
            "errors_in_failover_capable_calls_during_fault": failover_errors,
            "time_to_failover_s": _rounded(time_to_failover_s(result)),
            "longest_gap_without_success_s": _rounded(longest_gap_s(result)),
            "time_to_recover_s": _rounded(time_to_recover_s(result)),
            "failover_capable_calls_served_by_target_percent": served_by_target_percent(result),
        },
    }
    verification = result.verification
    if verification is not None:
        document["checks"] = {
            "acknowledged_writes": verification.writes_acknowledged,
            "acknowledged_writes_lost": len(verification.writes_lost),
            "lost_key_arns": list(verification.writes_lost),
            "writes_unverified": verification.writes_unverified,
            "ciphertexts_checked": verification.ciphertexts_checked,
            "ciphertexts_that_no_longer_decrypt": list(verification.ciphertexts_failed),
            "convergence_s": _rounded(verification.convergence_s),
            "convergence": verification.convergence_note,
            "audit_chain": verification.audit,
            "mrk_shared_settings": verification.shared_settings,
        }
    return document


def passed(document: dict[str, Any]) -> bool:
    """DESIGN.md section 7 held: nothing acknowledged lost, every ciphertext decrypts, and
    the audit trail (when there is one) verifies."""
    checks = document.get("checks")
    if checks is None:
        return document.get("skipped") is not None
    return (
        not checks["acknowledged_writes_lost"]
        and not checks["ciphertexts_that_no_longer_decrypt"]
        and not str(checks["audit_chain"]).startswith(AUDIT_BROKEN)
        and not str(checks.get("mrk_shared_settings", "")).startswith(DIVERGED)
    )


def terminal_lines(document: dict[str, Any]) -> list[str]:
    lines = [f"drill {document['drill']} (target {document['target']})"]
    if document["skipped"]:
        return [*lines, f"  skipped: {document['skipped']}"]
    lines += [f"  exercises: {item}" for item in document["exercises"]]
    lines += [f"  {event['at_s']:7.2f} s  {event['label']}" for event in document["events"]]
    lines.append("  calls per region        attempted  succeeded  failed")
    for region, counts in document["calls"]["by_region"].items():
        lines.append(
            f"    {region:<20} {counts['attempted']:>9}  {counts['succeeded']:>9}"
            f"  {counts['failed']:>6}"
        )
    lines.append("  calls per operation     attempted  succeeded  failed  errors")
    for kind, counts in sorted(document["calls"]["by_operation"].items()):
        errors = ", ".join(f"{name} x{count}" for name, count in counts["errors"].items())
        lines.append(
            f"    {kind:<20} {counts['attempted']:>9}  {counts['succeeded']:>9}"
            f"  {counts['failed']:>6}  {errors}"
        )
    failover = document["failover"]
    lines.append(
        "  failover-capable calls failed during the fault: "
        f"{failover['errors_in_failover_capable_calls_during_fault']}"
    )
    shares = failover["failover_capable_calls_served_by_target_percent"]
    if shares:
        shown = ", ".join(
            f"{phase} {'-' if value is None else f'{value:g}%'}" for phase, value in shares.items()
        )
        lines.append(f"  failover-capable calls served by {document['target']}: {shown}")
    for label, key in (
        ("time to fail over", "time_to_failover_s"),
        ("longest gap without a success", "longest_gap_without_success_s"),
        ("time to recover the target", "time_to_recover_s"),
    ):
        value = failover[key]
        lines.append(f"  {label}: {'n/a' if value is None else f'{value:.3f} s'}")
    lag = document["replication_lag"]
    if lag["max_lag_s"] is not None:
        lines.append(
            f"  replication lag: at most {lag['max_lag_s']:.3f} s ({len(lag['samples'])} samples)"
        )
    elif lag["note"]:
        lines.append(f"  replication lag: {lag['note']}")
    checks = document.get("checks")
    if checks:
        lines.append(
            f"  acknowledged writes lost: {checks['acknowledged_writes_lost']}"
            f" of {checks['acknowledged_writes']}"
            + (
                f" ({checks['writes_unverified']} unverified)"
                if checks["writes_unverified"]
                else ""
            )
        )
        failed = len(checks["ciphertexts_that_no_longer_decrypt"])
        lines.append(
            f"  ciphertexts that no longer decrypt: {failed} of {checks['ciphertexts_checked']}"
        )
        convergence = checks["convergence_s"]
        shown = "n/a" if convergence is None else f"{convergence:.3f} s"
        lines.append(f"  convergence after heal: {shown} ({checks['convergence']})")
        lines.append(f"  MRK shared properties: {checks['mrk_shared_settings']}")
        lines.append(f"  audit chain: {checks['audit_chain']}")
    lines.append(f"  result: {'PASS' if passed(document) else 'FAIL'} (DESIGN.md section 7)")
    return lines


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
