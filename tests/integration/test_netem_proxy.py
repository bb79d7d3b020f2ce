"""The fault-injecting proxy with real sockets on loopback.

Delays are asserted as lower bounds (the proxy must never deliver early, which cannot
flake) and with generous upper bounds (a loaded two-core machine may be slow, never fast).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from meridian.cli.netem.proxy import Proxy, ProxyError, Route
from meridian.cli.netem.shape import LinkId, LinkShape

LINK = LinkId.between("client", "us-east-1")
SLACK_S = 2.0


@dataclass
class Echo:
    port: int
    peers: list[str]


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    """An upstream that sends back whatever it reads and records who connected."""
    peers: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Echo(port, peers)
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Running:
    proxy: Proxy
    route: Route
    port: int

    def shape(self, shape: LinkShape) -> None:
        self.proxy.set_shapes({self.route.link: shape})

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., object]]:
    proxies: list[Proxy] = []

    async def start(
        upstream_port: int, shape: LinkShape, link: LinkId = LINK, source_host: str | None = None
    ) -> Running:
        route = Route(
            link=link,
            listen=("127.0.0.1", 0),
            upstream=("127.0.0.1", upstream_port),
            caller=link.a,
            callee=link.b,
            source_host=source_host,
        )
        proxy = Proxy([route], {link: shape}, rng=random.Random(5))
        await proxy.start()
        proxies.append(proxy)
        return Running(proxy, route, proxy.bound_port(route))

    yield start
    for proxy in proxies:
        await proxy.close()


async def round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> float:
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    received = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    assert received == payload
    return time.monotonic() - started


async def test_bytes_cross_unchanged_in_both_directions(echo: Echo, start_proxy) -> None:
    # Jitter and loss reorder nothing and corrupt nothing: TCP's contract holds.
    running = await start_proxy(echo.port, LinkShape(latency_ms=1, jitter_ms=3, loss_percent=5))
    reader, writer = await running.connect()
    payload = random.Random(1).randbytes(1_000_000)
    await round_trip(reader, writer, payload)
    writer.close()
    stats = running.proxy.stats()[LINK]
    assert stats.bytes_sent == {"client": 1_000_000, "us-east-1": 1_000_000}
    assert stats.connections_total == 1


async def test_latency_is_paid_once_per_direction(echo: Echo, start_proxy) -> None:
    running = await start_proxy(echo.port, LinkShape(latency_ms=150))
    reader, writer = await running.connect()
    elapsed = [await round_trip(reader, writer, b"ping") for _ in range(3)]
    assert all(0.300 <= seconds < 0.300 + SLACK_S for seconds in elapsed)

    # A change applies to the next bytes at once, without a new connection.
    running.shape(LinkShape(latency_ms=0))
    assert await round_trip(reader, writer, b"ping") < SLACK_S
    running.shape(LinkShape(latency_ms=400))
    assert await round_trip(reader, writer, b"ping") >= 0.800
    writer.close()


async def test_bandwidth_limits_throughput(echo: Echo, start_proxy) -> None:
    # 800 kbit/s = 100 KB/s per direction: 50 KB out and back takes at least 1 s.
    running = await start_proxy(echo.port, LinkShape(bandwidth_kbps=800))
    reader, writer = await running.connect()
    elapsed = await round_trip(reader, writer, bytes(50_000))
    assert 1.0 <= elapsed < 1.0 + SLACK_S * 2
    writer.close()


async def test_loss_shows_up_as_retransmission_delay(echo: Echo, start_proxy) -> None:
    running = await start_proxy(echo.port, LinkShape(loss_percent=30))
    reader, writer = await running.connect()
    elapsed = [await round_trip(reader, writer, b"x" * 100) for _ in range(12)]
    writer.close()
    # 24 chunks at 30% loss (and a seeded generator): the chance of no loss is 0.7**24.
    assert running.proxy.stats()[LINK].retransmissions > 0
    assert max(elapsed) >= 0.200


async def test_a_partition_holds_traffic_until_it_heals(echo: Echo, start_proxy) -> None:
    running = await start_proxy(echo.port, LinkShape())
    reader, writer = await running.connect()
    await round_trip(reader, writer, b"before")

    running.shape(LinkShape(partitioned=True))
    writer.write(b"during")
    await writer.drain()
    # A cut link answers nothing: not an error, not a reset, just silence.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(6), 0.5)

    # A connection opened during the partition is held, unanswered, without reaching
    # the upstream.
    late_reader, late_writer = await running.connect()
    late_writer.write(b"late")
    await late_writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(late_reader.readexactly(4), 0.5)
    assert len(echo.peers) == 1
    assert running.proxy.stats()[LINK].connections_held == 1

    running.shape(LinkShape())
    assert await asyncio.wait_for(reader.readexactly(6), SLACK_S) == b"during"
    assert await asyncio.wait_for(late_reader.readexactly(4), SLACK_S) == b"late"
    assert len(echo.peers) == 2
    writer.close()
    late_writer.close()


async def test_an_unreachable_upstream_resets_the_caller(start_proxy) -> None:
    # A port that nothing listens on: the region's node is down.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    running = await start_proxy(port, LinkShape(latency_ms=10))
    reader, writer = await running.connect()
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(10), SLACK_S)
    except ConnectionResetError:
        data = b""
    assert data == b""
    assert time.monotonic() - started < SLACK_S
    writer.close()
    assert running.proxy.stats()[LINK].upstream_failures == 1


async def test_peer_connections_leave_from_the_callers_address(echo: Echo, start_proxy) -> None:
    link = LinkId.between("us-east-1", "eu-west-1")
    running = await start_proxy(echo.port, LinkShape(), link=link, source_host="127.0.0.2")
    reader, writer = await running.connect()
    await round_trip(reader, writer, b"hello")
    writer.close()
    assert echo.peers == ["127.0.0.2"]


async def test_a_taken_address_is_named(echo: Echo) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    route = Route(LINK, ("127.0.0.1", port), ("127.0.0.1", echo.port), "client", "us-east-1")
    proxy = Proxy([route], {LINK: LinkShape()}, rng=random.Random(1))
    try:
        with pytest.raises(ProxyError, match=f"cannot listen on 127.0.0.1:{port} for link"):
            await proxy.start()
    finally:
        blocker.close()
        await blocker.wait_closed()
    with pytest.raises(ProxyError, match="no shape for link"):
        Proxy([route], {}, rng=random.Random(1))
