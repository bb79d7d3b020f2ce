"""A fake multi-region KMS for the client and CLI tests (this module holds no tests).

``FakeKms`` is one region's in-memory KMS: it implements a handful of RPCs
with real state and AWS-style errors, answers every other RPC with an empty
response, and records every request so tests can check what the client sent.
The same logic is served by a threaded ``grpc.server`` (for KmsClient) or a
``grpc.aio`` server (for AsyncKmsClient), one server per region on port 0, and
errors travel exactly as the real node sends them: a status code plus a
google.rpc.ErrorInfo in grpc-status-details-bin, built with grpc_status.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from meridian.client import AsyncKmsClient, KmsClient
from meridian.client.options import RetryPolicy, RoutingOptions
from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
ACCOUNT = "000000000000"
CREATED = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
# No background health checks: a probe finishing mid-test would reorder the regions
# a call may go to. Tests of routing pass their own RoutingOptions.
QUIET_ROUTING = RoutingOptions(health_check_interval_s=None)
# One attempt per call: for tests of what a single answer turns into.
NO_RETRY = RoutingOptions(health_check_interval_s=None, retry=RetryPolicy(attempts_max=1))
RPC_NAMES = tuple(kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"].methods_by_name)


class FakeError(Exception):
    """An error the fake answers with; ``reason=None`` sends no ErrorInfo at all."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str | None,
        message: str,
        *,
        domain: str = "meridian.kms",
        request_id: str | None = "req-1234",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.request_id = request_id

    def grpc_status(self) -> grpc.Status:
        details = []
        if self.reason is not None:
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=self.domain))
            details.append(detail)
        status = rpc_status.to_status(
            status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        )
        if self.request_id is None:
            return status
        # to_status returns a namedtuple; the node adds its request id to the same trailers.
        return status._replace(
            trailing_metadata=(*status.trailing_metadata, ("x-request-id", self.request_id))
        )


@dataclass
class FakeKey:
    key_id: str
    arn: str
    description: str
    multi_region: bool
    enabled: bool = True
    state: str = "Enabled"
    deletion_date: datetime | None = None
    pending_days: int | None = None
    tags: dict[str, str] = field(default_factory=dict)


