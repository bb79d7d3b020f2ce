"""Load generators that run in their own processes, so they never share the server's
event loop or GIL. A worker sends one pre-serialized request over and over with a
fixed number of calls in flight, and returns every latency it measured.
"""

from __future__ import annotations

import asyncio
import time
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
    import grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec.ca_cert,
        private_key=spec.client_key,
        certificate_chain=spec.client_cert,
    )
    result = WorkerResult(latencies_s=[], errors=0)
    async with grpc.aio.secure_channel(
        spec.endpoint, credentials, options=[("grpc.ssl_target_name_override", spec.server_name)]
    ) as channel:
        call = channel.unary_unary(
            spec.method,
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        await call(spec.request, timeout=30)  # connect and warm the path once
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + spec.warmup_s
        deadline = measure_from + spec.duration_s

        async def caller() -> None:
            while True:
                started = time.perf_counter()
                if loop.time() >= deadline:
                    return
                try:
                    await call(spec.request, timeout=30)
                except grpc.aio.AioRpcError as error:
                    if loop.time() >= measure_from:
                        result.errors += 1
                        result.first_error = (
                            result.first_error or f"{error.code()}: {error.details()}"
                        )
                    continue
                if loop.time() >= measure_from:
                    result.latencies_s.append(time.perf_counter() - started)

        await asyncio.gather(*(caller() for _ in range(spec.concurrency)))
    return result


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
