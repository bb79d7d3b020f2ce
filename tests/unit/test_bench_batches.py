"""The bench's batch figures: items/s and the ratio to the single operation's ops/s."""

from __future__ import annotations

from meridian.cli.bench.batches import batch_row, batch_summary, items_per_s
from meridian.cli.bench.stats import RunStats
from meridian.cli.bench.workloads import BATCH_ITEMS, workload

ON, OFF = "meridian", "meridian (audit off)"


def _stats(
    operation: str, ops_per_s: float, cpu_ms: float | None = None, target: str = ON
) -> RunStats:
    return RunStats(target, operation, 10, 0, 1.0, ops_per_s, 1.0, 2.0, 3.0, cpu_ms)


def test_batch_workloads_carry_the_most_items_of_their_single_operation() -> None:
    for name, single in (
        ("BatchEncrypt", "Encrypt"),
        ("BatchDecrypt", "Decrypt"),
        ("BatchGenerateDataKey", "GenerateDataKey"),
    ):
        work = workload(name)
        assert work.items_per_call == BATCH_ITEMS == 100
        assert work.single_operation == single
        assert work.boto_operation is None  # moto has no batches: "n/a"


def test_items_per_second_and_ratios_to_single_calls() -> None:
    batch = _stats("BatchEncrypt", 40.0, cpu_ms=30.0)
    single = _stats("Encrypt", 500.0, cpu_ms=1.2)
    runs = {
        (ON, "Encrypt"): single,
        (ON, "BatchEncrypt"): batch,
        (OFF, "Encrypt"): _stats("Encrypt", 1000.0, cpu_ms=0.6, target=OFF),
        (OFF, "BatchEncrypt"): _stats("BatchEncrypt", 60.0, cpu_ms=10.0, target=OFF),
    }
    row = batch_row(batch, runs, audit_off_target=OFF)
    assert row == {
        "items_per_s": 4000.0,
        "single_ops_per_s": 500.0,
        "items_vs_single": 8.0,
        "server_cpu_ms_per_item": 0.3,
        "cpu_per_item_vs_single": 4.0,
        "audit_off_items_per_s": 6000.0,
        "audit_off_single_ops_per_s": 1000.0,
        "audit_off_items_vs_single": 6.0,
        "audit_off_server_cpu_ms_per_item": 0.1,
        "audit_off_cpu_per_item_vs_single": 6.0,
    }
    assert items_per_s(batch) == 4000.0
    # Single operations have no items figures; without the single run there is no ratio.
    assert batch_row(single, runs) == {}
    assert items_per_s(single) is None
    assert batch_row(_stats("BatchDecrypt", 2.0), {}) == {"items_per_s": 200.0}


def test_the_summary_names_items_per_second_and_the_ratios() -> None:
    ratios = {
        "Encrypt": {"of_ceiling": 0.5},
        "BatchEncrypt": {
            "items_per_s": 4000.0,
            "single_ops_per_s": 500.0,
            "items_vs_single": 8.0,
            "server_cpu_ms_per_item": 0.3,
            "cpu_per_item_vs_single": 4.0,
            "audit_off_items_per_s": 6000.0,
        },
        "BatchDecrypt": {"items_per_s": 200.0},
    }
    assert batch_summary(ratios) == [
        "BatchEncrypt (audit on): 4,000 items/s = 8.00 x Encrypt's 500 calls/s; "
        "server CPU 0.300 ms per item (4.00 x less than a single call)",
        "BatchEncrypt (audit off): 6,000 items/s",
        "BatchDecrypt (audit on): 200 items/s",
    ]
