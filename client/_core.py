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
from typing import Generic, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from meridian.client import access_results, key_type_results, replication_results, results
from meridian.client.errors import (
    ClientClosedError,
    ClientConfigError,
    KmsError,
    ProtocolError,
    UnknownRegionError,
    error_class_for,
)
from meridian.client.options import RoutingOptions
from meridian.client.regions import ClientStats, RegionBook
from meridian.client.results import Tag
from meridian.client.retry import CallPlan
from meridian.client.routing import Placement, ReplicaDirectory, route
from meridian.proto.kms.v1 import kms_pb2

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT")
ResultT = TypeVar("ResultT")

# What a caller may pass as tags: AWS's list of Tag shapes, or a plain mapping.
TagsArgument = Sequence[Tag] | Mapping[str, str]
# Grant constraints: a GrantConstraints, or AWS's shape {"EncryptionContextEquals": {...}}.
GrantConstraintsArgument = access_results.GrantConstraints | Mapping[str, Mapping[str, str]]
# Simulation context: ContextEntry values, or a mapping of condition key -> value(s).
ContextEntriesArgument = Sequence[access_results.ContextEntry] | Mapping[str, str | Sequence[str]]

ERROR_DOMAIN = "meridian.kms"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"

RECONNECT_BACKOFF_INITIAL_MS = 250
RECONNECT_BACKOFF_MAX_MS = 2000

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
    """The client's region configuration: every region, the pinned one, home.

    ``region_for`` gives a call's one definite region (a pinned region takes every
    call, as an AWS client is bound to its region; otherwise an ARN sends the call
    to the region it names, and everything else goes to the home region:
    preferred_region, else the first endpoint). Calls that may go to several
    regions, and the order among them, are ``routing.route``'s and
    ``RegionBook``'s (client/DESIGN.md).
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
    unknown outcome (a timeout, a dead region) leaves the same state and answer.
    Together with ``placement`` (which regions may serve it, ``routing.Placement``)
    and ``hedge`` (an idempotent read worth a second attempt elsewhere when the first
    is slow) this is the retry table (STYLE.md item 14; docs/sdk.md renders it):

    - repeatable: retried on UNAVAILABLE/DEADLINE_EXCEEDED, in another region when
      the placement allows one (failover);
    - not repeatable (creating and deleting calls): carries an idempotency token the
      server de-duplicates, and is retried only in the region of its first attempt.

    New operations default to one definite region (``Placement.DEFINITE``): choose
    REPLICA for cryptographic calls any replica of an MRK can serve, PRIMARY for
    changes of an MRK's shared properties, ANY for calls whose answer does not depend
    on the region.
    """

    name: str
    request_type: type[RequestT]
    to_result: Callable[[ResponseT, str], ResultT]
    route_by: tuple[str, ...] = ()
    repeatable: bool = True
    placement: Placement = Placement.DEFINITE
    hedge: bool = False
    # Where ``route_by`` reads from when it is not the request's own fields: the batch
    # operations route by their items' key ids (client/_batch_methods.py).
    route_fields: Callable[[Mapping[str, object]], Mapping[str, object]] | None = None


