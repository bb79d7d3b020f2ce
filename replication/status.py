"""One region's view of replication, for operators (GetReplicationStatus) and /metrics.

Per peer: the connection state, the acknowledged position of this region's log, the
backlog (entries not acknowledged) and the lag (the age of the oldest of them), the last
error since the last success; what this region applied of each peer's log; and key
versions still pending at this region's primaries (two-phase rotation).
"""

from __future__ import annotations

from dataclasses import dataclass

from meridian.replication.core.shipper import PeerShipper
from meridian.server.config import PeerConfig
from meridian.server.storage.replication_repository import SqliteReplicationRepository

# Pending versions listed at most (one per key with a rotation waiting for its replicas).
PENDING_LISTED_MAX = 1000


@dataclass(frozen=True, slots=True)
class PeerStatus:
    region: str
    endpoint: str
    connection_state: str
    acked_seq: int
    backlog_entries: int
    lag_s: float
    last_error: str
    last_contact_s: float | None
    snapshotting: bool
    pinned: bool
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class EngineStatus:
    region: str
    log_id: str
    head_seq: int
    first_retained_seq: int
    fingerprint: str
    multi_region_keys: int
    peers: list[PeerStatus]
    inbound: list[tuple[str, int, int]]
    pending: list[tuple[str, str, str, list[str]]]


async def status_snapshot(
    *,
    region: str,
    log_id: bytes,
    fingerprint: str,
    reader: SqliteReplicationRepository,
    links: dict[str, tuple[PeerConfig, PeerShipper]],
    now_s: float,
) -> EngineStatus:
    bounds = await reader.log_bounds()
    assert bounds is not None
    peers = []
    for peer_region, (config, shipper) in sorted(links.items()):
        row = await reader.peer(peer_region)
        acked = row.acked_seq if row is not None and row.acked_log_id == log_id else 0
        if shipper.position is not None:
            acked = max(acked, shipper.position)
        backlog = max(0, bounds.head_seq - acked)
        lag_s = 0.0
        if backlog:
            oldest = await reader.outbox_created_at_us(acked + 1)
            if oldest is not None:
                lag_s = max(0.0, now_s - oldest / 1e6)
        peers.append(
            PeerStatus(
                region=peer_region,
                endpoint=config.endpoint,
                connection_state=shipper.state.value,
                acked_seq=acked,
                backlog_entries=backlog,
                lag_s=round(lag_s, 3),
                last_error=shipper.last_error,
                last_contact_s=shipper.last_contact_at,
                snapshotting=shipper.snapshotting,
                pinned=row is not None and row.signing_public_key is not None,
                consecutive_failures=shipper.failures,
            )
        )
    pending = []
    for state in await reader.pending_states(limit=PENDING_LISTED_MAX):
        material_id = state.settings.pending_material_id
        assert material_id is not None
        pending.append(
            (
                state.key_id,
                material_id.hex(),
                state.primary_region,
                state.missing_holders(material_id),
            )
        )
    return EngineStatus(
        region=region,
        log_id=log_id.hex(),
        head_seq=bounds.head_seq,
        first_retained_seq=bounds.first_retained_seq,
        fingerprint=fingerprint,
        multi_region_keys=await reader.count_states(),
        peers=peers,
        inbound=[
            (row.origin_region, row.applied_seq, row.applied_at_us)
            for row in await reader.inbound_all()
        ],
        pending=pending,
    )
