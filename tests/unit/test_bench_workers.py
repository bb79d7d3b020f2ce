"""`meridian bench --workers`: the scaling table from the measured rows."""

from __future__ import annotations

from typing import Any

import pytest

from meridian.cli.bench.workers_report import (
    CpuSample,
    ceiling_items_per_s,
    cpu_between,
    summarize_operations,
    table_lines,
)
from meridian.cli.bench.workers_scaling import scaling


def test_scaling_is_each_counts_mean_over_the_first_counts_mean() -> None:
    rows = [
        {"operation": "Encrypt", "workers": 1, "ops_per_s": 100.0},
        {"operation": "Encrypt", "workers": 2, "ops_per_s": 150.0},
        {"operation": "Encrypt", "workers": 1, "ops_per_s": 120.0},
        {"operation": "Encrypt", "workers": 2, "ops_per_s": 180.0},
        {"operation": "CreateKey", "workers": 1, "ops_per_s": 50.0},
        {"operation": "CreateKey", "workers": 2, "ops_per_s": 40.0},
    ]
    assert scaling(rows) == {
        "Encrypt": {"1": 1.0, "2": 1.5},
        "CreateKey": {"1": 1.0, "2": 0.8},
    }


def test_a_failed_baseline_gives_zero_not_a_division_error() -> None:
    rows = [
        {"operation": "Encrypt", "workers": 1, "ops_per_s": 0.0},
        {"operation": "Encrypt", "workers": 2, "ops_per_s": 10.0},
    ]
    assert scaling(rows) == {"Encrypt": {"1": 0.0, "2": 0.0}}


# ---- workers_report: CPU over the load's window, per-item costs, ceilings ----------------


def test_cpu_between_interpolates_between_samples_and_clamps_to_them() -> None:
    samples = [
        CpuSample(10.0, (1.0, 2.0), 100.0),
        CpuSample(11.0, (2.0, 2.5), 102.0),
        CpuSample(12.0, (4.0, 3.0), 104.0),
    ]
    node, machine = cpu_between(samples, 10.5, 11.5)
    assert node == pytest.approx([1.5, 0.5])
    assert machine == pytest.approx(2.0)
    # Outside the sampled span the first or last sample stands.
    node, machine = cpu_between(samples, 0.0, 99.0)
    assert node == pytest.approx([3.0, 1.0])
    assert machine == pytest.approx(4.0)


def test_the_ceiling_is_the_workers_or_the_machine_whichever_binds() -> None:
    # A single call: the client costs half what the node does. One worker is bound by
    # its one core; two by the machine's two cores shared with the load generator.
    assert ceiling_items_per_s(0.001, 0.0005, 1, 2) == pytest.approx(1000.0)
    assert ceiling_items_per_s(0.001, 0.0005, 2, 2) == pytest.approx(2 / 0.0015)
    # A batch item: the client's cost is small, so two workers nearly double.
    assert ceiling_items_per_s(0.0002, 0.000005, 2, 2) / ceiling_items_per_s(
        0.0002, 0.000005, 1, 2
    ) == pytest.approx(0.0002 * 2 / 0.000205)
    # More workers than cores cannot use more than the cores.
    assert ceiling_items_per_s(0.001, 0.0, 4, 2) == pytest.approx(2000.0)
    assert ceiling_items_per_s(0.0, 0.0, 1, 2) == 0.0


def _row(
    operation: str, workers: int, items: float, node_ms: float, load_ms: float
) -> dict[str, Any]:
    return {
        "operation": operation,
        "workers": workers,
        "items_per_call": 100 if operation.startswith("Batch") else 1,
        "items_per_s": items,
        "node_cpu_ms_per_item": node_ms,
        "load_generator_cpu_ms_per_item": load_ms,
        "machine_cores_busy": 1.5,
    }


def test_the_summary_averages_each_counts_runs_and_compares_with_the_first() -> None:
    rows = [
        _row("Encrypt", 1, 900.0, 1.0, 0.5),
        _row("Encrypt", 2, 1000.0, 1.2, 0.5),
        _row("Encrypt", 1, 1100.0, 1.0, 0.5),
        _row("Encrypt", 2, 1400.0, 1.2, 0.5),
        _row("BatchEncrypt", 1, 5000.0, 0.2, 0.005),
        _row("BatchEncrypt", 2, 9000.0, 0.2, 0.005),
    ]
    single, batch = summarize_operations(rows, cores=2)
    assert single.operation == "Encrypt" and batch.items_per_call == 100
    assert single.items_per_s == {1: 1000.0, 2: 1200.0}
    assert single.measured_ratio == {1: 1.0, 2: pytest.approx(1.2)}
    assert single.load_share[1] == pytest.approx(0.5 / 1.5)
    # Two workers: 2 cores / (1.2 + 0.5) ms against one worker's 1 core / 1.0 ms.
    assert single.ceiling_ratio[2] == pytest.approx((2 / 1.7) / 1.0)
    assert batch.measured_ratio[2] == pytest.approx(1.8)
    assert batch.ceiling_ratio[2] == pytest.approx((2 / 0.205) / (1 / 0.2))
    document = batch.as_dict()
    assert document["items_per_s"] == {"1": 5000.0, "2": 9000.0}
    lines = table_lines([single, batch], cores=2)
    assert len(lines) == 2 + 4
    assert "BatchEncrypt" in lines[-1] and "9000" in lines[-1]
