"""`meridian bench --workers`: what the measured runs say, per operation and per item.

The throughput of a node with N workers on a small machine is set by the cores the
node gets, and the load generator takes some of them: a single call costs the client
a good part of what it costs the node, so on 2 cores the node can never have a second
core to itself. What this module derives from the runs makes that visible:

- **CPU per item** (node: every worker process together, from /proc; load generator:
  its own processes), for each worker count. An item is a call, or one item of a
  batch call. These figures hardly depend on what else the machine runs.
- **The ceiling** for N workers on C cores, from those costs: a worker is one Python
  process, so it serves at most about one core's worth (its GIL), and the node and the
  load generator together can use at most the C cores::

      items/s <= min(N / node_s_per_item, C / (node_s_per_item + load_s_per_item))

  The ratio of the ceilings for N and 1 workers is the scaling this machine could
  show at best; the measured ratio is what it showed with the CPU it had free.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Cumulative CPU seconds at one moment (``time.monotonic()``)."""

    at: float
    node_per_process: tuple[float, ...]
    machine_busy: float


def cpu_between(
    samples: Sequence[CpuSample], start: float, end: float
) -> tuple[list[float], float]:
    """CPU seconds used between ``start`` and ``end`` (per node process, whole machine),
    interpolated linearly between the samples around each moment."""
    if len(samples) < 2:
        raise ValueError("need at least two CPU samples")
    first = _at(samples, start)
    last = _at(samples, end)
    node = [
        max(0.0, b - a) for a, b in zip(first.node_per_process, last.node_per_process, strict=True)
    ]
    return node, max(0.0, last.machine_busy - first.machine_busy)


def _at(samples: Sequence[CpuSample], moment: float) -> CpuSample:
    """The counters at ``moment``, clamped to the sampled span."""
    if moment <= samples[0].at:
        return samples[0]
    for before, after in itertools.pairwise(samples):
        if before.at <= moment <= after.at:
            span = after.at - before.at
            weight = (moment - before.at) / span if span > 0 else 1.0
            return CpuSample(
                moment,
                tuple(
                    a + (b - a) * weight
                    for a, b in zip(before.node_per_process, after.node_per_process, strict=True)
                ),
                before.machine_busy + (after.machine_busy - before.machine_busy) * weight,
            )
    return samples[-1]


def ceiling_items_per_s(
    node_s_per_item: float, load_s_per_item: float, workers: int, cores: int
) -> float:
    """The most items/s ``workers`` worker processes could serve on ``cores`` cores
    with the load generator on the same machine (module docstring)."""
    if node_s_per_item <= 0:
        return 0.0
    by_workers = min(workers, cores) / node_s_per_item
    by_machine = cores / (node_s_per_item + max(0.0, load_s_per_item))
    return min(by_workers, by_machine)


@dataclass(frozen=True, slots=True)
class OperationSummary:
    operation: str
    items_per_call: int
    # Means over the runs of each worker count (keys: the counts, as given).
    items_per_s: Mapping[int, float]
    node_ms_per_item: Mapping[int, float]
    load_ms_per_item: Mapping[int, float]
    # Of the CPU the benchmark used (node + load generator), the load generator's part.
    load_share: Mapping[int, float]
    # Cores busy on the whole machine during the windows (anything else running too).
    machine_cores_busy: Mapping[int, float]
    # Each count's figure as a multiple of the first count's.
    measured_ratio: Mapping[int, float]
    ceiling_ratio: Mapping[int, float]

    def as_dict(self) -> dict[str, Any]:
        def keyed(values: Mapping[int, float]) -> dict[str, float]:
            return {str(count): round(value, 4) for count, value in values.items()}

        return {
            "operation": self.operation,
            "items_per_call": self.items_per_call,
            "items_per_s": keyed(self.items_per_s),
            "node_cpu_ms_per_item": keyed(self.node_ms_per_item),
            "load_generator_cpu_ms_per_item": keyed(self.load_ms_per_item),
            "load_generator_share": keyed(self.load_share),
            "machine_cores_busy": keyed(self.machine_cores_busy),
            "measured_ratio": keyed(self.measured_ratio),
            "ceiling_ratio": keyed(self.ceiling_ratio),
        }


def summarize_operations(rows: Sequence[Mapping[str, Any]], cores: int) -> list[OperationSummary]:
    """One summary per operation, from the rows ``_measure`` made (in run order)."""
    summaries = []
    for operation in dict.fromkeys(row["operation"] for row in rows):
        mine = [row for row in rows if row["operation"] == operation]
        counts = list(dict.fromkeys(int(row["workers"]) for row in mine))

        def mean(field: str, count: int, rows_of: list[Mapping[str, Any]] = mine) -> float:
            values = [float(row[field] or 0.0) for row in rows_of if row["workers"] == count]
            return statistics.fmean(values) if values else 0.0

        items = {count: mean("items_per_s", count) for count in counts}
        node_ms = {count: mean("node_cpu_ms_per_item", count) for count in counts}
        load_ms = {count: mean("load_generator_cpu_ms_per_item", count) for count in counts}
        share = {
            count: load_ms[count] / (node_ms[count] + load_ms[count])
            if node_ms[count] + load_ms[count] > 0
            else 0.0
            for count in counts
        }
        busy = {count: mean("machine_cores_busy", count) for count in counts}
        ceilings = {
            count: ceiling_items_per_s(node_ms[count] / 1000, load_ms[count] / 1000, count, cores)
            for count in counts
        }
        base = counts[0]
        summaries.append(
            OperationSummary(
                operation=operation,
                items_per_call=int(mine[0].get("items_per_call", 1)),
                items_per_s=items,
                node_ms_per_item=node_ms,
                load_ms_per_item=load_ms,
                load_share=share,
                machine_cores_busy=busy,
                measured_ratio=_ratios(items, base),
                ceiling_ratio=_ratios(ceilings, base),
            )
        )
    return summaries


def _ratios(values: Mapping[int, float], base: int) -> dict[int, float]:
    first = values[base]
    return {count: (value / first if first else 0.0) for count, value in values.items()}


def table_lines(summaries: Sequence[OperationSummary], cores: int) -> list[str]:
    """A plain-text table: one line per operation and worker count."""
    header = (
        f"{'operation':<22} {'workers':>7} {'items/s':>9} {'x':>5} {'ceiling x':>9}"
        f" {'node ms/item':>12} {'load ms/item':>12} {'load share':>10} {'busy':>9}"
    )
    lines = [header, "-" * len(header)]
    for summary in summaries:
        for count, items in summary.items_per_s.items():
            lines.append(
                f"{summary.operation:<22} {count:>7} {items:>9.0f}"
                f" {summary.measured_ratio[count]:>5.2f} {summary.ceiling_ratio[count]:>9.2f}"
                f" {summary.node_ms_per_item[count]:>12.4f}"
                f" {summary.load_ms_per_item[count]:>12.4f}"
                f" {summary.load_share[count]:>10.0%}"
                f" {summary.machine_cores_busy[count]:>5.2f}/{cores}"
            )
    return lines


TABLE_NOTE = (
    "items/s: calls/s, or batch items/s; x: as a multiple of the first worker count's "
    "(mean over its runs); ceiling x: the same for the most this machine's cores allow at "
    "the measured CPU costs (cli/bench/workers_report.py); node ms/item: CPU of every node "
    "process per item; load ms/item: the load generator's; load share: its part of the "
    "CPU the benchmark used; busy: cores busy on the whole machine (with anything else "
    "running), a measured x is only a scaling figure when busy was below the cores"
)
