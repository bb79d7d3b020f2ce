"""The shared core of KmsClient and AsyncKmsClient (httpx's BaseClient pattern).

Everything that does not wait on the network lives here, so the sync and async
twins cannot drift apart: the operation table, request building, the choice of
region, the lifecycle state, TLS settings, response conversion and the rebuilding
of typed errors. The twins only create channels, send and await.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from meridian.client import results
from meridian.client.errors import (
    ClientClosedError,
    ClientConfigError,
    KmsError,
    ProtocolError,
    UnknownRegionError,
    error_class_for,
)
from meridian.client.results import Tag
from meridian.proto.kms.v1 import kms_pb2

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT")
ResultT = TypeVar("ResultT")

# What a caller may pass as tags: AWS's list of Tag shapes, or a plain mapping.
TagsArgument = Sequence[Tag] | Mapping[str, str]

ERROR_DOMAIN = "meridian.kms"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"

_ARN = re.compile(
    r"^arn:meridian:kms:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):(?:key|alias)/.+$"
)


# ---- routing ---------------------------------------------------------------------------


def arn_region(key_id: str) -> str | None:
    """The region named in a Meridian key or alias ARN; None for anything else.

    Ids, alias names and ARNs of other partitions are not ours to judge: they go
    to the home region, whose answer (NotFound, InvalidArn) is authoritative.
    """
    match = _ARN.match(key_id)
    return match.group("region") if match else None


class Router:
    """Decides which region serves a call: the one place routing lives.

    Today's rules (DESIGN.md §6): a pinned region takes every call, as an AWS
    client is bound to its region; otherwise an ARN sends the call to the region
    it names, and everything else goes to the home region (preferred_region, else
    the first endpoint). Nearest-region choice, health and circuit breakers will
    replace ``home_region`` for repeatable operations without touching callers.
    """

    def __init__(
        self,
        regions: Sequence[str],
        *,
        pinned_region: str | None,
        preferred_region: str | None,
    ) -> None:
        if not regions:
            raise ClientConfigError("a client needs at least one region endpoint")
        self.regions = tuple(regions)
        for name, given in (("region", pinned_region), ("preferred_region", preferred_region)):
            if given is not None and given not in self.regions:
                raise UnknownRegionError(
                    f"{name}={given!r} has no endpoint; known regions: {', '.join(self.regions)}"
                )
        self.pinned_region = pinned_region
        self.home_region = pinned_region or preferred_region or self.regions[0]

    def region_for(self, key_ids: Iterable[str]) -> str:
        """The region for a call naming ``key_ids`` (most decisive first)."""
        if self.pinned_region is not None:
            return self.pinned_region
        for key_id in key_ids:
            region = arn_region(key_id)
            if region is None:
                continue
            if region not in self.regions:
                raise UnknownRegionError(
                    f"{key_id!r} is in region {region!r}, but this client has endpoints only "
                    f"for: {', '.join(self.regions)}"
                )
            return region
        return self.home_region


# ---- the operation table -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation(Generic[RequestT, ResponseT, ResultT]):
    """One RPC: how to build its request, route it and read its response.

    ``route_by`` names the request fields whose ARN picks the region, most
    decisive first. ``repeatable`` says whether sending the call again after an
    unknown outcome (a timeout, a dead region) leaves the same state and answer:
    the rule the failover work will read (STYLE.md item 14).
    """

    name: str
    request_type: type[RequestT]
    to_result: Callable[[ResponseT, str], ResultT]
    route_by: tuple[str, ...] = ()
    repeatable: bool = True


CREATE_KEY = Operation(
    "CreateKey", kms_pb2.CreateKeyRequest, results.create_key_result, repeatable=False
)
DESCRIBE_KEY = Operation(
    "DescribeKey", kms_pb2.DescribeKeyRequest, results.describe_key_result, ("key_id",)
)
LIST_KEYS = Operation("ListKeys", kms_pb2.ListKeysRequest, results.list_keys_result)
UPDATE_KEY_DESCRIPTION = Operation(
    "UpdateKeyDescription", kms_pb2.UpdateKeyDescriptionRequest, results.empty_result, ("key_id",)
)
ENABLE_KEY = Operation("EnableKey", kms_pb2.EnableKeyRequest, results.empty_result, ("key_id",))
DISABLE_KEY = Operation("DisableKey", kms_pb2.DisableKeyRequest, results.empty_result, ("key_id",))
# A repeated schedule or cancel fails with KMSInvalidStateException although the
# first one worked, so neither may be resent blindly.
SCHEDULE_KEY_DELETION = Operation(
    "ScheduleKeyDeletion",
    kms_pb2.ScheduleKeyDeletionRequest,
    results.schedule_key_deletion_result,
    ("key_id",),
    repeatable=False,
)
CANCEL_KEY_DELETION = Operation(
    "CancelKeyDeletion",
    kms_pb2.CancelKeyDeletionRequest,
    results.cancel_key_deletion_result,
    ("key_id",),
    repeatable=False,
)
ENCRYPT = Operation("Encrypt", kms_pb2.EncryptRequest, results.encrypt_result, ("key_id",))
DECRYPT = Operation("Decrypt", kms_pb2.DecryptRequest, results.decrypt_result, ("key_id",))
# The new ciphertext belongs to the destination key, so its region decides.
RE_ENCRYPT = Operation(
    "ReEncrypt",
    kms_pb2.ReEncryptRequest,
    results.re_encrypt_result,
    ("destination_key_id", "source_key_id"),
)
GENERATE_DATA_KEY = Operation(
    "GenerateDataKey",
    kms_pb2.GenerateDataKeyRequest,
    results.generate_data_key_result,
    ("key_id",),
)
GENERATE_DATA_KEY_WITHOUT_PLAINTEXT = Operation(
    "GenerateDataKeyWithoutPlaintext",
    kms_pb2.GenerateDataKeyWithoutPlaintextRequest,
    results.generate_data_key_without_plaintext_result,
    ("key_id",),
)
GENERATE_RANDOM = Operation(
    "GenerateRandom", kms_pb2.GenerateRandomRequest, results.generate_random_result
)
# A repeated create or delete fails (AlreadyExists, NotFound) although the first worked.
CREATE_ALIAS = Operation(
    "CreateAlias",
    kms_pb2.CreateAliasRequest,
    results.empty_result,
    ("target_key_id",),
    repeatable=False,
)
UPDATE_ALIAS = Operation(
    "UpdateAlias", kms_pb2.UpdateAliasRequest, results.empty_result, ("target_key_id",)
)
DELETE_ALIAS = Operation(
    "DeleteAlias",
    kms_pb2.DeleteAliasRequest,
    results.empty_result,
    ("alias_name",),
    repeatable=False,
)
LIST_ALIASES = Operation(
    "ListAliases", kms_pb2.ListAliasesRequest, results.list_aliases_result, ("key_id",)
)
TAG_RESOURCE = Operation(
    "TagResource", kms_pb2.TagResourceRequest, results.empty_result, ("key_id",)
)
UNTAG_RESOURCE = Operation(
    "UntagResource", kms_pb2.UntagResourceRequest, results.empty_result, ("key_id",)
)
LIST_RESOURCE_TAGS = Operation(
    "ListResourceTags",
    kms_pb2.ListResourceTagsRequest,
    results.list_resource_tags_result,
    ("key_id",),
)


# ---- requests ------------------------------------------------------------------------------


def build_request(request_type: type[RequestT], fields: Mapping[str, object]) -> RequestT:
    """Build a request from keyword arguments named after its fields.

    None means "absent": the field is not set, so a proto3 ``optional`` field
    keeps no presence and the server applies AWS's default.
    """
    descriptor = request_type.DESCRIPTOR
    present: dict[str, object] = {}
    for name, value in fields.items():
        if value is None:
            continue
        # A lone string given for a list (grant_tokens="t") would otherwise be
        # split into one-character tokens by protobuf without any complaint.
        if descriptor.fields_by_name[name].is_repeated and isinstance(value, str | bytes):
            raise TypeError(f"{name} takes a list, not a single {type(value).__name__}")
        present[name] = _wire_tags(value) if name == "tags" else value
    return request_type(**present)


def _wire_tags(tags: object) -> list[kms_pb2.Tag]:
    if isinstance(tags, Mapping):
        return [kms_pb2.Tag(tag_key=key, tag_value=value) for key, value in tags.items()]
    if isinstance(tags, Iterable):
        wire: list[kms_pb2.Tag] = []
        for tag in tags:
            if not isinstance(tag, Tag):
                raise TypeError(f"tags must be Tag values or a mapping, not {type(tag).__name__}")
            wire.append(kms_pb2.Tag(tag_key=tag.tag_key, tag_value=tag.tag_value))
        return wire
    raise TypeError(f"tags must be a list of Tag or a mapping, not {type(tags).__name__}")


# ---- errors from the wire ------------------------------------------------------------------

# Metadata arrives as (key, value) pairs: plain tuples, grpc's _Metadatum named
# tuples or an aio Metadata object; the stubs type each differently, so the
# readers below accept any iterable and look at the pairs themselves.
Metadata = Iterable[object]


def status_from_metadata(
    code: grpc.StatusCode, metadata: Metadata | None
) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailers, if present and consistent with ``code``."""
    raw = _metadata_value(metadata, STATUS_DETAILS_KEY)
    if not isinstance(raw, bytes):
        return None
    status = status_pb2.Status.FromString(raw)
    # A detail whose code disagrees with the call's is not trusted (the same
    # rule as grpc_status.rpc_status.from_call).
    return status if status.code == code.value[0] else None


