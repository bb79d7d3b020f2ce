"""Multi-Region key operations (ReplicateKey, UpdatePrimaryRegion, forced promotion) and
the hooks through which the key service keeps each MRK's shared state and the log.

Every change here is one storage transaction that changes the key, stores the new view of
its shared state and appends this region's record to the replication outbox, so that the
log never misses a change and never carries one that did not commit (transactional
outbox). The rules themselves are the pure transitions of ``multi_region.py``.

Hooks for the rest of the domain (each runs inside the caller's write transaction):

- ``key_created``: CreateKey made a multi-Region primary key.
- ``deletion_state``: ScheduleKeyDeletion of a primary with live replicas waits in
  PendingReplicaDeletion.
- ``key_state_changed``: the key's own state changed (enable, disable, deletion scheduled
  or cancelled); peers learn it (it decides whether a replica may become primary).
- ``before_delete``: the sweeper is about to delete the key (it may have to wait).
- ``require_shared_write``: shared properties change only at the primary.
- ``stage_version`` / ``set_rotation``: the two-phase rotation hook and the rotation
  setting, for the rotation feature (see ``stage_version``).

And hooks the other way, set by the composition root for the rotation feature:
``version_promoted`` (replication made a staged version current at the primary) and
``shared_state_changed`` (the view changed, by this region or by a peer's record: the
rotation feature keeps its per-region tables in step with the shared rotation setting
and rotation history).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import structlog

from meridian.server.domain import identifiers, validation
from meridian.server.domain.crypto.peer_wrap import material_commitment
from meridian.server.domain.errors import (
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from meridian.server.domain.key_material import RotationType
from meridian.server.domain.model import (
    Caller,
    Key,
    KeyState,
    KeyVersion,
    MultiRegionConfiguration,
    Tag,
)
from meridian.server.domain.multi_region import (
    ABSENT,
    DeletionVerdict,
    LocalMeta,
    Record,
    ReplicaRequest,
    SharedState,
    VersionInfo,
    configuration,
    deletion_state,
    deletion_verdict,
    force_promote,
    hand_over,
    mark_deleted,
    new_primary_state,
    replicate,
    require_primary,
    set_rotation,
    stage_version,
)
from meridian.server.domain.ports import KeyRepository, KeyWriter
from meridian.server.domain.service import KeyService

log = structlog.get_logger("meridian.multi_region")


class MultiRegionRepository(Protocol):
    async def get_state(self, key_id: str) -> tuple[SharedState, LocalMeta] | None: ...


class MultiRegionWriter(MultiRegionRepository, Protocol):
    async def put_state(self, state: SharedState, meta: LocalMeta, *, now_us: int) -> None: ...

    async def append_record(self, record: Record, *, now_us: int) -> int: ...


@dataclass(frozen=True, slots=True)
class ReplicateKeyResult:
    replica: Key
    replica_policy: str
    replica_tags: tuple[Tag, ...]


# Called once a version becomes current by the two-phase rule (with the transaction, the
# key already updated, and the version id): where the rotation feature records it.
VersionPromoted = Callable[[KeyWriter, Key, bytes], Awaitable[None]]
# Called inside the transaction that stored a new view of a key whose row this region
# holds (a local change or an applied record), with the key row as it now is.
SharedStateChanged = Callable[[KeyWriter, Key, SharedState], Awaitable[None]]


class MultiRegionService:
    def __init__(
        self,
        *,
        service: KeyService,
        reader: MultiRegionRepository,
        writer_for: Callable[[KeyWriter], MultiRegionWriter],
        regions: Sequence[str],
    ) -> None:
        """``writer_for(tx)`` gives the replication tables inside the key store's transaction
        ``tx``; ``regions`` are every region of the cluster (this one and its peers)."""
        self._service = service
        self.region = service.region
        self.account_id = service.account_id
        self._reader = reader
        self._writer_for = writer_for
        self.regions = tuple(regions)
        # Called after a record is appended: the composition root points it at the
        # shippers' wake-up (they re-read the outbox behind the committing transaction).
        self.on_append: Callable[[], None] = lambda: None
        self.version_promoted: VersionPromoted | None = None
        self.shared_state_changed: SharedStateChanged | None = None
        # ReplicateKey waits (bounded) for the replica's region to acknowledge the log up
        # to its own record, so that in a healthy cluster the replica exists there when
        # the call returns. Set by the composition root: (region, seq) -> acknowledged?
        self.await_acknowledged: Callable[[str, int], Awaitable[bool]] | None = None

    # ---- hooks called by the key service -------------------------------------------------

    async def key_created(
        self, tx: KeyWriter, key: Key, version: KeyVersion, material: bytes
    ) -> None:
        now_us = self._now_us()
        state = new_primary_state(
            key_id=key.key_id,
            key_spec=key.key_spec,
            key_usage=key.key_usage,
            origin=key.origin,
            created_at_us=now_us,
            region=self.region,
            version=self._version_info(key.key_id, version, material),
        )
        await self._store(tx, key, state, LocalMeta(), now_us)
        key.multi_region_configuration = self._configuration(state)

    async def describe(self, repository: KeyRepository, key: Key) -> None:
        """Fill ``key.multi_region_configuration`` (DescribeKey)."""
        del repository  # committed state is read through this service's own reader
        found = await self._reader.get_state(key.key_id)
        if found is not None:
            key.multi_region_configuration = self._configuration(found[0])

    async def deletion_state(self, tx: KeyWriter, key: Key) -> KeyState:
        state, _ = await self._state(tx, key)
        return deletion_state(state, region=self.region)

    async def key_state_changed(self, tx: KeyWriter, key: Key) -> None:
        state, meta = await self._state(tx, key)
        await self._store(tx, key, state, meta, self._now_us())

    async def before_delete(self, tx: KeyWriter, key: Key) -> bool:
        """The sweeper is about to delete ``key``: True if it may (this region's incarnation
        then ends, a tombstone its peers learn), False if the key must wait: it is the
        primary of live replicas (it moves to PendingReplicaDeletion, as in AWS), or this
        region holds the only copy of a key version (it is retried at the next sweep)."""
        state, meta = await self._state(tx, key)
        verdict = deletion_verdict(state, region=self.region)
        if verdict is DeletionVerdict.WAIT_FOR_REPLICAS:
            key.state = KeyState.PENDING_REPLICA_DELETION
            key.deletion_date = None
            await tx.update_key(key)
            await self._store(tx, key, state, meta, self._now_us())
            return False
        if verdict is DeletionVerdict.WAIT_FOR_VERSIONS:
            log.info(
                "deletion waits: this region holds a key version no other replica has yet",
                key_id=key.key_id,
            )
            return False
        state = mark_deleted(state, region=self.region)
        now_us = self._now_us()
        writer = self._writer_for(tx)
        await writer.put_state(state, replace(meta, handover=None), now_us=now_us)
        await writer.append_record(
            Record(author_region=self.region, author_key_state=ABSENT, state=state),
            now_us=now_us,
        )
        self.on_append()
        return True

    async def require_shared_write(self, tx: KeyWriter, key: Key, *, action: str) -> None:
        """Raise UnsupportedOperationException unless this region holds the primary key
        (rotation settings, rotations and replication change shared properties)."""
        state, _ = await self._state(tx, key)
        require_primary(state, region=self.region, arn=key.arn, action=action)
        if key.state is KeyState.UPDATING:
            raise KMSInvalidStateException(f"{key.arn} is updating.")

    async def stage_version(
        self,
        tx: KeyWriter,
        key: Key,
        version: KeyVersion,
        material: bytes,
        *,
        rotation_type: RotationType = RotationType.ON_DEMAND,
    ) -> bool:
        """The two-phase rotation hook for a multi-Region primary key.

        Call it inside the rotation's write transaction, after storing ``version`` (step 1,
        ``add_key_version``), *before* making it current. The version is shipped to every
        replica. Returns True when it may be current at once (the key has no live replica):
        the caller then runs its step 2 (``make_version_current``) in the same transaction.
        Returns False when it is pending: the caller must not make it current; replication
        does, once every live replica has acknowledged holding it, by setting
        ``key.current_material_id`` and calling ``version_promoted`` (if set) in that
        transaction. ``GetReplicationStatus`` lists pending versions and the regions still
        missing them. ``rotation_type`` travels with the version (the limit on on-demand
        rotations is counted from the shared versions).
        """
        state, meta = await self._state(tx, key)
        require_primary(state, region=self.region, arn=key.arn, action="you can rotate")
        if key.state is KeyState.UPDATING:
            raise KMSInvalidStateException(f"{key.arn} is updating.")
        info = replace(
            self._version_info(key.key_id, version, material), rotation_type=rotation_type
        )
        state = stage_version(state, region=self.region, version=info)
        await self._store(tx, key, state, meta, self._now_us())
        return state.settings.current_material_id == version.material_id

    async def set_rotation(
        self,
        tx: KeyWriter,
        key: Key,
        *,
        enabled: bool,
        period_days: int | None,
        next_rotation: datetime | None = None,
    ) -> None:
        """Record a change of the rotation setting (a shared property) at the primary:
        whether automatic rotation is on, its period and its next date."""
        state, meta = await self._state(tx, key)
        state = set_rotation(
            state,
            region=self.region,
            arn=key.arn,
            enabled=enabled,
            period_days=period_days,
            next_rotation_us=None if next_rotation is None else _us(next_rotation),
        )
        await self._store(tx, key, state, meta, self._now_us())

    async def shared_state(self, key_id: str, tx: KeyWriter | None = None) -> SharedState | None:
        """This region's view of ``key_id``: committed, or as seen inside ``tx``."""
        source = self._reader if tx is None else self._writer_for(tx)
        found = await source.get_state(key_id)
        return None if found is None else found[0]

    # ---- operations ----------------------------------------------------------------------

    async def replicate_key(
        self,
        caller: Caller,
        *,
        key_id: str,
        replica_region: str,
        policy: str,
        description: str,
        tags: Sequence[Tag],
    ) -> ReplicateKeyResult:
        del caller  # authorization is the call hooks' job
        if not replica_region:
            raise ValidationException("ReplicaRegion is required")
        validation.validate_description(description)
        validation.validate_tags(tags)
        validation.validate_tag_count(len(tags))
        if policy:
            validation.validate_policy_document(policy)
        request = ReplicaRequest(
            description=description,
            policy=policy or validation.default_key_policy(self.account_id),
            tags=tuple(tags),
        )
        async with self._service.store.write() as tx:
            key = await self._resolve_mrk(tx, key_id)
            state, meta = await self._state(tx, key)
            state = replicate(
                state,
                region=self.region,
                arn=key.arn,
                key_state=key.state,
                target=replica_region,
                known_regions=self.regions,
                request=request,
            )
            seq = await self._store(tx, key, state, meta, self._now_us())
        if self.await_acknowledged is not None:
            await self.await_acknowledged(replica_region, seq)
        replica = replace(
            key,
            arn=identifiers.key_arn(replica_region, self.account_id, key.key_id),
            region=replica_region,
            created_at=self._service.clock.now(),
            description=description,
            policy=request.policy,
            state=KeyState.CREATING,
            deletion_date=None,
            pending_window_days=None,
            multi_region_configuration=configuration(
                state, region=replica_region, account_id=self.account_id
            ),
        )
        return ReplicateKeyResult(replica, request.policy, request.tags)

    async def update_primary_region(
        self, caller: Caller, *, key_id: str, primary_region: str
    ) -> None:
        del caller
        if not primary_region:
            raise ValidationException("PrimaryRegion is required")
        async with self._service.store.write() as tx:
            key = await self._resolve_mrk(tx, key_id)
            state, meta = await self._state(tx, key)
            state, meta = hand_over(
                state,
                meta,
                region=self.region,
                arn=key.arn,
                key_state=key.state,
                target=primary_region,
            )
            key.state = KeyState.UPDATING
            await tx.update_key(key)
            await self._store(tx, key, state, meta, self._now_us())

    async def force_primary_region(
        self, caller: Caller, *, key_id: str, primary_region: str
    ) -> Key:
        """Promote this region's replica while the primary's region is lost (an operator's
        decision; see replication/DESIGN.md for what users see until the regions merge)."""
        del caller
        if primary_region != self.region:
            raise ValidationException(
                f"A forced promotion is sent to the region being promoted ({primary_region}); "
                f"this is {self.region}"
            )
        async with self._service.store.write() as tx:
            key = await self._resolve_mrk(tx, key_id)
            state, meta = await self._state(tx, key)
            state, meta = force_promote(
                state,
                meta,
                region=self.region,
                arn=key.arn,
                key_state=key.state,
                current_material_id=key.current_material_id,
            )
            if key.state is KeyState.UPDATING:
                key.state = KeyState.ENABLED
                await tx.update_key(key)
            await self._store(tx, key, state, meta, self._now_us())
        key.multi_region_configuration = self._configuration(state)
        return key

    # ---- helpers ------------------------------------------------------------------------

    async def _resolve_mrk(self, tx: KeyWriter, key_id: str) -> Key:
        """ReplicateKey and UpdatePrimaryRegion take a key ID or key ARN (AWS)."""
        reference = identifiers.parse_key_reference(
            key_id, region=self.region, account_id=self.account_id
        )
        if reference.key_id is None:
            raise ValidationException("KeyId must be the key ID or key ARN of a multi-Region key")
        key = await self._service.resolve_key(tx, key_id)
        if not key.multi_region:
            raise UnsupportedOperationException(f"{key.arn} is not a multi-Region key")
        return key

    async def _state(self, tx: KeyWriter, key: Key) -> tuple[SharedState, LocalMeta]:
        found = await self._writer_for(tx).get_state(key.key_id)
        if found is None:
            raise AssertionError(f"multi-Region key {key.key_id} has no replication state")
        return found

    async def _store(
        self, tx: KeyWriter, key: Key, state: SharedState, meta: LocalMeta, now_us: int
    ) -> int:
        """Store the view and append this region's record; returns the record's seq."""
        writer = self._writer_for(tx)
        await writer.put_state(state, meta, now_us=now_us)
        seq = await writer.append_record(
            Record(author_region=self.region, author_key_state=key.state.value, state=state),
            now_us=now_us,
        )
        if self.shared_state_changed is not None:
            await self.shared_state_changed(tx, key, state)
        self.on_append()
        return seq

    def _configuration(self, state: SharedState) -> MultiRegionConfiguration:
        return configuration(state, region=self.region, account_id=self.account_id)

    def _version_info(self, key_id: str, version: KeyVersion, material: bytes) -> VersionInfo:
        return VersionInfo(
            material_id=version.material_id,
            created_at_us=_us(version.created_at),
            commitment=material_commitment(
                material, key_id=key_id, material_id=version.material_id
            ),
            origin_region=self.region,
        )

    def _now_us(self) -> int:
        return _us(self._service.clock.now())


def _us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
