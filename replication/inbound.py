"""The receiving side of the log: one batch, applied in one storage transaction.

For each record of a batch: the sans-IO decision (``core.apply.apply_record``) on the
region's view and key row, then what it implies in storage — the new view, a replica key
row created (Creating or Enabled), material wrapped by the region root key, the key's new
state or current version, a deletion window started, this region's own record appended —
and finally the origin's new inbound position. The caller (``ReplicationEngine``) runs it
inside one shielded write transaction, so all of it commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.replication.codec import IncomingEntry, OpenedBatch
from meridian.replication.core.apply import Decision, LocalKey, Outcome, apply_record
from meridian.replication.core.receiver import (
    ApplyFrom,
    Duplicate,
    Gap,
    InboundPosition,
    plan_entries,
    position_after_snapshot,
)
from meridian.server.domain import identifiers, validation
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.model import Key, KeyState, KeyVersion, Tag
from meridian.server.domain.multi_region import ABSENT, LocalMeta, Record, SharedState
from meridian.server.domain.multi_region_codec import encode_state
from meridian.server.domain.multi_region_service import MultiRegionService
from meridian.server.domain.service import material_aad
from meridian.server.storage.replication_repository import SqliteReplicationWriter
from meridian.server.storage.repository import SqliteWriter, from_us, to_us

log = structlog.get_logger("meridian.replication")


@dataclass
class BatchResult:
    response: pb.PushResponse
    emitted: bool = False
    changed: dict[str, SharedState] = field(default_factory=dict)


class BatchApplier:
    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        root_key: RootKeyProvider,
        multi_region: MultiRegionService,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self._root_key = root_key
        self._multi_region = multi_region
        self.entries_applied = 0

    async def apply(self, tx: SqliteWriter, batch: OpenedBatch, now: datetime) -> BatchResult:
        """The whole batch in the caller's transaction: each record's decision and what it
        implies, and the new inbound position, committed together or not at all."""
        origin = batch.origin_region
        writer = SqliteReplicationWriter(tx.connection)
        row = await writer.inbound(origin)
        position = None if row is None else InboundPosition(row.log_id, row.applied_seq)
        if batch.snapshot is None:
            plan = plan_entries(
                position,
                log_id=batch.log_id,
                first_seq=batch.entries[0].seq,
                last_seq=batch.entries[-1].seq,
            )
            if isinstance(plan, Gap):
                return BatchResult(
                    pb.PushResponse(outcome=pb.PushResponse.GAP, applied_seq=plan.position)
                )
            if isinstance(plan, Duplicate):
                log.info("ignored a duplicate batch", peer=origin, position=plan.position)
                return BatchResult(
                    pb.PushResponse(outcome=pb.PushResponse.DUPLICATE, applied_seq=plan.position)
                )
            assert isinstance(plan, ApplyFrom)
            todo = [entry for entry in batch.entries if entry.seq > plan.skip_through]
            new_position = batch.entries[-1].seq
        else:
            todo = list(batch.entries)
            through, last = batch.snapshot
            new_position = position_after_snapshot(
                position, log_id=batch.log_id, through_seq=through, last_chunk=last
            )
        result = BatchResult(pb.PushResponse(outcome=pb.PushResponse.APPLIED))
        work = _BatchWork(tx, writer)
        await work.load({entry.record.state.key_id for entry in todo})
        refused = 0
        for entry in todo:
            outcome, did_emit = await self._apply_entry(tx, work, origin, entry, now)
            refused += outcome is Outcome.REFUSED
            result.emitted = result.emitted or did_emit
            if outcome is Outcome.APPLIED:
                result.changed[entry.record.state.key_id] = entry.record.state
        await work.flush(now_us=to_us(now))
        await self._follow_shared_states(tx, work)
        await writer.set_inbound(origin, batch.log_id, new_position, now_us=to_us(now))
        self.entries_applied += len(todo)
        if work.keys_created:
            log.info("created replica keys", peer=origin, keys=work.keys_created)
        result.response.applied_seq = new_position
        result.response.refused_records = refused
        return result

    async def _apply_entry(
        self,
        tx: SqliteWriter,
        work: _BatchWork,
        origin: str,
        entry: IncomingEntry,
        now: datetime,
    ) -> tuple[Outcome, bool]:
        record = entry.record
        key_id = record.state.key_id
        found = work.states.get(key_id)
        key = work.keys.get(key_id)
        if key is None and key_id in work.stale_keys:
            key = await tx.get_key(key_id)
            work.stale_keys.discard(key_id)
            if key is not None:
                work.keys[key_id] = key
        if key is not None and not key.multi_region:
            log.warning("refused a record for a single-Region key id", peer=origin, key_id=key_id)
            return Outcome.REFUSED, False
        local = None
        if key is not None:
            local = LocalKey(
                state=key.state,
                current_material_id=key.current_material_id,
                held=work.held.get(key_id, frozenset()),
            )
        decision = apply_record(
            region=self.region,
            state=None if found is None else found[0],
            meta=None if found is None else found[1],
            key=local,
            record=record,
            attached=frozenset(entry.materials),
            now_us=to_us(now),
        )
        if decision.outcome is Outcome.REFUSED:
            log.warning(
                "refused a replication record",
                peer=origin,
                author=record.author_region,
                key_id=key_id,
                reason=decision.reason,
            )
            return decision.outcome, False
        if decision.outcome is Outcome.IGNORED:
            return decision.outcome, False
        if decision.outcome is Outcome.UNCHANGED:
            if found is not None and decision.meta is not None and decision.meta != found[1]:
                work.put_state(found[0], decision.meta)
            return decision.outcome, False
        await self._write_decision(tx, work, key, decision, entry.materials, now)
        return decision.outcome, decision.emit

    async def _write_decision(
        self,
        tx: SqliteWriter,
        work: _BatchWork,
        key: Key | None,
        decision: Decision,
        materials: dict[bytes, bytes],
        now: datetime,
    ) -> Key | None:
        state = decision.state
        assert state is not None
        assert decision.meta is not None
        key_id = state.key_id
        work.put_state(state, decision.meta)
        versions = {
            material_id: KeyVersion(
                key_id=key_id,
                material_id=material_id,
                created_at=from_us(state.versions[material_id].created_at_us),
                wrapped_material=await self._root_key.wrap(
                    materials[material_id], aad=material_aad(key_id, material_id)
                ),
            )
            for material_id in sorted(decision.store_materials)
        }
        promoted = False
        if decision.create_replica is not None:
            assert decision.key_state is not None
            assert decision.current_material_id is not None
            request = decision.create_replica
            key = Key(
                key_id=key_id,
                arn=identifiers.key_arn(self.region, self.account_id, key_id),
                account_id=self.account_id,
                region=self.region,
                created_at=now,
                description=request.description,
                key_spec=state.key_spec,
                key_usage=state.key_usage,
                origin=state.origin,
                state=decision.key_state,
                policy=request.policy or validation.default_key_policy(self.account_id),
                current_material_id=decision.current_material_id,
                multi_region=True,
            )
            key.check_invariants()
            first_version = versions.pop(decision.current_material_id)
            work.insert_key(key, first_version, request.tags)
            # One line per key at debug; a batch logs how many it created (at info).
            log.debug(
                "created a replica key",
                key_id=key_id,
                state=key.state.value,
                primary=state.primary_region,
            )
        for version in versions.values():
            work.insert_version(version)
        if key is not None and decision.create_replica is None:
            changed = False
            if decision.key_state is not None:
                key.state = decision.key_state
                if key.state is not KeyState.PENDING_DELETION:
                    key.deletion_date = None
                changed = True
            if decision.current_material_id is not None:
                promoted = state.primary_region == self.region
                key.current_material_id = decision.current_material_id
                changed = True
            if decision.start_deletion_window:
                key.state = KeyState.PENDING_DELETION
                days = key.pending_window_days or validation.PENDING_WINDOW_DAYS_DEFAULT
                key.deletion_date = now + timedelta(days=days)
                key.pending_window_days = days
                changed = True
            if changed:
                if work.inserting(key_id):
                    # Created earlier in this batch: its row must exist to be updated.
                    await work.flush(now_us=to_us(now))
                await tx.update_key(key)
            if promoted and self._multi_region.version_promoted is not None:
                # The hook is another feature's code on the same transaction: it must see
                # everything written so far, and may change the key row itself.
                await work.flush(now_us=to_us(now))
                await self._multi_region.version_promoted(tx, key, key.current_material_id)
                work.forget_key(key_id)
        if key is not None:
            # The rotation setting and history are shared: this region's own tables follow
            # (``_follow_shared_states``, once per key, after the batch's writes).
            work.followed[key_id] = state
        if decision.emit:
            work.append_record(
                Record(
                    author_region=self.region,
                    author_key_state=key.state.value if key is not None else ABSENT,
                    state=state,
                )
            )
        return key

    async def _follow_shared_states(self, tx: SqliteWriter, work: _BatchWork) -> None:
        """Call the rotation feature's ``shared_state_changed`` once per key the batch
        changed, with the key's final view, after the batch's views and versions are
        written. It brings per-region tables in line with the view (idempotent, and the
        final view contains every earlier one), so once per key at the end leaves them as
        once per record would, at a fraction of the statements."""
        hook = self._multi_region.shared_state_changed
        if hook is None:
            return
        for key_id, state in work.followed.items():
            key = work.keys.get(key_id)
            if key is None:
                key = await tx.get_key(key_id)
            if key is not None:
                await hook(tx, key, state)


class _BatchWork:
    """What applying one batch reads and writes in the replication tables, in bulk.

    Before the first record, the views, key rows and held versions of every key the batch
    names are read in a few statements (``load``); records then read and update these
    copies, and the writes they imply (views, versions, this region's own records) are
    queued and written with one ``executemany`` each (``flush``) — instead of a dozen
    statements per record, each a hop to the database thread. All of it happens inside
    the caller's one transaction: a failure anywhere rolls back the whole batch, queued
    writes included (they are only ever written inside it).

    Key rows are the key service's table, written through the caller's ``SqliteWriter``:
    new replica keys at ``flush`` (one ``insert_keys`` for the batch, before the versions
    and tags that refer to them), changes of existing ones at once (after a ``flush`` if
    the row is one this batch creates); a copy here stays in step because ``update_key``
    updates the object it is given.
    """

    def __init__(self, tx: SqliteWriter, writer: SqliteReplicationWriter) -> None:
        self._tx = tx
        self._writer = writer
        self.states: dict[str, tuple[SharedState, LocalMeta]] = {}
        self.keys: dict[str, Key] = {}
        self.held: dict[str, frozenset[bytes]] = {}
        # Keys whose row another feature may have changed (re-read before use).
        self.stale_keys: set[str] = set()
        # Per key the batch changed (and that has a key row here): its latest view.
        self.followed: dict[str, SharedState] = {}
        self._dirty_states: dict[str, tuple[SharedState, LocalMeta]] = {}
        self._versions: list[KeyVersion] = []
        self._records: list[Record] = []
        self._new_keys: list[tuple[Key, KeyVersion]] = []
        self._new_key_ids: set[str] = set()
        self.keys_created = 0
        self._new_tags: list[tuple[str, Sequence[Tag]]] = []

    async def load(self, key_ids: set[str]) -> None:
        self.states = await self._writer.states_of(key_ids)
        self.keys = await self._writer.keys_of(key_ids)
        self.held = await self._writer.held_material_ids_of(key_ids)

    def put_state(self, state: SharedState, meta: LocalMeta) -> None:
        self.states[state.key_id] = (state, meta)
        self._dirty_states[state.key_id] = (state, meta)

    def insert_key(self, key: Key, first_version: KeyVersion, tags: Sequence[Tag]) -> None:
        """A replica key created by this batch: written at ``flush`` with the others (one
        statement for all of them instead of two or three per key)."""
        self._new_keys.append((key, first_version))
        self._new_key_ids.add(key.key_id)
        self.keys_created += 1
        if tags:
            self._new_tags.append((key.key_id, tags))
        self.keys[key.key_id] = key
        self.add_held(key.key_id, first_version.material_id)

    def inserting(self, key_id: str) -> bool:
        """Whether ``key_id``'s row is created by this batch and not yet written."""
        return key_id in self._new_key_ids

    def insert_version(self, version: KeyVersion) -> None:
        self._versions.append(version)
        self.add_held(version.key_id, version.material_id)

    def add_held(self, key_id: str, material_id: bytes) -> None:
        self.held[key_id] = self.held.get(key_id, frozenset()) | {material_id}

    def append_record(self, record: Record) -> None:
        self._records.append(record)

    def forget_key(self, key_id: str) -> None:
        self.keys.pop(key_id, None)
        self.stale_keys.add(key_id)

    async def flush(self, *, now_us: int) -> None:
        states = list(self._dirty_states.values())
        encoded = [encode_state(state) for state, _meta in states]
        # A record this region emits usually carries the very view it stores: its
        # canonical bytes are made once for both tables.
        by_key = {
            state.key_id: (state, data)
            for (state, _meta), data in zip(states, encoded, strict=True)
        }
        # Key rows first: versions and tags refer to them.
        if self._new_keys:
            await self._tx.insert_keys(self._new_keys)
            for key_id, tags in self._new_tags:
                await self._tx.put_tags(key_id, tags)
        await self._writer.put_states(states, now_us=now_us, encoded=encoded)
        await self._writer.insert_versions(self._versions)
        await self._writer.append_records(
            self._records,
            now_us=now_us,
            state_bytes=[_same_view(by_key, record.state) for record in self._records],
        )
        self._dirty_states.clear()
        self._new_keys.clear()
        self._new_key_ids.clear()
        self._new_tags.clear()
        self._versions.clear()
        self._records.clear()


def _same_view(encoded: dict[str, tuple[SharedState, bytes]], state: SharedState) -> bytes | None:
    """The canonical bytes already made for this very view object, if any."""
    found = encoded.get(state.key_id)
    return found[1] if found is not None and found[0] is state else None
