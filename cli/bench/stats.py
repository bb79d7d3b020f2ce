"""Latency statistics: percentiles over the samples a run collected."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RunStats:
    target: str
    operation: str
    operations: int
    errors: int
    duration_s: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_cpu_ms_per_op: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (0 when there are none)."""
    if not sorted_samples:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_samples)))
    return sorted_samples[rank - 1]


def summarize(
    target: str,
    operation: str,
    latencies_s: Sequence[float],
    errors: int,
    duration_s: float,
    server_cpu_s: float | None,
) -> RunStats:
    ordered = sorted(latencies_s)
    count = len(ordered)
    return RunStats(
        target=target,
        operation=operation,
        operations=count,
        errors=errors,
        duration_s=round(duration_s, 3),
        ops_per_s=round(count / duration_s, 1) if duration_s > 0 else 0.0,
        p50_ms=round(percentile(ordered, 0.50) * 1000, 3),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 3),
        p999_ms=round(percentile(ordered, 0.999) * 1000, 3),
        server_cpu_ms_per_op=(
            round(server_cpu_s / count * 1000, 4) if server_cpu_s is not None and count else None
        ),
    )


def median_of(runs: Sequence[RunStats]) -> RunStats:
    """One run standing for several rounds of the same target and operation: the median
    of each figure (robust to a round that a burst of load elsewhere slowed down), the
    operations and errors of all rounds added up."""
    if not runs:
        raise ValueError("no runs to summarize")
    cpu = [run.server_cpu_ms_per_op for run in runs if run.server_cpu_ms_per_op is not None]
    return RunStats(
        target=runs[0].target,
        operation=runs[0].operation,
        operations=sum(run.operations for run in runs),
        errors=sum(run.errors for run in runs),
        duration_s=round(sum(run.duration_s for run in runs), 3),
        ops_per_s=round(statistics.median(run.ops_per_s for run in runs), 1),
        p50_ms=round(statistics.median(run.p50_ms for run in runs), 3),
        p99_ms=round(statistics.median(run.p99_ms for run in runs), 3),
        p999_ms=round(statistics.median(run.p999_ms for run in runs), 3),
        server_cpu_ms_per_op=round(statistics.median(cpu), 4) if cpu else None,
    )
