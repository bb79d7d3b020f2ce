"""What a region does with one incoming record: the apply decision, as a pure function.

A *record* is one region's view of one key right after it changed (its author, the
author's own key state, and the shared state). Applying it:

1. Epochs only grow. A record whose epoch is older than this region's is refused whole:
   its author has not yet learned of a newer primary. Nothing is lost by refusing it — the
   author keeps its state, and once it learns the newer epoch (every peer ships to every
   peer until acknowledged) its state changes and it sends it again at the new epoch, with
   every version it made in between.
2. Otherwise the record is joined into the local view (``merge.join``).
3. The local key follows the joined view: a region that has just become a live member and
   holds material creates its replica (Creating until it holds every version, then
   Enabled); attached material of versions it lacks is stored; the local current version
   follows the shared one once its material is here; the region records itself as holder
   of what it stores; primary moves start and finish the Updating hand-over; a primary in
   PendingReplicaDeletion whose last replica is gone starts its deletion window; the
   primary promotes a pending version once every live member holds it.
4. If anything changed — the shared view or the local key state — the region appends its
   own record, so that its peers learn it (this is also how a version made on a lost
   primary, or a holder acknowledgement, travels on).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from meridian.replication.core.merge import MergeConflict, join
from meridian.server.domain.model import KeyState
from meridian.server.domain.multi_region import (
    Handover,
    LocalMeta,
    PeerReport,
    Record,
    ReplicaRequest,
    SharedState,
    add_holder,
    adopt_orphan,
    orphan_successor,
    promote_ready,
)


class Outcome(StrEnum):
    APPLIED = "applied"  # the local view or key changed
    UNCHANGED = "unchanged"  # nothing new (a duplicate, or already known)
    IGNORED = "ignored"  # about a key this region is not a member of
    REFUSED = "refused"  # stale epoch or a contradiction; nothing applied


@dataclass(frozen=True, slots=True)
class LocalKey:
    """What the protocol needs to know about this region's key row."""

    state: KeyState
    current_material_id: bytes
    held: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str = ""
    state: SharedState | None = None  # the view to store (None: keep the stored one)
    meta: LocalMeta | None = None  # the local meta to store (None: keep)
    create_replica: ReplicaRequest | None = None  # create the key row with these properties
    store_materials: frozenset[bytes] = field(default_factory=frozenset)
    key_state: KeyState | None = None  # the key row's new state (None: unchanged)
    current_material_id: bytes | None = None  # the key row's new current version
    start_deletion_window: bool = False  # PendingDeletion from now + the key's window
    emit: bool = False  # append this region's own record for the key


def apply_record(
    *,
    region: str,
    state: SharedState | None,
    meta: LocalMeta | None,
    key: LocalKey | None,
    record: Record,
    attached: frozenset[bytes],
    now_us: int,
) -> Decision:
    """Decide what ``region`` does with ``record``; ``attached`` are the material ids whose
    material came with it (already unwrapped and checked against their commitments)."""
    incoming = record.state
    if state is not None and incoming.epoch < state.epoch:
        return Decision(
            Outcome.REFUSED,
            f"stale epoch {incoming.epoch} from {record.author_region}; this region is at "
            f"epoch {state.epoch}",
        )
    if state is None:
        if not incoming.is_alive_member(region):
            return Decision(Outcome.IGNORED, "this region holds no related key")
        merged = incoming
    else:
        try:
            merged = join(state, incoming)
        except MergeConflict as conflict:
            return Decision(Outcome.REFUSED, f"contradicts the local view: {conflict}")

    meta = meta or LocalMeta()
    if record.author_region != region:
        reports = dict(meta.reports)
        reports[record.author_region] = PeerReport(
            key_state=record.author_key_state, epoch=incoming.epoch, at_us=now_us
        )
        meta = replace(meta, reports=reports)
    return _settle(
        region=region,
        previous=state,
        merged=merged,
        meta=meta,
        key=key,
        record=record,
        attached=attached,
        now_us=now_us,
    )


