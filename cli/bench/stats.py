"""Latency statistics: percentiles over the samples a run collected."""

from __future__ import annotations

import math
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
