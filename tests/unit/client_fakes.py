"""A scripted, in-memory gRPC transport for the client's routing tests (no tests here).

``FakeNetwork`` plays every region without sockets or threads: each region has a
latency and a state (up, down, hanging) and an optional queue of scripted answers.
A call advances the shared ``ManualClock`` by the region's latency (or by its timeout
when the region hangs or is slower than the timeout) and answers, or raises the same
errors gRPC would (UNAVAILABLE, DEADLINE_EXCEEDED, a status with ErrorInfo). So the
whole failover loop of KmsClient and AsyncKmsClient runs deterministically, in
virtual time, through the real stubs and error rebuilding.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from test_client_support import FakeError

from meridian.client import AsyncKmsClient, KmsClient
from meridian.client.clock import ManualClock
from meridian.client.options import RetryPolicy, RoutingOptions
from meridian.proto.kms.v1 import kms_pb2

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass
class Region:
    name: str
    latency_s: float = 0.010
    state: str = "up"  # up | down (UNAVAILABLE at once) | hang (never answers)
    serving: bool = True  # what health checks say when up
    # Scripted answers for API calls, used before falling back to the state: a
    # FakeError to raise, or a Message to return.
    script: deque[FakeError | Message] = field(default_factory=deque)


@dataclass(frozen=True)
class Sent:
    region: str
    method: str  # e.g. "Encrypt"
    request: Any
    timeout_s: float | None
    metadata: tuple[tuple[str, str], ...]


class FakeNetwork:
    def __init__(self, regions: dict[str, float], clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self.regions = {name: Region(name, latency) for name, latency in regions.items()}
        self.sent: list[Sent] = []
        self.handler: Callable[[str, str, Any], Message] | None = None

    # ---- clients --------------------------------------------------------------------

    def options(self, **changes: Any) -> RoutingOptions:
        import random

        settings: dict[str, Any] = {
            "clock": self.clock,
            "rng": random.Random(4),
            "health_check_interval_s": None,
            "retry": RetryPolicy(),
        }
        settings.update(changes)
        return RoutingOptions(**settings)

    def sync_client(self, *, routing: RoutingOptions | None = None, **options: Any) -> KmsClient:
        return KmsClient(
            {name: f"fake:{name}" for name in self.regions},
            channel_factory=lambda region, _endpoint: FakeChannel(self, region),
            routing=routing or self.options(),
            **options,
        )

    def async_client(
        self, *, routing: RoutingOptions | None = None, **options: Any
    ) -> AsyncKmsClient:
        return AsyncKmsClient(
            {name: f"fake:{name}" for name in self.regions},
            channel_factory=lambda region, _endpoint: FakeAioChannel(self, region),
            routing=routing or self.options(),
            **options,
        )

    # ---- what was sent ----------------------------------------------------------------

    def api_calls(self, method: str | None = None) -> list[Sent]:
        return [
            sent
            for sent in self.sent
            if sent.method != "Check" and (method is None or sent.method == method)
        ]

    def regions_called(self, method: str | None = None) -> list[str]:
        return [sent.region for sent in self.api_calls(method)]

    # ---- the behaviour of one call -------------------------------------------------------

    def answer(
        self, region_name: str, path: str, request: Any, timeout: float | None, metadata: Any
    ) -> Message:
        """Advance the clock and answer, or raise a FakeError describing the failure."""
        method = path.rsplit("/", 1)[-1]
        region = self.regions[region_name]
        self.sent.append(Sent(region_name, method, request, timeout, tuple(metadata or ())))
        budget = timeout if timeout is not None else 3600.0
        if region.state == "down":
            raise FakeError(grpc.StatusCode.UNAVAILABLE, None, "connection refused")
        if region.state == "hang" or region.latency_s > budget:
            self.clock.advance(budget)
            raise FakeError(grpc.StatusCode.DEADLINE_EXCEEDED, None, "Deadline Exceeded")
        self.clock.advance(region.latency_s)
        if path == HEALTH_CHECK:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if region.serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            return health_pb2.HealthCheckResponse(status=status)
        if region.script:
            scripted = region.script.popleft()
            if isinstance(scripted, FakeError):
                raise scripted
            return scripted
        if self.handler is not None:
            return self.handler(region_name, method, request)
        response: Message = getattr(kms_pb2, f"{method}Response")(region=region_name)
        return response


def _not_implemented(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("the fake transport serves unary calls only")


# ---- the blocking transport ------------------------------------------------------------------


class FakeRpcError(grpc.RpcError, grpc.Call):
    """What a failed blocking call raises: an RpcError that is also the finished Call."""

    def __init__(self, error: FakeError) -> None:
        super().__init__(error.message)
        self._status = error.grpc_status()

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return str(self._status.details)

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


class FakeMultiCallable:
    def __init__(self, network: FakeNetwork, region: str, path: str) -> None:
        self._network = network
        self._region = region
        self._path = path

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Message:
        try:
            return self._network.answer(self._region, self._path, request, timeout, metadata)
        except FakeError as error:
            raise FakeRpcError(error) from None


class FakeChannel(grpc.Channel):
    def __init__(self, network: FakeNetwork, region: str) -> None:
        self._network = network
        self._region = region
        self.closed = False

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return FakeMultiCallable(self._network, self._region, method)

    def close(self) -> None:
        self.closed = True

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def unsubscribe(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _not_implemented

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _not_implemented

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _not_implemented

    def __enter__(self) -> FakeChannel:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()


# ---- the asyncio transport -------------------------------------------------------------------


class FakeAioMultiCallable:
    def __init__(self, network: FakeNetwork, region: str, path: str) -> None:
        self._network = network
        self._region = region
        self._path = path

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        return self._call(request, timeout, metadata)

    async def _call(self, request: Any, timeout_s: float | None, metadata: Any) -> Message:
        await asyncio.sleep(0)
        try:
            return self._network.answer(self._region, self._path, request, timeout_s, metadata)
        except FakeError as error:
            status = error.grpc_status()
            raise grpc.aio.AioRpcError(
                status.code,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(*status.trailing_metadata),
                status.details,
            ) from None


class FakeAioChannel(grpc.aio.Channel):
    def __init__(self, network: FakeNetwork, region: str) -> None:
        self._network = network
        self._region = region
        self.closed = False

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return FakeAioMultiCallable(self._network, self._region, method)

    async def close(self, grace: float | None = None) -> None:
        self.closed = True

    async def __aenter__(self) -> FakeAioChannel:
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.close()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        raise NotImplementedError

    async def channel_ready(self) -> None:
        return None

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _not_implemented

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _not_implemented

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _not_implemented


# ---- a KMS with real (if toy) state, for envelope encryption ------------------------------


class FakeKeyring:
    """GenerateDataKey, Encrypt and Decrypt for ``FakeNetwork.handler``.

    Single-region keys exist in their home region only, MRKs in every region. A "blob"
    is readable (``wrapped|key id|context|plaintext hex``), which is all the envelope
    needs: KMS's answers, including its refusals, without KMS's cryptography. The
    context must match on Decrypt, and a ``key_id`` must name the blob's key.
    """

    def __init__(self, network: FakeNetwork, account: str = "111122223333") -> None:
        self.network = network
        self.account = account
        self.keys: dict[str, str | None] = {}  # key id -> home region (None: an MRK)
        self.denied: set[tuple[str, str]] = set()  # (key id, region) refusing Decrypt
        self.counts: dict[str, int] = {}
        self._serial = 0
        network.handler = self.handle

    def add_key(self, region: str | None) -> str:
        """A new key in ``region`` (None: an MRK); returns its ARN in its region (an
        MRK's in the first region)."""
        self._serial += 1
        if region is None:
            key_id = f"mrk-{self._serial:032x}"
            region = next(iter(self.network.regions))
        else:
            key_id = f"00000000-0000-4000-8000-{self._serial:012x}"
        self.keys[key_id] = None if key_id.startswith("mrk-") else region
        return self.arn(region, key_id)

    def arn(self, region: str, key_id: str) -> str:
        return f"arn:meridian:kms:{region}:{self.account}:key/{key_id}"

    def handle(self, region: str, method: str, request: Any) -> Message:
        import os

        self.counts[method] = self.counts.get(method, 0) + 1
        if method == "GenerateDataKey":
            key_id = self._resolve(region, request.key_id)
            plaintext = os.urandom(32)
            return kms_pb2.GenerateDataKeyResponse(
                plaintext=plaintext,
                ciphertext_blob=self._blob(key_id, request.encryption_context, plaintext),
                key_id=self.arn(region, key_id),
                region=region,
            )
        if method == "Encrypt":
            key_id = self._resolve(region, request.key_id)
            return kms_pb2.EncryptResponse(
                ciphertext_blob=self._blob(key_id, request.encryption_context, request.plaintext),
                key_id=self.arn(region, key_id),
                region=region,
            )
        if method == "Decrypt":
            return self._decrypt(region, request)
        raise FakeError(grpc.StatusCode.UNIMPLEMENTED, None, method)

    def _decrypt(self, region: str, request: Any) -> Message:
        parts = bytes(request.ciphertext_blob).split(b"|")
        context = _context_text(request.encryption_context)
        try:
            if len(parts) != 4 or parts[0] != b"wrapped" or parts[2] != context:
                raise ValueError("not a blob of this fake")
            key_id, plaintext = parts[1].decode(), bytes.fromhex(parts[3].decode())
        except ValueError:
            raise FakeError(
                grpc.StatusCode.INVALID_ARGUMENT, "InvalidCiphertextException", "bad"
            ) from None
        if request.key_id and self._resolve(region, request.key_id) != key_id:
            raise FakeError(grpc.StatusCode.INVALID_ARGUMENT, "IncorrectKeyException", "other")
        self._resolve(region, key_id)
        if (key_id, region) in self.denied:
            raise FakeError(grpc.StatusCode.PERMISSION_DENIED, "AccessDeniedException", "no")
        return kms_pb2.DecryptResponse(
            plaintext=plaintext,
            key_id=self.arn(region, key_id),
            region=region,
        )

    def _resolve(self, region: str, reference: str) -> str:
        key_id = reference.rsplit("/", 1)[-1]
        arn_region = reference.split(":")[3] if reference.startswith("arn:") else region
        if key_id not in self.keys or arn_region != region:
            raise FakeError(grpc.StatusCode.NOT_FOUND, "NotFoundException", f"{reference}?")
        home = self.keys[key_id]
        if home is not None and home != region:
            raise FakeError(grpc.StatusCode.NOT_FOUND, "NotFoundException", f"{reference}?")
        return key_id

    def _blob(self, key_id: str, context: Any, plaintext: bytes) -> bytes:
        return b"|".join(
            (b"wrapped", key_id.encode(), _context_text(context), plaintext.hex().encode())
        )


def _context_text(context: Any) -> bytes:
    return ",".join(f"{key}={value}" for key, value in sorted(dict(context).items())).encode()
