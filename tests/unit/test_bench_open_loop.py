"""`meridian bench --open-loop`: calls start on a fixed schedule and are timed from when
they were due (cli/bench/loadgen.py), so a stall of the node shows in the latency of
every call due during it, not only in the one call that met it."""

from __future__ import annotations

import asyncio
import time

import pytest

from meridian.cli.bench import loadgen
from meridian.cli.bench.loadgen import GrpcWorkerSpec, WorkerResult, _open_loop


def spec(rate: float, duration_s: float) -> GrpcWorkerSpec:
    return GrpcWorkerSpec(
        endpoint="unused",
        server_name="unused",
        ca_cert=b"",
        client_cert=b"",
        client_key=b"",
        method="/unused",
        request=b"",
        concurrency=1,
        duration_s=duration_s,
        warmup_s=0.0,
        rate_per_s=rate,
    )


def test_calls_start_at_the_rate_and_a_stall_delays_every_call_due_during_it() -> None:
    calls = 0

    async def call(request: bytes, timeout: float) -> bytes:  # noqa: ASYNC109 - grpc's shape
        nonlocal calls
        calls += 1
        if calls == 20:
            time.sleep(0.25)  # noqa: ASYNC251 - the process stalls: nothing is sent meanwhile
        await asyncio.sleep(0.001)
        return b""

    result = WorkerResult(latencies_s=[], errors=0)
    asyncio.run(_open_loop(spec(200, 1.0), call, result))
    assert result.errors == 0
    # 200 calls due in one second, every one made and timed.
    assert calls == len(result.latencies_s) == 200
    # The calls due during the 0.25 s stall (about 50 of them) waited for it.
    assert max(result.latencies_s) >= 0.24
    assert sum(latency >= 0.1 for latency in result.latencies_s) >= 25


def test_calls_beyond_the_in_flight_bound_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadgen, "OPEN_LOOP_IN_FLIGHT_MAX", 5)
    result = WorkerResult(latencies_s=[], errors=0)

    async def call(request: bytes, timeout: float) -> bytes:  # noqa: ASYNC109 - grpc's shape
        # A node that answers nothing while the calls are due: each call ends only once
        # the 15 calls beyond the bound were refused (or after 5 s, if they never are).
        for _ in range(500):
            if result.errors >= 15:
                break
            await asyncio.sleep(0.01)
        return b""

    asyncio.run(_open_loop(spec(100, 0.2), call, result))
    # 20 calls due: 5 in flight (answered late, and timed), 15 refused as errors.
    assert result.errors == 15
    assert len(result.latencies_s) == 5
    assert "does not keep up" in result.first_error


def test_a_closed_loop_counts_only_the_calls_that_end_inside_the_window() -> None:
    from meridian.cli.bench.loadgen import closed_loop

    async def call(request: bytes, timeout: float) -> bytes:  # noqa: ASYNC109 - grpc's shape
        await asyncio.sleep(0.3)
        return b""

    closed = GrpcWorkerSpec(**{**spec(0, 0.5).__dict__, "concurrency": 2, "rate_per_s": 0.0})
    result = WorkerResult(latencies_s=[], errors=0)
    asyncio.run(closed_loop(closed, [call], result))
    # Each caller's first call ends at 0.3 s (inside), its second at 0.6 s (after the
    # 0.5 s window): counting that one would claim 4 calls in 0.5 s instead of 2.
    assert len(result.latencies_s) == 2
