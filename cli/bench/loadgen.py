"""Load generators that run in their own processes, so they never share the server's
event loop or GIL. A worker sends one pre-serialized request over and over with a
fixed number of calls in flight, and returns every latency it measured.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GrpcWorkerSpec:
    endpoint: str
    server_name: str
    ca_cert: bytes
    client_cert: bytes
    client_key: bytes
    method: str  # full gRPC method path, e.g. /meridian.kms.v1.KeyManagementService/Encrypt
    request: bytes  # serialized request message
    concurrency: int
    duration_s: float
    warmup_s: float
    # Open loop: start this many calls per second on a fixed schedule, whatever the
    # answers (0: closed loop, ``concurrency`` calls always in flight).
    rate_per_s: float = 0.0
    # Connections to spread the calls over: a node of several workers shares out
    # connections, not calls (SO_REUSEPORT), so one connection would reach one worker.
    connections: int = 1


# Open loop: calls in flight beyond this mean the node is not keeping up with the rate;
# the calls that would start then are counted as errors instead of piling up.
OPEN_LOOP_IN_FLIGHT_MAX = 2048


@dataclass(frozen=True)
class BotoWorkerSpec:
    endpoint_url: str
    region: str
    operation: str  # boto3 method name, e.g. "encrypt"
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 8
    duration_s: float = 5.0
    warmup_s: float = 1.0


@dataclass
class WorkerResult:
    latencies_s: list[float]
    errors: int
    first_error: str = ""


def run_grpc_worker(spec: GrpcWorkerSpec) -> WorkerResult:
    # The same loop as the node's default (server/event_loop.py): on a 2-core host the
    # load generator's CPU is CPU the node does not get, for the ceiling and every
    # operation alike.
    from meridian.server.event_loop import run

    return run(_grpc_worker(spec))


async def _grpc_worker(spec: GrpcWorkerSpec) -> WorkerResult:
    result = WorkerResult(latencies_s=[], errors=0)
    channels, calls = await open_calls(spec, spec.connections)
    try:
        if spec.rate_per_s > 0:
            await _open_loop(spec, _round_robin(calls), result)
        else:
            await closed_loop(spec, calls, result)
    finally:
        for channel in channels:
            await channel.close(None)
    return result


async def open_calls(spec: Any, connections: int) -> tuple[list[Any], list[Any]]:
    """``connections`` mTLS channels to ``spec.endpoint`` (its ``server_name``,
    ``ca_cert``, ``client_cert``, ``client_key``) and a call of ``spec.method`` taking
    and returning raw bytes on each, each connected and warmed with one
    ``spec.request``. The caller closes the channels."""
    import grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec.ca_cert,
        private_key=spec.client_key,
        certificate_chain=spec.client_cert,
    )
    options: list[tuple[str, str | int]] = [("grpc.ssl_target_name_override", spec.server_name)]
    if connections > 1:
        # Without it channels with equal arguments share one connection (one worker of
        # a node of several: SO_REUSEPORT shares out connections, not calls).
        options.append(("grpc.use_local_subchannel_pool", 1))
    channels = [
        grpc.aio.secure_channel(spec.endpoint, credentials, options=options)
        for _ in range(max(1, connections))
    ]
    calls = [
        channel.unary_unary(
            spec.method,
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        for channel in channels
    ]
    try:
        for call in calls:
            await call(spec.request, timeout=30)  # connect and warm the path once
    except BaseException:
        for channel in channels:
            await channel.close(None)
        raise
    return channels, calls


def _round_robin(calls: list[Any]) -> Any:
    """One call function that takes the connections in turn."""
    turn = itertools.cycle(calls)

    def call(request: bytes, timeout: float) -> Any:
        return next(turn)(request, timeout=timeout)

    return call


async def closed_loop(
    spec: Any,
    calls: Sequence[Any],
    result: WorkerResult,
    *,
    mark: Callable[[str], None] | None = None,
) -> None:
    """``spec.concurrency`` callers, each sending its next call when the last one
    answered, for ``spec.warmup_s`` + ``spec.duration_s``; ``calls``: one call function
    per connection, the callers spread over them. ``mark("start")`` and ``mark("end")``
    run by timer at the measuring window's ends (a caller reaches them only when its
    call returns, which for a batch can be a second late)."""
    import grpc

    loop = asyncio.get_running_loop()
    measure_from = loop.time() + spec.warmup_s
    deadline = measure_from + spec.duration_s
    if mark is not None:
        loop.call_at(measure_from, mark, "start")
        loop.call_at(deadline, mark, "end")

    async def caller(call: Any) -> None:
        while True:
            started = time.perf_counter()
            if loop.time() >= deadline:
                return
            try:
                await call(spec.request, timeout=30)
            except grpc.aio.AioRpcError as error:
                if measure_from <= loop.time() < deadline:
                    result.errors += 1
                    result.first_error = result.first_error or f"{error.code()}: {error.details()}"
                continue
            # Only calls that end inside the window count: ops/s is completions per
            # second of the window, and a call ending after it (a batch can take a
            # second under load) would inflate it.
            if measure_from <= loop.time() < deadline:
                result.latencies_s.append(time.perf_counter() - started)

    await asyncio.gather(*(caller(calls[index % len(calls)]) for index in range(spec.concurrency)))


async def _open_loop(spec: GrpcWorkerSpec, call: Any, result: WorkerResult) -> None:
    """Calls started on a fixed schedule (every ``1 / rate_per_s`` s), each timed from
    the moment it was *due*, not from when it was sent: a node that stalls delays the
    calls due meanwhile, and their latency says so (no coordinated omission, which a
    closed loop has: it stops sending while the node stalls)."""
    import grpc

    interval = 1.0 / spec.rate_per_s
    start = time.perf_counter()
    measure_from = start + spec.warmup_s
    deadline = measure_from + spec.duration_s
    in_flight: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        try:
            await call(spec.request, timeout=30)
        except grpc.aio.AioRpcError as error:
            if due >= measure_from:
                result.errors += 1
                result.first_error = result.first_error or f"{error.code()}: {error.details()}"
            return
        if due >= measure_from:
            result.latencies_s.append(time.perf_counter() - due)

    number = 0
    while (due := start + number * interval) < deadline:
        number += 1
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        if len(in_flight) >= OPEN_LOOP_IN_FLIGHT_MAX:
            if due >= measure_from:
                result.errors += 1
                result.first_error = result.first_error or (
                    f"more than {OPEN_LOOP_IN_FLIGHT_MAX} calls in flight: the node does "
                    f"not keep up with {spec.rate_per_s:g} calls/s"
                )
            continue
        task = asyncio.ensure_future(one(due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)


def run_boto_worker(spec: BotoWorkerSpec) -> WorkerResult:
    """The peer's load: boto3 is synchronous, so concurrency comes from threads."""
    import boto3

    result = WorkerResult(latencies_s=[], errors=0)
    start = time.perf_counter()
    measure_from = start + spec.warmup_s
    deadline = measure_from + spec.duration_s

    def caller() -> tuple[list[float], int, str]:
        client = boto3.client(
            "kms",
            endpoint_url=spec.endpoint_url,
            region_name=spec.region,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 - moto accepts any credentials
        )
        operation = getattr(client, spec.operation)
        latencies: list[float] = []
        errors = 0
        first_error = ""
        while (now := time.perf_counter()) < deadline:
            try:
                operation(**spec.parameters)
            except Exception as error:  # a peer's failure is counted, never fatal
                if now >= measure_from:
                    errors += 1
                    first_error = first_error or repr(error)
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)
        return latencies, errors, first_error

    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        for latencies, errors, first_error in pool.map(lambda _: caller(), range(spec.concurrency)):
            result.latencies_s.extend(latencies)
            result.errors += errors
            result.first_error = result.first_error or first_error
    return result
