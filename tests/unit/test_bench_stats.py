from __future__ import annotations

from meridian.cli.bench.stats import percentile, summarize


def test_nearest_rank_percentiles() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 0.999) == 100.0
    assert percentile([], 0.5) == 0.0


def test_summary_units() -> None:
    stats = summarize("t", "Encrypt", [0.001] * 10 + [0.002], 1, 2.0, 0.011)
    assert stats.operations == 11
    assert stats.ops_per_s == 5.5
    assert stats.p50_ms == 1.0
    assert stats.p99_ms == 2.0
    assert stats.server_cpu_ms_per_op == 1.0
