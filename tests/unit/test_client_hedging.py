"""Hedged reads, background health checks and the retry table's own rules.

Hedging races real gRPC calls, so these tests use real servers on loopback: region
"slow" holds every call until the test ends, region "fast" answers at once. Nothing
here depends on how long anything takes: the slow region never answers in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import grpc.aio
import pytest
from client_fakes import FakeNetwork

from meridian.client import AsyncKmsClient, KmsClient, _core
from meridian.client.options import RoutingOptions
from meridian.client.routing import Placement
from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc

MRK = "mrk-" + "3c" * 16
REGIONS = ("slow-region-1", "fast-region-1")
HEDGING = RoutingOptions(hedge_after_s=0.02, health_check_interval_s=None)


class _Servicer(kms_pb2_grpc.KeyManagementServiceServicer):
    def __init__(self, region: str, gate: threading.Event | None) -> None:
        self.region = region
        self.gate = gate
        self.calls = 0

    def Decrypt(self, request: Any, context: Any) -> kms_pb2.DecryptResponse:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        return kms_pb2.DecryptResponse(plaintext=b"p", key_id=MRK, region=self.region)

    def Encrypt(self, request: Any, context: Any) -> kms_pb2.EncryptResponse:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        return kms_pb2.EncryptResponse(key_id=MRK, region=self.region)


class _AsyncServicer(kms_pb2_grpc.KeyManagementServiceServicer):
    def __init__(self, region: str, gate: asyncio.Event | None) -> None:
        self.region = region
        self.gate = gate
        self.calls = 0

    async def Decrypt(self, request: Any, context: Any) -> kms_pb2.DecryptResponse:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return kms_pb2.DecryptResponse(plaintext=b"p", key_id=MRK, region=self.region)


@contextlib.contextmanager
def _sync_regions() -> Iterator[tuple[dict[str, str], dict[str, _Servicer]]]:
    gate = threading.Event()
    servers, endpoints, servicers = [], {}, {}
    with ThreadPoolExecutor(max_workers=8) as executor:
        try:
            for region in REGIONS:
                servicer = _Servicer(region, gate if region.startswith("slow") else None)
                server = grpc.server(executor)
                kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(servicer, server)
                endpoints[region] = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
                server.start()
                servers.append(server)
                servicers[region] = servicer
            yield endpoints, servicers
        finally:
            gate.set()
            for server in servers:
                server.stop(None).wait()


@contextlib.asynccontextmanager
async def _async_regions() -> AsyncIterator[tuple[dict[str, str], dict[str, _AsyncServicer]]]:
    gate = asyncio.Event()
    servers, endpoints, servicers = [], {}, {}
    try:
        for region in REGIONS:
            servicer = _AsyncServicer(region, gate if region.startswith("slow") else None)
            server = grpc.aio.server()
            kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(servicer, server)
            endpoints[region] = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
            await server.start()
            servers.append(server)
            servicers[region] = servicer
        yield endpoints, servicers
    finally:
        gate.set()
        for server in servers:
            await server.stop(None)


def test_a_slow_read_is_hedged_to_the_next_region() -> None:
    with _sync_regions() as (endpoints, servicers):
        with KmsClient(
            endpoints,
            channel_factory=lambda _region, endpoint: grpc.insecure_channel(endpoint),
            routing=HEDGING,
        ) as client:
            result = client.decrypt(ciphertext_blob=b"blob", key_id=MRK, timeout_s=20)
            stats = client.stats()
        assert result.region == "fast-region-1"
        assert servicers["slow-region-1"].calls == 1
        assert (stats.hedges, stats.hedge_wins) == (1, 1)
        assert stats.regions["fast-region-1"].hedges == 1


def test_writes_and_unmarked_operations_are_not_hedged() -> None:
    hedged = {operation.name for operation in _operations() if operation.hedge}
    assert hedged >= {"Decrypt", "DescribeKey"}
    with _sync_regions() as (endpoints, servicers):
        with KmsClient(
            endpoints,
            channel_factory=lambda _region, endpoint: grpc.insecure_channel(endpoint),
            routing=HEDGING,
        ) as client:
            # Encrypt is not marked for hedging: it waits on the slow region alone.
            with pytest.raises(Exception, match="Deadline"):
                client.encrypt(key_id=MRK, plaintext=b"x", timeout_s=0.5)
            assert client.stats().hedges == 0
        assert servicers["fast-region-1"].calls == 0


async def test_the_async_twin_hedges_too() -> None:
    async with _async_regions() as (endpoints, servicers):
        async with AsyncKmsClient(
            endpoints,
            channel_factory=lambda _region, endpoint: grpc.aio.insecure_channel(endpoint),
            routing=HEDGING,
        ) as client:
            result = await client.decrypt(ciphertext_blob=b"blob", key_id=MRK, timeout_s=20)
            assert result.region == "fast-region-1"
            assert (client.stats().hedges, client.stats().hedge_wins) == (1, 1)
        assert servicers["slow-region-1"].calls == 1


# ---- background health checks ---------------------------------------------------------


def _wait_for(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_background_checks_measure_every_region_until_close() -> None:
    network = FakeNetwork({"us-east-1": 0.03, "eu-west-1": 0.01})
    client = network.sync_client(routing=network.options(health_check_interval_s=0.01))
    client.generate_random()  # the first call starts the checks
    _wait_for(
        lambda: all(region.rtt_samples >= 2 for region in client.stats().regions.values()),
        "two rounds of health checks",
    )
    assert client.stats().nearest == "eu-west-1"
    client.close()
    checks = len(network.sent)
    time.sleep(0.05)
    assert len(network.sent) == checks  # no check after close


async def test_async_background_checks_stop_with_the_client() -> None:
    network = FakeNetwork({"us-east-1": 0.03, "eu-west-1": 0.01})
    client = network.async_client(routing=network.options(health_check_interval_s=0.01))
    await client.generate_random()
    deadline = time.monotonic() + 20
    while not all(region.rtt_samples >= 2 for region in client.stats().regions.values()):
        assert time.monotonic() < deadline, "timed out waiting for health checks"
        await asyncio.sleep(0.01)
    await client.close()
    checks = len(network.sent)
    await asyncio.sleep(0.05)
    assert len(network.sent) == checks


def test_no_background_checks_when_switched_off() -> None:
    network = FakeNetwork({"us-east-1": 0.03, "eu-west-1": 0.01})
    with network.sync_client() as client:
        client.generate_random()
        time.sleep(0.05)
        assert all(region.rtt_samples == 0 for region in client.stats().regions.values())


# ---- the retry table's rules -------------------------------------------------------------


def _operations() -> list[_core.Operation[Any, Any, Any]]:
    return [value for value in vars(_core).values() if isinstance(value, _core.Operation)]


def test_the_retry_table_is_consistent() -> None:
    operations = _operations()
    assert len({operation.name for operation in operations}) == len(operations)
    for operation in operations:
        # A hedge is a second attempt: only for calls that may be sent twice.
        assert not operation.hedge or operation.repeatable, operation.name
        # Tokens are de-duplicated per region, so a non-repeatable call must not spread.
        if not operation.repeatable:
            assert operation.placement in (Placement.DEFINITE, Placement.PRIMARY), operation.name
