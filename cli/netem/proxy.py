"""The fault-injecting TCP proxy: one asyncio loop, one listener per route.

A route is one listening address in front of one upstream address, on one link: the
client's way into a region, or one region's way to a peer. Every accepted connection
is paired with a connection to the upstream, and each direction is pumped by a reader
and a writer with a bounded queue between them: the reader stamps each chunk with the
time `shaping.Direction` allows it to arrive, the writer waits until then and until the
link is not partitioned. The bounded queue is what makes a slow or cut link push back
on the sender, as a real one does, instead of buffering without limit.

Connections that cannot reach the upstream (its node is down) are reset at once, as a
host without a listener would answer; connections opened during a partition wait,
unanswered, as they would on a cut network.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import random
from collections.abc import Iterable, Mapping, Sequence

import structlog

from meridian.cli.netem.shape import LinkId, LinkShape
from meridian.cli.netem.shaping import Direction

__all__ = ["LinkStats", "Proxy", "ProxyError", "Route"]

log = structlog.get_logger("meridian.netem")

CHUNK_BYTES_MAX = 64 * 1024
QUEUE_CHUNKS_MAX = 16
CONNECTIONS_PER_ROUTE_MAX = 512
CONNECT_TIMEOUT_S = 5.0
_EOF = b""


class ProxyError(Exception):
    """The proxy cannot start (an address it cannot bind) or was configured wrongly."""


@dataclasses.dataclass(frozen=True)
class Route:
    """Connections to `listen` go to `upstream` across `link`, opened by `caller`."""

    link: LinkId
    listen: tuple[str, int]
    upstream: tuple[str, int]
    caller: str
    callee: str
    # Peer connections leave from the caller's own address, so the callee sees who dials.
    source_host: str | None = None


@dataclasses.dataclass
class LinkStats:
    connections_total: int = 0
    connections_open: int = 0
    connections_held: int = 0
    upstream_failures: int = 0
    retransmissions: int = 0
    bytes_sent: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class _Link:
    def __init__(self, shape: LinkShape, rng: random.Random) -> None:
        self._rng = rng
        self._open = asyncio.Event()
        self.shape = shape
        self.set_shape(shape)
        self.directions: dict[str, Direction] = {}
        self.stats = LinkStats()

    def set_shape(self, shape: LinkShape) -> None:
        self.shape = shape
        if shape.partitioned:
            self._open.clear()
        else:
            self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()

    def direction(self, sender: str) -> Direction:
        if sender not in self.directions:
            self.directions[sender] = Direction(self._rng)
        return self.directions[sender]


class Proxy:
    """Listens on every route's address and forwards under each link's current shape."""

    def __init__(
        self,
        routes: Sequence[Route],
        shapes: Mapping[LinkId, LinkShape],
        *,
        rng: random.Random,
    ) -> None:
        missing = sorted({str(route.link) for route in routes} - {str(link) for link in shapes})
        if missing:
            raise ProxyError(f"no shape for link(s) {', '.join(missing)}")
        self.routes = tuple(routes)
        self._links = {link: _Link(shape, rng) for link, shape in shapes.items()}
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Route, set[asyncio.Task[None]]] = {r: set() for r in routes}

    async def start(self) -> None:
        """Bind every route's address; on any failure nothing stays bound."""
        try:
            for route in self.routes:
                host, port = route.listen
                try:
                    server = await asyncio.start_server(
                        functools.partial(self._accept, route),
                        host,
                        port,
                        reuse_address=True,
                    )
                except OSError as error:
                    raise ProxyError(
                        f"cannot listen on {host}:{port} for link {route.link}: {error.strerror}"
                    ) from None
                self._servers.append(server)
        except BaseException:
            await self.close()
            raise

    def bound_port(self, route: Route) -> int:
        """The port a route listens on (useful when it was given as port 0)."""
        index = self.routes.index(route)
        port: int = self._servers[index].sockets[0].getsockname()[1]
        return port

    def set_shapes(self, shapes: Mapping[LinkId, LinkShape]) -> None:
        """Apply new shapes at once: queued chunks keep their times, new ones use these."""
        for link, shape in shapes.items():
            if link in self._links:
                self._links[link].set_shape(shape)

    def shapes(self) -> dict[LinkId, LinkShape]:
        return {link: state.shape for link, state in self._links.items()}

    def stats(self) -> dict[LinkId, LinkStats]:
        return {link: dataclasses.replace(state.stats) for link, state in self._links.items()}

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [task for group in self._connections.values() for task in group]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # -- one connection ---------------------------------------------------------------------

    def _accept(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        group = self._connections[route]
        if len(group) >= CONNECTIONS_PER_ROUTE_MAX:
            log.warning("connection refused: route full", link=str(route.link))
            writer.transport.abort()
            return
        task = asyncio.create_task(self._serve(route, reader, writer))
        group.add(task)
        task.add_done_callback(group.discard)

    async def _serve(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        link = self._links[route.link]
        link.stats.connections_total += 1
        link.stats.connections_open += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            # A connection opened across a cut link gets no answer until the link heals.
            link.stats.connections_held += 1
            try:
                await link.wait_open()
            finally:
                link.stats.connections_held -= 1
            upstream = await self._connect_upstream(route, link)
            if upstream is None:
                return
            upstream_reader, upstream_writer = upstream
            await _run_until_done(
                [
                    *self._pump(link, route.caller, reader, upstream_writer),
                    *self._pump(link, route.callee, upstream_reader, writer),
                ]
            )
        finally:
            link.stats.connections_open -= 1
            for stream in (writer, upstream_writer):
                if stream is not None:
                    stream.transport.abort()

    async def _connect_upstream(
        self, route: Route, link: _Link
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        host, port = route.upstream
        local_addr = (route.source_host, 0) if route.source_host else None
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=local_addr), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as error:
            # The caller sees a reset, as from a host whose service is down.
            link.stats.upstream_failures += 1
            log.debug("upstream unreachable", link=str(route.link), error=str(error))
            return None

    def _pump(
        self,
        link: _Link,
        sender: str,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
    ) -> list[asyncio.Task[None]]:
        """Two tasks moving one direction's bytes, with a bounded queue between them."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=QUEUE_CHUNKS_MAX)
        direction = link.direction(sender)
        loop = asyncio.get_running_loop()

        async def read() -> None:
            last_s = 0.0
            while True:
                data = await source.read(CHUNK_BYTES_MAX)
                delivery = direction.schedule(link.shape, loop.time(), len(data), last_s)
                link.stats.retransmissions += delivery.retransmissions
                last_s = delivery.at_s
                await queue.put((delivery.at_s, data))
                if data == _EOF:
                    return

        async def write() -> None:
            while True:
                at_s, data = await queue.get()
                wait_s = at_s - loop.time()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                await link.wait_open()
                if data == _EOF:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                sink.write(data)
                await sink.drain()
                link.stats.bytes_sent[sender] = link.stats.bytes_sent.get(sender, 0) + len(data)

        return [asyncio.create_task(read()), asyncio.create_task(write())]


async def _run_until_done(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Wait for every task; the first failure (a reset, a broken pipe) ends them all."""
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            # Reading every exception also marks it retrieved, so asyncio does not warn.
            failures = [task.exception() for task in done if not task.cancelled()]
            if any(failure is not None for failure in failures):
                return
    finally:
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
