"""Typed results of the multi-Region key operations and of replication status.

Like ``results``: frozen dataclasses with the snake_case names of the response members
plus ``region`` (the region that served the call); timestamps are UTC ``datetime`` values
(None when unset); repeated fields are tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from meridian.client.results import KeyMetadata, Tag
from meridian.client.results import _key_metadata as key_metadata_of
from meridian.proto.kms.v1 import kms_pb2
from meridian.proto.replication_admin.v1 import replication_admin_pb2 as admin_pb

__all__ = [
    "ForcePrimaryRegionResult",
    "PeerReplicationStatus",
    "PendingKeyVersion",
    "ReplicateKeyResult",
    "ReplicationInbound",
    "ReplicationStatusResult",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicateKeyResult:
    replica_key_metadata: KeyMetadata
    replica_policy: str
    replica_tags: tuple[Tag, ...]
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ForcePrimaryRegionResult:
    """A forced promotion's outcome (Meridian's addition: AWS has no forced promotion)."""

    key_id: str  # the promoted key's ARN
    primary_region: str
    epoch: int
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerReplicationStatus:
    region: str
    endpoint: str
    connection_state: str  # new | connected | backing-off
    acked_seq: int
    backlog_entries: int
    lag_s: float
    last_error: str | None
    last_contact: datetime | None
    snapshotting: bool
    pinned: bool
    consecutive_failures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationInbound:
    origin_region: str
    applied_seq: int
    applied_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingKeyVersion:
    key_id: str
    key_material_id: str
    primary_region: str
    missing_regions: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationStatusResult:
    log_id: str
    head_seq: int
    first_retained_seq: int
    signing_key_fingerprint: str
    multi_region_keys: int
    peers: tuple[PeerReplicationStatus, ...]
    inbound: tuple[ReplicationInbound, ...]
    pending_versions: tuple[PendingKeyVersion, ...]
    region: str


def _datetime(message: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return message.ToDatetime(tzinfo=UTC) if present else None


def replicate_key_result(message: kms_pb2.ReplicateKeyResponse, region: str) -> ReplicateKeyResult:
    return ReplicateKeyResult(
        replica_key_metadata=key_metadata_of(message.replica_key_metadata),
        replica_policy=message.replica_policy,
        replica_tags=tuple(Tag(tag.tag_key, tag.tag_value) for tag in message.replica_tags),
        region=message.region or region,
    )


def force_primary_region_result(
    message: admin_pb.ForcePrimaryRegionResponse, region: str
) -> ForcePrimaryRegionResult:
    return ForcePrimaryRegionResult(
        key_id=message.key_id,
        primary_region=message.primary_region,
        epoch=message.epoch,
        region=message.region or region,
    )


def replication_status_result(
    message: admin_pb.GetReplicationStatusResponse, region: str
) -> ReplicationStatusResult:
    return ReplicationStatusResult(
        log_id=message.log_id,
        head_seq=message.head_seq,
        first_retained_seq=message.first_retained_seq,
        signing_key_fingerprint=message.signing_key_fingerprint,
        multi_region_keys=message.multi_region_keys,
        peers=tuple(
            PeerReplicationStatus(
                region=peer.region,
                endpoint=peer.endpoint,
                connection_state=peer.connection_state,
                acked_seq=peer.acked_seq,
                backlog_entries=peer.backlog_entries,
                lag_s=peer.lag_s,
                last_error=peer.last_error or None,
                last_contact=_datetime(peer.last_contact, peer.HasField("last_contact")),
                snapshotting=peer.snapshotting,
                pinned=peer.pinned,
                consecutive_failures=peer.consecutive_failures,
            )
            for peer in message.peers
        ),
        inbound=tuple(
            ReplicationInbound(
                origin_region=item.origin_region,
                applied_seq=item.applied_seq,
                applied_at=_datetime(item.applied_at, item.HasField("applied_at")),
            )
            for item in message.inbound
        ),
        pending_versions=tuple(
            PendingKeyVersion(
                key_id=item.key_id,
                key_material_id=item.key_material_id,
                primary_region=item.primary_region,
                missing_regions=tuple(item.missing_regions),
            )
            for item in message.pending_versions
        ),
        region=message.region or region,
    )