def _settle(
    *,
    region: str,
    previous: SharedState | None,
    merged: SharedState,
    meta: LocalMeta,
    key: LocalKey | None,
    record: Record,
    attached: frozenset[bytes],
    now_us: int,
) -> Decision:
    member = merged.members.get(region)
    held = key.held if key is not None else frozenset()
    store: frozenset[bytes] = frozenset()
    create: ReplicaRequest | None = None
    key_state = key.state if key is not None else None
    current = key.current_material_id if key is not None else None
    start_window = False

    if member is not None and member.alive:
        store = (attached - held) & frozenset(merged.versions)
        held = held | store
        if key is None and held:
            create = member.request or ReplicaRequest()
            key_state = KeyState.CREATING
        if key_state is KeyState.CREATING and held >= frozenset(merged.versions):
            key_state = KeyState.ENABLED
        if held:
            current = _local_current(merged, held, current)
        unrecorded = [mid for mid in held if not merged.holds(region, mid)]
        if unrecorded and key_state is not None:
            merged = add_holder(merged, region=region, material_ids=unrecorded)
    else:
        # Not (or no longer) a live member: keep the view as a tombstone, store nothing.
        store = frozenset()

    handover = meta.handover
    if key_state is not None:
        is_primary = merged.primary_region == region
        was_primary = previous is not None and previous.primary_region == region
        if is_primary and not was_primary and previous is not None and create is None:
            # Another region handed the key to this one: Updating until it confirms.
            if key_state is KeyState.ENABLED:
                key_state = KeyState.UPDATING
                handover = Handover("from", previous.primary_region, merged.epoch)
        elif was_primary and not is_primary:
            if key_state is KeyState.PENDING_REPLICA_DELETION:
                # Only a primary waits for its replicas; a replica's window starts now.
                key_state = KeyState.PENDING_DELETION
                start_window = True
            if handover is not None and handover.direction == "from":
                handover = None
                if key_state is KeyState.UPDATING:
                    key_state = KeyState.ENABLED
        handover, key_state = _finish_handover(
            region=region, merged=merged, handover=handover, key_state=key_state, record=record
        )
        if orphan_successor(merged) == region and current is not None:
            merged = adopt_orphan(merged, region=region, current_material_id=current)
            is_primary = True
            handover = None
            if key_state is KeyState.UPDATING:
                key_state = KeyState.ENABLED
        if is_primary and key_state is KeyState.PENDING_DELETION and merged.replica_regions():
            # A primary with live replicas is never deleted: it waits for them (this region
            # was scheduled for deletion as a replica, then became primary).
            key_state = KeyState.PENDING_REPLICA_DELETION
            start_window = False
        if (
            is_primary
            and key_state is KeyState.PENDING_REPLICA_DELETION
            and not merged.replica_regions()
        ):
            key_state = KeyState.PENDING_DELETION
            start_window = True
        # The rotation completes now, in this region: that is its date everywhere.
        promoted = promote_ready(merged, region=region, now_us=now_us)
        if promoted is not None:
            merged = promoted
            current = _local_current(merged, held, current)

    new_meta = replace(meta, handover=handover)
    state_changed = previous is None or merged != previous
    key_changed = key is not None and key_state is not key.state
    emit = state_changed or key_changed or create is not None
    key_changed_current = key is not None and current != key.current_material_id
    changed = emit or new_meta != meta or bool(store) or key_changed_current
    if not changed and previous is not None:
        # Reports of the author are refreshed even when nothing else changed.
        return Decision(Outcome.UNCHANGED, meta=new_meta)
    return Decision(
        Outcome.APPLIED,
        state=merged,
        meta=new_meta,
        create_replica=create,
        store_materials=store,
        key_state=key_state if (key is None or key_state is not key.state) else None,
        current_material_id=current if create is not None or key_changed_current else None,
        start_deletion_window=start_window,
        emit=emit,
    )


def _finish_handover(
    *,
    region: str,
    merged: SharedState,
    handover: Handover | None,
    key_state: KeyState | None,
    record: Record,
) -> tuple[Handover | None, KeyState | None]:
    """End the Updating window of a primary move when the other side has done its part."""
    if handover is None:
        return None, key_state
    done = False
    if handover.direction == "to":
        # The old primary waits until the new primary says that it is primary.
        done = merged.primary_region == region or (
            record.author_region == merged.primary_region
            and record.state.primary_region == record.author_region
        )
    else:
        # The new primary waits until the old one has stepped down (or is gone).
        peer = merged.members.get(handover.peer)
        done = (
            merged.primary_region != region
            or (peer is not None and peer.deleted)
            or (
                record.author_region == handover.peer
                and record.state.epoch >= handover.epoch
                and record.author_key_state != KeyState.UPDATING.value
            )
        )
    if not done:
        return handover, key_state
    if key_state is KeyState.UPDATING:
        key_state = KeyState.ENABLED
    return None, key_state


def _local_current(state: SharedState, held: frozenset[bytes], current: bytes | None) -> bytes:
    """The version this region encrypts with: the shared current one once its material is
    here; until then the one it had, or (a new replica) the newest version it holds."""
    if state.settings.current_material_id in held:
        return state.settings.current_material_id
    if current is not None and current in held:
        return current
    return max(held, key=lambda mid: (state.versions[mid].created_at_us, mid))