CREATE_KEY = Operation(
    "CreateKey", kms_pb2.CreateKeyRequest, results.create_key_result, repeatable=False
)
DESCRIBE_KEY = Operation(
    "DescribeKey",
    kms_pb2.DescribeKeyRequest,
    results.describe_key_result,
    ("key_id",),
    placement=Placement.REPLICA,
    hedge=True,
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
# Any replica of a multi-region key can serve the cryptographic calls; a Decrypt
# without key_id is routed by the key id in the blob's header.
ENCRYPT = Operation(
    "Encrypt",
    kms_pb2.EncryptRequest,
    results.encrypt_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
DECRYPT = Operation(
    "Decrypt",
    kms_pb2.DecryptRequest,
    results.decrypt_result,
    ("key_id",),
    placement=Placement.REPLICA,
    hedge=True,
)
# The new ciphertext belongs to the destination key, so its region decides.
RE_ENCRYPT = Operation(
    "ReEncrypt",
    kms_pb2.ReEncryptRequest,
    results.re_encrypt_result,
    ("destination_key_id", "source_key_id"),
    placement=Placement.REPLICA,
)
GENERATE_DATA_KEY = Operation(
    "GenerateDataKey",
    kms_pb2.GenerateDataKeyRequest,
    results.generate_data_key_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
GENERATE_DATA_KEY_WITHOUT_PLAINTEXT = Operation(
    "GenerateDataKeyWithoutPlaintext",
    kms_pb2.GenerateDataKeyWithoutPlaintextRequest,
    results.generate_data_key_without_plaintext_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
GENERATE_RANDOM = Operation(
    "GenerateRandom",
    kms_pb2.GenerateRandomRequest,
    results.generate_random_result,
    placement=Placement.ANY,
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
# Access control. Key policies, grants and identity policies are each region's own
# (DESIGN.md §4), so these act in one definite region. Putting a policy again leaves
# the same state; a repeated revoke, retire or delete fails although the first worked,
# and CreateGrant without a Name makes a second grant.
PUT_KEY_POLICY = Operation(
    "PutKeyPolicy", kms_pb2.PutKeyPolicyRequest, results.empty_result, ("key_id",)
)
GET_KEY_POLICY = Operation(
    "GetKeyPolicy",
    kms_pb2.GetKeyPolicyRequest,
    access_results.get_key_policy_result,
    ("key_id",),
)
LIST_KEY_POLICIES = Operation(
    "ListKeyPolicies",
    kms_pb2.ListKeyPoliciesRequest,
    access_results.list_key_policies_result,
    ("key_id",),
)
CREATE_GRANT = Operation(
    "CreateGrant",
    kms_pb2.CreateGrantRequest,
    access_results.create_grant_result,
    ("key_id",),
    repeatable=False,
)
LIST_GRANTS = Operation(
    "ListGrants", kms_pb2.ListGrantsRequest, access_results.list_grants_result, ("key_id",)
)
LIST_RETIRABLE_GRANTS = Operation(
    "ListRetirableGrants", kms_pb2.ListRetirableGrantsRequest, access_results.list_grants_result
)
RETIRE_GRANT = Operation(
    "RetireGrant", kms_pb2.RetireGrantRequest, results.empty_result, ("key_id",), repeatable=False
)
REVOKE_GRANT = Operation(
    "RevokeGrant", kms_pb2.RevokeGrantRequest, results.empty_result, ("key_id",), repeatable=False
)
PUT_USER_POLICY = Operation("PutUserPolicy", kms_pb2.PutUserPolicyRequest, results.empty_result)
GET_USER_POLICY = Operation(
    "GetUserPolicy", kms_pb2.GetUserPolicyRequest, access_results.get_user_policy_result
)
LIST_USER_POLICIES = Operation(
    "ListUserPolicies", kms_pb2.ListUserPoliciesRequest, access_results.list_user_policies_result
)
DELETE_USER_POLICY = Operation(
    "DeleteUserPolicy", kms_pb2.DeleteUserPolicyRequest, results.empty_result, repeatable=False
)
SIMULATE_PRINCIPAL_POLICY = Operation(
    "SimulatePrincipalPolicy",
    kms_pb2.SimulatePrincipalPolicyRequest,
    access_results.simulate_principal_policy_result,
)

# Asymmetric, HMAC and post-quantum keys (docs/key-types.md). Any replica of an MRK can
# serve these; none changes state, so all may be sent again.
SIGN = Operation(
    "Sign",
    kms_pb2.SignRequest,
    key_type_results.sign_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
VERIFY = Operation(
    "Verify",
    kms_pb2.VerifyRequest,
    key_type_results.verify_result,
    ("key_id",),
    placement=Placement.REPLICA,
    hedge=True,
)
GET_PUBLIC_KEY = Operation(
    "GetPublicKey",
    kms_pb2.GetPublicKeyRequest,
    key_type_results.get_public_key_result,
    ("key_id",),
    placement=Placement.REPLICA,
    hedge=True,
)
GENERATE_MAC = Operation(
    "GenerateMac",
    kms_pb2.GenerateMacRequest,
    key_type_results.generate_mac_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
VERIFY_MAC = Operation(
    "VerifyMac",
    kms_pb2.VerifyMacRequest,
    key_type_results.verify_mac_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
DERIVE_SHARED_SECRET = Operation(
    "DeriveSharedSecret",
    kms_pb2.DeriveSharedSecretRequest,
    key_type_results.derive_shared_secret_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
ENCAPSULATE = Operation(
    "Encapsulate",
    kms_pb2.EncapsulateRequest,
    key_type_results.encapsulate_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
DECAPSULATE = Operation(
    "Decapsulate",
    kms_pb2.DecapsulateRequest,
    key_type_results.decapsulate_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
GENERATE_DATA_KEY_PAIR = Operation(
    "GenerateDataKeyPair",
    kms_pb2.GenerateDataKeyPairRequest,
    key_type_results.generate_data_key_pair_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
GENERATE_DATA_KEY_PAIR_WITHOUT_PLAINTEXT = Operation(
    "GenerateDataKeyPairWithoutPlaintext",
    kms_pb2.GenerateDataKeyPairWithoutPlaintextRequest,
    key_type_results.generate_data_key_pair_without_plaintext_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
# Rotation settings are shared properties of an MRK: set at its primary. Enabling or
# disabling again leaves the same state; each RotateKeyOnDemand makes a version (and
# counts against the 25), so it is not sent again blindly.
ENABLE_KEY_ROTATION = Operation(
    "EnableKeyRotation",
    kms_pb2.EnableKeyRotationRequest,
    results.empty_result,
    ("key_id",),
    placement=Placement.PRIMARY,
)
DISABLE_KEY_ROTATION = Operation(
    "DisableKeyRotation",
    kms_pb2.DisableKeyRotationRequest,
    results.empty_result,
    ("key_id",),
    placement=Placement.PRIMARY,
)
GET_KEY_ROTATION_STATUS = Operation(
    "GetKeyRotationStatus",
    kms_pb2.GetKeyRotationStatusRequest,
    key_type_results.get_key_rotation_status_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
ROTATE_KEY_ON_DEMAND = Operation(
    "RotateKeyOnDemand",
    kms_pb2.RotateKeyOnDemandRequest,
    key_type_results.rotate_key_on_demand_result,
    ("key_id",),
    repeatable=False,
    placement=Placement.PRIMARY,
)
LIST_KEY_ROTATIONS = Operation(
    "ListKeyRotations",
    kms_pb2.ListKeyRotationsRequest,
    key_type_results.list_key_rotations_result,
    ("key_id",),
    placement=Placement.REPLICA,
)
# Imported material is each region's own import (AWS imports into every replica): one
# definite region. A new import token each time is harmless; importing or deleting
# again is not the same call.
GET_PARAMETERS_FOR_IMPORT = Operation(
    "GetParametersForImport",
    kms_pb2.GetParametersForImportRequest,
    key_type_results.get_parameters_for_import_result,
    ("key_id",),
)
IMPORT_KEY_MATERIAL = Operation(
    "ImportKeyMaterial",
    kms_pb2.ImportKeyMaterialRequest,
    key_type_results.import_key_material_result,
    ("key_id",),
    repeatable=False,
)
DELETE_IMPORTED_KEY_MATERIAL = Operation(
    "DeleteImportedKeyMaterial",
    kms_pb2.DeleteImportedKeyMaterialRequest,
    key_type_results.delete_imported_key_material_result,
    ("key_id",),
    repeatable=False,
)
# Multi-Region keys: both change shared properties, so both go to the key's primary
# region. A second ReplicateKey finds the replica (AlreadyExists) and a second
# UpdatePrimaryRegion finds a replica key, so neither is sent again blindly.
REPLICATE_KEY = Operation(
    "ReplicateKey",
    kms_pb2.ReplicateKeyRequest,
    replication_results.replicate_key_result,
    ("key_id",),
    repeatable=False,
    placement=Placement.PRIMARY,
)
UPDATE_PRIMARY_REGION = Operation(
    "UpdatePrimaryRegion",
    kms_pb2.UpdatePrimaryRegionRequest,
    results.empty_result,
    ("key_id",),
    repeatable=False,
    placement=Placement.PRIMARY,
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
        converter = _WIRE_CONVERTERS.get(name)
        present[name] = converter(value) if converter is not None else value
    return request_type(**present)


def _wire_constraints(constraints: object) -> kms_pb2.GrantConstraints:
    return access_results.wire_constraints(constraints)  # type: ignore[arg-type]


def _wire_context_entries(entries: object) -> list[kms_pb2.ContextEntry]:
    return access_results.wire_context_entries(entries)  # type: ignore[arg-type]


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


# Arguments given as SDK values (Tag, GrantConstraints, ContextEntry, or plain mappings)
# that become messages on the wire.
_WIRE_CONVERTERS: dict[str, Callable[[object], object]] = {
    "tags": _wire_tags,
    "constraints": _wire_constraints,
    "context_entries": _wire_context_entries,
}


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
        routing: RoutingOptions | None = None,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._router = Router(
            tuple(self._endpoints), pinned_region=region, preferred_region=preferred_region
        )
        self._routing = routing or RoutingOptions()
        self._regions = RegionBook(
            self._router.regions,
            policy=self._routing.breaker,
            preferred_region=preferred_region,
            clock=self._routing.clock,
        )
        self._replicas = ReplicaDirectory(self._routing.clock)
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

    def stats(self) -> ClientStats:
        """Per-region round-trip time, health, breaker state and counters, now."""
        return self._regions.snapshot()

    def _plan(
        self,
        operation: Operation[RequestT, ResponseT, ResultT],
        fields: Mapping[str, object],
        timeout_s: float | None,
    ) -> CallPlan[RequestT]:
        """Everything about one call that can be decided before sending (no I/O)."""
        self._ensure_open()
        timeout = self._timeout_s if timeout_s is None else _checked_timeout(timeout_s)
        call_route = route(
            operation.placement,
            fields if operation.route_fields is None else operation.route_fields(fields),
            operation.route_by,
            regions=self._router.regions,
            home_region=self._router.home_region,
            pinned_region=self._router.pinned_region,
            directory=self._replicas,
        )
        return CallPlan(
            operation=operation.name,
            request=build_request(operation.request_type, fields),
            route=call_route,
            repeatable=operation.repeatable,
            hedge=operation.hedge,
            timeout_s=timeout,
            options=self._routing,
            book=self._regions,
            directory=self._replicas,
        )

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

    def _secure_channel_options(self, region: str) -> list[tuple[str, str | int]]:
        # gRPC's default reconnect backoff grows to two minutes, which would keep a
        # region that came back looking dead long after its breaker let a trial through.
        # (Not grpc.min_reconnect_backoff_ms: gRPC also takes it as the connect timeout,
        # and a far region needs more than a few hundred ms for TCP and TLS.)
        return [
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_INITIAL_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
            *self._channel_options(region),
        ]


def _checked_timeout(timeout_s: float) -> float:
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ClientConfigError(f"timeout_s must be a positive number of seconds, not {timeout_s}")
    return timeout_s


class Invoker(Protocol):
    """What a method mixin of the synchronous client needs of it (``self`` of its
    methods): the one call path every operation takes."""

    def _invoke(
        self,
        operation: Operation[RequestT, ResponseT, ResultT],
        timeout_s: float | None,
        **fields: object,
    ) -> ResultT: ...


class AsyncInvoker(Protocol):
    """:class:`Invoker` for the asynchronous client's mixins."""

    async def _invoke(
        self,
        operation: Operation[RequestT, ResponseT, ResultT],
        timeout_s: float | None,
        **fields: object,
    ) -> ResultT: ...
