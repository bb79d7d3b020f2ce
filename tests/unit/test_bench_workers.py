"""`meridian bench --workers`: the scaling table from the measured rows."""

from __future__ import annotations

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
