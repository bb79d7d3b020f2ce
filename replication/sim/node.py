"""One simulated region: an in-memory durable store driven by the real protocol core.

What a node keeps across a crash is :class:`Durable` (every change is one atomic step, as
one SQLite transaction is in the real node); what a crash loses is everything else — the
shippers' positions and backoff, requests in flight, timers. The operations and the apply
path call the same pure functions as the real node: the domain transitions in
``server/domain/multi_region.py`` and ``replication.core``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from meridian.replication.core.apply import Decision, LocalKey, Outcome, apply_record
from meridian.replication.core.receiver import (
    ApplyFrom,
    Duplicate,
    Gap,
    InboundPosition,
    applied_seq,
    plan_entries,
    position_after_snapshot,
)
from meridian.replication.core.shipper import wants_material
from meridian.server.domain.crypto.peer_wrap import check_commitment
from meridian.server.domain.model import KeyState
from meridian.server.domain.multi_region import (
    ABSENT,
    LocalMeta,
    Record,
    SharedState,
    mark_deleted,
)


@dataclass
class KeyRow:
    """The local key row: independent state, current version, stored materials."""

    state: KeyState
    current: bytes
    materials: dict[bytes, bytes]
    incarnation: int
    pending_window_s: float = 0.0
    deletion_due: float | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    record: Record
    created_at: float


@dataclass
class Durable:
    log_id: bytes
    states: dict[str, SharedState] = field(default_factory=dict)
    metas: dict[str, LocalMeta] = field(default_factory=dict)
    keys: dict[str, KeyRow] = field(default_factory=dict)
    outbox: dict[int, OutboxEntry] = field(default_factory=dict)
    head_seq: int = 0
    first_retained_seq: int = 1
    inbound: dict[str, InboundPosition] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WireEntry:
    seq: int
    record: Record
    materials: dict[bytes, bytes]


class ApplyError(Exception):
    """A record fails the checks the real node makes before applying (bad material)."""


class SimNode:
    def __init__(self, region: str, log_id: bytes, on_change: Callable[[SimNode, str], None]):
        self.region = region
        self.durable = Durable(log_id=log_id)
        self.up = True
        self.boot = 0
        # Called after every durable change to a key, so the world can check invariants.
        self._on_change = on_change
        self.refusals = 0
        # The deletion window of replicas this region creates when records arrive.
        self.default_window_s = 5.0

    # ---- the outbox -----------------------------------------------------------------

    def retained_first_seq(self) -> int:
        return self.durable.first_retained_seq

    def emit(self, key_id: str, now: float) -> None:
        durable = self.durable
        state = durable.states[key_id]
        row = durable.keys.get(key_id)
        record = Record(
            author_region=self.region,
            author_key_state=row.state.value if row is not None else ABSENT,
            state=state,
        )
        durable.head_seq += 1
        durable.outbox[durable.head_seq] = OutboxEntry(durable.head_seq, record, now)

    def prune_through(self, seq: int) -> None:
        durable = self.durable
        while durable.first_retained_seq <= min(seq, durable.head_seq):
            del durable.outbox[durable.first_retained_seq]
            durable.first_retained_seq += 1

    def wire_entries(self, first_seq: int, last_seq: int, destination: str) -> list[WireEntry]:
        entries = []
        for seq in range(first_seq, last_seq + 1):
            entry = self.durable.outbox[seq]
            state = entry.record.state
            current = self.durable.states.get(state.key_id)
            entries.append(
                WireEntry(
                    seq,
                    entry.record,
                    self._materials(state.key_id, destination, state, current),
                )
            )
        return entries

    def snapshot_records(
        self, after_key_id: str, keys_max: int, destination: str
    ) -> tuple[list[WireEntry], str | None]:
        """One chunk of the current state of every key, in key id order; the second value
        is the last key id of the chunk, or None if the chunk ends the snapshot."""
        key_ids = sorted(k for k in self.durable.states if k > after_key_id)
        chunk = key_ids[:keys_max]
        entries = []
        for key_id in chunk:
            state = self.durable.states[key_id]
            row = self.durable.keys.get(key_id)
            record = Record(self.region, row.state.value if row else ABSENT, state)
            entries.append(WireEntry(0, record, self._materials(key_id, destination, state)))
        next_after = chunk[-1] if len(key_ids) > keys_max else None
        return entries, next_after

    def _materials(
        self, key_id: str, destination: str, *views: SharedState | None
    ) -> dict[bytes, bytes]:
        row = self.durable.keys.get(key_id)
        if row is None or not wants_material(destination, *views):
            return {}
        # Only the material of versions the record names: a later record names later ones.
        named = views[0].versions if views[0] is not None else {}
        return {mid: material for mid, material in row.materials.items() if mid in named}

    # ---- receiving --------------------------------------------------------------------

    def position_for(self, origin: str, log_id: bytes) -> int:
        return applied_seq(self.durable.inbound.get(origin), log_id)

    def receive_entries(
        self, origin: str, log_id: bytes, entries: list[WireEntry], now: float
    ) -> tuple[str, int]:
        """Apply a batch; returns ("ack" | "gap", position)."""
        plan = plan_entries(
            self.durable.inbound.get(origin),
            log_id=log_id,
            first_seq=entries[0].seq,
            last_seq=entries[-1].seq,
        )
        if isinstance(plan, Gap):
            return "gap", plan.position
        if isinstance(plan, Duplicate):
            return "ack", plan.position
        assert isinstance(plan, ApplyFrom)
        for entry in entries:
            if entry.seq > plan.skip_through:
                self._apply(entry, now)
        position = entries[-1].seq
        self.durable.inbound[origin] = InboundPosition(log_id, position)
        return "ack", position

    def receive_snapshot(
        self,
        origin: str,
        log_id: bytes,
        entries: list[WireEntry],
        through_seq: int,
        last: bool,
        now: float,
    ) -> int:
        for entry in entries:
            self._apply(entry, now)
        position = position_after_snapshot(
            self.durable.inbound.get(origin),
            log_id=log_id,
            through_seq=through_seq,
            last_chunk=last,
        )
        self.durable.inbound[origin] = InboundPosition(log_id, position)
        return position

    def _apply(self, entry: WireEntry, now: float) -> None:
        record = entry.record
        key_id = record.state.key_id
        for material_id, material in entry.materials.items():
            version = record.state.versions.get(material_id)
            if version is None:
                raise ApplyError("material of an unknown version")
            check_commitment(material, version.commitment, key_id=key_id, material_id=material_id)
        durable = self.durable
        row = durable.keys.get(key_id)
        local = (
            None
            if row is None
            else LocalKey(
                state=row.state, current_material_id=row.current, held=frozenset(row.materials)
            )
        )
        decision = apply_record(
            region=self.region,
            state=durable.states.get(key_id),
            meta=durable.metas.get(key_id),
            key=local,
            record=record,
            attached=frozenset(entry.materials),
            now_us=int(now * 1e6),
        )
        if decision.outcome is Outcome.REFUSED:
            self.refusals += 1
        self.commit(key_id, decision, entry.materials, now)

    def commit(
        self, key_id: str, decision: Decision, materials: dict[bytes, bytes], now: float
    ) -> None:
        """Write a decision the way the real node's transaction does."""
        durable = self.durable
        if decision.meta is not None:
            durable.metas[key_id] = decision.meta
        if decision.outcome in (Outcome.REFUSED, Outcome.IGNORED, Outcome.UNCHANGED):
            return
        assert decision.state is not None
        durable.states[key_id] = decision.state
        row = durable.keys.get(key_id)
        if decision.create_replica is not None:
            assert row is None
            assert decision.key_state is not None
            assert decision.current_material_id is not None
            row = KeyRow(
                state=decision.key_state,
                current=decision.current_material_id,
                materials={},
                incarnation=decision.state.members[self.region].incarnation,
                pending_window_s=self.default_window_s,
            )
            durable.keys[key_id] = row
        if row is not None:
            for material_id in decision.store_materials:
                row.materials[material_id] = materials[material_id]
            if decision.key_state is not None:
                row.state = decision.key_state
                if row.state is not KeyState.PENDING_DELETION:
                    row.deletion_due = None
            if decision.current_material_id is not None:
                row.current = decision.current_material_id
            if decision.start_deletion_window:
                row.deletion_due = now + row.pending_window_s
        if decision.emit:
            self.emit(key_id, now)
        self._on_change(self, key_id)

    # ---- local changes (the operations and the sweeper) -------------------------------

    def store_local(
        self,
        key_id: str,
        state: SharedState,
        now: float,
        *,
        meta: LocalMeta | None = None,
        row: KeyRow | None = None,
    ) -> None:
        durable = self.durable
        durable.states[key_id] = state
        if meta is not None:
            durable.metas[key_id] = meta
        if row is not None:
            durable.keys[key_id] = row
        self.emit(key_id, now)
        self._on_change(self, key_id)

    def delete_key(self, key_id: str, now: float) -> None:
        """The sweeper: the waiting period is over; the region's incarnation ends."""
        durable = self.durable
        del durable.keys[key_id]
        durable.states[key_id] = mark_deleted(durable.states[key_id], region=self.region)
        meta = durable.metas.get(key_id)
        if meta is not None:
            durable.metas[key_id] = replace(meta, handover=None)
        self.emit(key_id, now)
        self._on_change(self, key_id)