def error_from_rpc(
    *,
    operation: str,
    region: str,
    code: grpc.StatusCode,
    message: str | None,
    status: status_pb2.Status | None,
    metadata: Iterable[Metadata | None],
) -> KmsError:
    """Rebuild the typed error from (code, ErrorInfo.reason); never from the text."""
    reason = _error_reason(status) if status is not None else ""
    request_id = None
    for candidate in metadata:
        value = _metadata_value(candidate, REQUEST_ID_KEY)
        if isinstance(value, str):
            request_id = value
            break
    error_class = error_class_for(code, reason)
    return error_class(
        message or code.name,
        reason=reason,
        code=code,
        region=region,
        operation=operation,
        request_id=request_id,
    )


def _error_reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        if not detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            continue
        info = error_details_pb2.ErrorInfo()
        detail.Unpack(info)
        # A reason from another domain (a proxy, a library) is not an AWS name.
        if info.domain in ("", ERROR_DOMAIN):
            return str(info.reason)
    return ""


def _metadata_value(metadata: Metadata | None, key: str) -> str | bytes | None:
    for entry in metadata or ():
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == key:
            value = entry[1]
            return value if isinstance(value, str | bytes) else None
    return None


# ---- pagination ----------------------------------------------------------------------------


class Pager:
    """Follows next_marker and refuses to loop on a server that repeats a marker."""

    def __init__(self) -> None:
        self.marker: str | None = None
        self._seen: set[str] = set()

    def advance(self, operation: str, truncated: bool, next_marker: str | None) -> bool:
        """Record a page; True when there is another page to fetch."""
        if not truncated:
            return False
        if next_marker is None:
            raise ProtocolError(f"{operation} said truncated but sent no next_marker")
        if next_marker in self._seen:
            raise ProtocolError(f"{operation} sent marker {next_marker!r} twice")
        self._seen.add(next_marker)
        self.marker = next_marker
        return True


