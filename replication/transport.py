"""How a shipper reaches a peer: a small Protocol with a gRPC and an in-memory implementation
(litestream's ReplicaClient and its mock).

``PeerTransport`` is what the engine's shipper uses; ``InboundHandler`` is what a node
exposes to callers (the gRPC servicer in production, the in-memory network in tests).
Both sides name the *calling* region explicitly: over gRPC it comes from the caller's
verified node certificate, never from the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.server.config import PeerConfig
from meridian.server.domain.errors import KmsError


class TransportError(Exception):
    """A call to a peer failed: unreachable, timed out, or refused (``reason`` says why)."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class PeerTransport(Protocol):
    async def hello(self, request: pb.HelloRequest, *, timeout_s: float) -> pb.HelloResponse: ...

    async def push(self, request: pb.PushRequest, *, timeout_s: float) -> pb.PushResponse: ...

    async def close(self) -> None: ...


class InboundHandler(Protocol):
    async def handle_hello(
        self, caller_region: str, request: pb.HelloRequest
    ) -> pb.HelloResponse: ...

    async def handle_push(self, caller_region: str, request: pb.PushRequest) -> pb.PushResponse: ...


TransportFactory = Callable[[PeerConfig], PeerTransport]


class MemoryNetwork:
    """In-process nodes calling each other directly, with switchable faults for tests."""

    def __init__(self) -> None:
        self._handlers: dict[str, InboundHandler] = {}
        self._down: set[str] = set()
        self._cut: set[frozenset[str]] = set()
        self.calls = 0

    def register(self, region: str, handler: InboundHandler) -> None:
        self._handlers[region] = handler

    def unregister(self, region: str) -> None:
        self._handlers.pop(region, None)

    def set_down(self, region: str, down: bool = True) -> None:
        (self._down.add if down else self._down.discard)(region)

    def partition(self, a: str, b: str, cut: bool = True) -> None:
        link = frozenset((a, b))
        (self._cut.add if cut else self._cut.discard)(link)

    def transport_factory(self, caller_region: str) -> TransportFactory:
        return lambda peer: MemoryTransport(self, caller_region, peer.region)

    def _target(self, caller: str, callee: str) -> InboundHandler:
        handler = self._handlers.get(callee)
        if handler is None or callee in self._down or caller in self._down:
            raise TransportError(f"{callee} is unreachable")
        if frozenset((caller, callee)) in self._cut:
            raise TransportError(f"the link {caller} - {callee} is cut")
        self.calls += 1
        return handler


class MemoryTransport:
    def __init__(self, network: MemoryNetwork, caller: str, callee: str) -> None:
        self._network = network
        self._caller = caller
        self._callee = callee

    async def hello(self, request: pb.HelloRequest, *, timeout_s: float) -> pb.HelloResponse:
        handler = self._network._target(self._caller, self._callee)
        try:
            # Copies, as the wire would make: the two nodes never share message objects.
            answer = await handler.handle_hello(self._caller, _copy(request))
        except KmsError as error:
            raise TransportError(error.message, reason=error.reason) from None
        return _copy(answer)

    async def push(self, request: pb.PushRequest, *, timeout_s: float) -> pb.PushResponse:
        handler = self._network._target(self._caller, self._callee)
        try:
            answer = await handler.handle_push(self._caller, _copy(request))
        except KmsError as error:
            raise TransportError(error.message, reason=error.reason) from None
        return _copy(answer)

    async def close(self) -> None:
        return None


M = TypeVar("M", pb.HelloRequest, pb.HelloResponse, pb.PushRequest, pb.PushResponse)


def _copy(message: M) -> M:
    copied = type(message)()
    copied.CopyFrom(message)
    return copied