class FakeKms:
    """One region's in-memory KMS."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.keys: dict[str, FakeKey] = {}
        self.aliases: dict[str, str] = {}
        self.requests: list[tuple[str, Message]] = []
        self.delay_s = 0.0
        self.fail_next: FakeError | None = None
        self.repeat_marker = False
        self.page_size_default = 100
        # Answer every RPC with an empty response: for tests of what the client sends.
        self.record_only = False
        self._ids = itertools.count(1)

    # ---- plumbing -----------------------------------------------------------------

    def handle(self, name: str, request: Message) -> Message:
        self.requests.append((name, request))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if self.record_only:
            return getattr(kms_pb2, f"{name}Response")(region=self.region)
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        handler: Callable[[Any], Message] | None = getattr(self, f"_{snake}", None)
        if handler is None:
            return getattr(kms_pb2, f"{name}Response")(region=self.region)
        return handler(request)

    def last(self, name: str) -> Any:
        """The last request of RPC ``name`` this region received."""
        matching = [request for rpc, request in self.requests if rpc == name]
        assert matching, f"{self.region} received no {name}; got {self.requests}"
        return matching[-1]

    def add_key(self, description: str = "", *, multi_region: bool = False) -> FakeKey:
        serial = next(self._ids)
        key_id = f"mrk-{serial:032x}" if multi_region else str(uuid.UUID(int=serial))
        key = FakeKey(
            key_id=key_id,
            arn=f"arn:meridian:kms:{self.region}:{ACCOUNT}:key/{key_id}",
            description=description,
            multi_region=multi_region,
        )
        self.keys[key_id] = key
        return key

    def _resolve(self, key_id: str) -> FakeKey:
        name = key_id.split(":", 5)[-1] if key_id.startswith("arn:") else key_id
        if name.startswith("alias/"):
            name = self.aliases.get(name, "")
        elif name.startswith("key/"):
            name = name.removeprefix("key/")
        key = self.keys.get(name)
        if key is None:
            raise FakeError(grpc.StatusCode.NOT_FOUND, "NotFoundException", f"{key_id} not found")
        return key

    def _metadata(self, key: FakeKey) -> kms_pb2.KeyMetadata:
        metadata = kms_pb2.KeyMetadata(
            aws_account_id=ACCOUNT,
            key_id=key.key_id,
            arn=key.arn,
            enabled=key.enabled,
            description=key.description,
            key_usage="ENCRYPT_DECRYPT",
            key_state=key.state,
            origin="AWS_KMS",
            key_manager="CUSTOMER",
            key_spec="SYMMETRIC_DEFAULT",
            customer_master_key_spec="SYMMETRIC_DEFAULT",
            encryption_algorithms=["SYMMETRIC_DEFAULT"],
            multi_region=key.multi_region,
        )
        metadata.creation_date.FromDatetime(CREATED)
        if key.deletion_date is not None:
            metadata.deletion_date.FromDatetime(key.deletion_date)
            assert key.pending_days is not None
            metadata.pending_deletion_window_in_days = key.pending_days
        if key.multi_region:
            configuration = metadata.multi_region_configuration
            configuration.multi_region_key_type = "PRIMARY"
            configuration.primary_key.arn = key.arn
            configuration.primary_key.region = self.region
            configuration.replica_keys.add(
                arn=key.arn.replace(self.region, "eu-west-1"), region="eu-west-1"
            )
        return metadata

    def _page(self, items: Sequence[Any], request: Any) -> tuple[list[Any], str, bool]:
        start = int(request.marker or 0)
        size = request.limit if request.HasField("limit") else self.page_size_default
        page = list(items[start : start + size])
        more = start + size < len(items)
        if not more:
            return page, "", False
        return page, "0" if self.repeat_marker else str(start + size), True

    # ---- RPCs with state ------------------------------------------------------------

    def _create_key(self, request: kms_pb2.CreateKeyRequest) -> kms_pb2.CreateKeyResponse:
        key = self.add_key(request.description, multi_region=request.multi_region)
        key.tags = {tag.tag_key: tag.tag_value for tag in request.tags}
        return kms_pb2.CreateKeyResponse(key_metadata=self._metadata(key), region=self.region)

    def _describe_key(self, request: kms_pb2.DescribeKeyRequest) -> kms_pb2.DescribeKeyResponse:
        key = self._resolve(request.key_id)
        return kms_pb2.DescribeKeyResponse(key_metadata=self._metadata(key), region=self.region)

    def _list_keys(self, request: kms_pb2.ListKeysRequest) -> kms_pb2.ListKeysResponse:
        entries = [kms_pb2.KeyListEntry(key_id=k.key_id, key_arn=k.arn) for k in self.keys.values()]
        page, marker, truncated = self._page(entries, request)
        return kms_pb2.ListKeysResponse(
            keys=page, next_marker=marker, truncated=truncated, region=self.region
        )

    def _disable_key(self, request: kms_pb2.DisableKeyRequest) -> kms_pb2.DisableKeyResponse:
        key = self._resolve(request.key_id)
        key.enabled, key.state = False, "Disabled"
        return kms_pb2.DisableKeyResponse(region=self.region)

    def _schedule_key_deletion(
        self, request: kms_pb2.ScheduleKeyDeletionRequest
    ) -> kms_pb2.ScheduleKeyDeletionResponse:
        key = self._resolve(request.key_id)
        if key.state == "PendingDeletion":
            raise FakeError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "KMSInvalidStateException",
                f"{key.arn} is pending deletion.",
            )
        days = request.pending_window_in_days if request.HasField("pending_window_in_days") else 30
        key.state, key.enabled, key.pending_days = "PendingDeletion", False, days
        key.deletion_date = CREATED + timedelta(days=days)
        response = kms_pb2.ScheduleKeyDeletionResponse(
            key_id=key.arn, key_state=key.state, pending_window_in_days=days, region=self.region
        )
        response.deletion_date.FromDatetime(key.deletion_date)
        return response

    def _encrypt(self, request: kms_pb2.EncryptRequest) -> kms_pb2.EncryptResponse:
        key = self._resolve(request.key_id)
        if not key.enabled:
            raise FakeError(
                grpc.StatusCode.FAILED_PRECONDITION, "DisabledException", f"{key.arn} is disabled."
            )
        context = ",".join(f"{k}={v}" for k, v in sorted(request.encryption_context.items()))
        blob = b"|".join((b"fake", key.key_id.encode(), context.encode(), request.plaintext))
        return kms_pb2.EncryptResponse(
            ciphertext_blob=blob,
            key_id=key.arn,
            encryption_algorithm="SYMMETRIC_DEFAULT",
            region=self.region,
        )

    def _decrypt(self, request: kms_pb2.DecryptRequest) -> kms_pb2.DecryptResponse:
        parts = request.ciphertext_blob.split(b"|", 3)
        context = ",".join(f"{k}={v}" for k, v in sorted(request.encryption_context.items()))
        if len(parts) != 4 or parts[0] != b"fake" or parts[2] != context.encode():
            raise FakeError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "InvalidCiphertextException",
                "The ciphertext is invalid or does not match the request.",
            )
        key = self._resolve(parts[1].decode())
        return kms_pb2.DecryptResponse(
            key_id=key.arn,
            plaintext=parts[3],
            encryption_algorithm="SYMMETRIC_DEFAULT",
            key_material_id="0" * 64,
            region=self.region,
        )

    def _generate_random(
        self, request: kms_pb2.GenerateRandomRequest
    ) -> kms_pb2.GenerateRandomResponse:
        size = request.number_of_bytes if request.HasField("number_of_bytes") else 32
        return kms_pb2.GenerateRandomResponse(plaintext=bytes(range(size)), region=self.region)

    def _create_alias(self, request: kms_pb2.CreateAliasRequest) -> kms_pb2.CreateAliasResponse:
        if request.alias_name in self.aliases:
            raise FakeError(
                grpc.StatusCode.ALREADY_EXISTS,
                "AlreadyExistsException",
                f"{request.alias_name} already exists.",
            )
        self.aliases[request.alias_name] = self._resolve(request.target_key_id).key_id
        return kms_pb2.CreateAliasResponse(region=self.region)

    def _list_aliases(self, request: kms_pb2.ListAliasesRequest) -> kms_pb2.ListAliasesResponse:
        target = self._resolve(request.key_id).key_id if request.key_id else None
        entries = []
        for name, key_id in sorted(self.aliases.items()):
            if target is not None and key_id != target:
                continue
            entry = kms_pb2.AliasListEntry(
                alias_name=name,
                alias_arn=f"arn:meridian:kms:{self.region}:{ACCOUNT}:{name}",
                target_key_id=key_id,
            )
            entry.creation_date.FromDatetime(CREATED)
            entries.append(entry)
        page, marker, truncated = self._page(entries, request)
        return kms_pb2.ListAliasesResponse(
            aliases=page, next_marker=marker, truncated=truncated, region=self.region
        )

    def _tag_resource(self, request: kms_pb2.TagResourceRequest) -> kms_pb2.TagResourceResponse:
        key = self._resolve(request.key_id)
        key.tags.update({tag.tag_key: tag.tag_value for tag in request.tags})
        return kms_pb2.TagResourceResponse(region=self.region)

    def _list_resource_tags(
        self, request: kms_pb2.ListResourceTagsRequest
    ) -> kms_pb2.ListResourceTagsResponse:
        key = self._resolve(request.key_id)
        tags = [kms_pb2.Tag(tag_key=k, tag_value=v) for k, v in sorted(key.tags.items())]
        return kms_pb2.ListResourceTagsResponse(tags=tags, truncated=False, region=self.region)


# ---- servicers: the same FakeKms behind the sync and the aio server -------------------------


class SyncFakeServicer(kms_pb2_grpc.KeyManagementServiceServicer):
    def __init__(self, kms: FakeKms) -> None:
        self.kms = kms


class AsyncFakeServicer(kms_pb2_grpc.KeyManagementServiceServicer):
    def __init__(self, kms: FakeKms) -> None:
        self.kms = kms


def _sync_method(name: str) -> Callable[..., Message]:
    def method(self: SyncFakeServicer, request: Message, context: grpc.ServicerContext) -> Message:
        if self.kms.delay_s:
            time.sleep(self.kms.delay_s)
        try:
            return self.kms.handle(name, request)
        except FakeError as error:
            context.abort_with_status(error.grpc_status())
            raise AssertionError("abort_with_status returned") from error

    return method


def _async_method(name: str) -> Callable[..., Any]:
    async def method(
        self: AsyncFakeServicer, request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Message:
        if self.kms.delay_s:
            await asyncio.sleep(self.kms.delay_s)
        try:
            return self.kms.handle(name, request)
        except FakeError as error:
            await context.abort_with_status(error.grpc_status())
            raise AssertionError("abort_with_status returned") from error

    return method


for _name in RPC_NAMES:
    setattr(SyncFakeServicer, _name, _sync_method(_name))
    setattr(AsyncFakeServicer, _name, _async_method(_name))


# ---- clusters -------------------------------------------------------------------------------


@dataclass
class FakeCluster:
    kms: dict[str, FakeKms]
    endpoints: dict[str, str]

    def __getitem__(self, region: str) -> FakeKms:
        return self.kms[region]

    def total_requests(self) -> int:
        return sum(len(kms.requests) for kms in self.kms.values())

    def sync_client(self, **options: Any) -> KmsClient:
        return KmsClient(
            self.endpoints,
            channel_factory=lambda _region, endpoint: grpc.insecure_channel(endpoint),
            **{"routing": QUIET_ROUTING, **options},
        )

    def async_client(self, **options: Any) -> AsyncKmsClient:
        return AsyncKmsClient(
            self.endpoints,
            channel_factory=lambda _region, endpoint: grpc.aio.insecure_channel(endpoint),
            **{"routing": QUIET_ROUTING, **options},
        )


@contextlib.contextmanager
def sync_cluster(regions: Sequence[str] = REGIONS) -> Iterator[FakeCluster]:
    """One threaded grpc.server per region on 127.0.0.1 port 0."""
    servers = []
    cluster = FakeCluster(kms={}, endpoints={})
    with ThreadPoolExecutor(max_workers=4 * len(regions)) as executor:
        try:
            for region in regions:
                kms = FakeKms(region)
                server = grpc.server(executor)
                kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(
                    SyncFakeServicer(kms), server
                )
                port = server.add_insecure_port("127.0.0.1:0")
                server.start()
                servers.append(server)
                cluster.kms[region] = kms
                cluster.endpoints[region] = f"127.0.0.1:{port}"
            yield cluster
        finally:
            for server in servers:
                server.stop(None).wait()


@contextlib.asynccontextmanager
async def async_cluster(regions: Sequence[str] = REGIONS) -> AsyncIterator[FakeCluster]:
    """One grpc.aio server per region on 127.0.0.1 port 0, in the test's event loop."""
    servers = []
    cluster = FakeCluster(kms={}, endpoints={})
    try:
        for region in regions:
            kms = FakeKms(region)
            server = grpc.aio.server()
            kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(AsyncFakeServicer(kms), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            cluster.kms[region] = kms
            cluster.endpoints[region] = f"127.0.0.1:{port}"
        yield cluster
    finally:
        for server in servers:
            await server.stop(None)