# ---- the shared client base --------------------------------------------------------------


class LifecycleState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PreparedCall(Generic[RequestT]):
    region: str
    request: RequestT
    timeout_s: float


class BaseKmsClient:
    """Configuration, lifecycle and per-call decisions shared by both twins."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        ca_cert: bytes | None,
        client_cert: bytes | None,
        client_key: bytes | None,
        server_names: Mapping[str, str] | None,
        region: str | None,
        preferred_region: str | None,
        timeout_s: float,
        has_channel_factory: bool,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._router = Router(
            tuple(self._endpoints), pinned_region=region, preferred_region=preferred_region
        )
        self._server_names = dict(server_names or {})
        unknown = sorted(set(self._server_names) - set(self._endpoints))
        if unknown:
            raise UnknownRegionError(f"server_names for regions without an endpoint: {unknown}")
        self._timeout_s = _checked_timeout(timeout_s)
        # mTLS is the only way a node accepts a caller; only an injected channel
        # factory (tests, custom transports) may do without the material.
        if not has_channel_factory and (
            ca_cert is None or client_cert is None or client_key is None
        ):
            raise ClientConfigError(
                "ca_cert, client_cert and client_key are required unless channel_factory is given"
            )
        self._ca_cert = ca_cert
        self._client_cert = client_cert
        self._client_key = client_key
        self._state = LifecycleState.OPEN

    @property
    def regions(self) -> tuple[str, ...]:
        """Every region this client has an endpoint for, in the order given."""
        return self._router.regions

    @property
    def home_region(self) -> str:
        """Where calls without an ARN go: the pinned, else preferred, else first region."""
        return self._router.home_region

    @property
    def pinned_region(self) -> str | None:
        return self._router.pinned_region

    @property
    def is_closed(self) -> bool:
        return self._state is LifecycleState.CLOSED

    def _ensure_open(self) -> None:
        if self._state is LifecycleState.CLOSED:
            raise ClientClosedError(
                f"this {type(self).__name__} is closed; create a new client to make calls"
            )

    def _mark_closed(self) -> bool:
        """Move to CLOSED; False when it already was (close() is idempotent)."""
        was_open = self._state is LifecycleState.OPEN
        self._state = LifecycleState.CLOSED
        return was_open

    def _prepare(
        self,
        operation: Operation[RequestT, ResponseT, ResultT],
        fields: Mapping[str, object],
        timeout_s: float | None,
    ) -> PreparedCall[RequestT]:
        self._ensure_open()
        key_ids = (
            value for name in operation.route_by if isinstance(value := fields.get(name), str)
        )
        region = self._router.region_for(key_ids)
        request = build_request(operation.request_type, fields)
        timeout = self._timeout_s if timeout_s is None else _checked_timeout(timeout_s)
        return PreparedCall(region=region, request=request, timeout_s=timeout)

    def _channel_target(self, region: str) -> str:
        return self._endpoints[region]

    def _channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._ca_cert,
            private_key=self._client_key,
            certificate_chain=self._client_cert,
        )

    def _channel_options(self, region: str) -> list[tuple[str, str]]:
        server_name = self._server_names.get(region)
        if server_name is None:
            return []
        # Nodes' certificates name "<region>.node.meridian", not the address we dial.
        return [("grpc.ssl_target_name_override", server_name)]


def _checked_timeout(timeout_s: float) -> float:
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ClientConfigError(f"timeout_s must be a positive number of seconds, not {timeout_s}")
    return timeout_s
