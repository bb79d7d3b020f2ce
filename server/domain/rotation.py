"""Key rotation: automatic (a period of 90 to 2560 days) and on demand (at most 25 times).

Only symmetric encryption keys rotate, as in AWS: automatic rotation needs material
Meridian made (origin AWS_KMS); on-demand rotation also takes imported material that
was imported as NEW_KEY_MATERIAL (PENDING_ROTATION). Rotating adds a version and makes it
the encrypting one; every older version stays and keeps decrypting, because a ciphertext
names the version that sealed it (docs/ciphertext-format.md).

A rotation is two steps, kept apart on purpose:

1. ``add_key_version``: store the new version. From here on it can decrypt.
2. ``make_version_current``: make it the version that encrypts.

A single-region key takes both in one transaction. A multi-Region key (MRK) must not
encrypt with a version that a replica lacks: step 1 hands the version to replication
(``MultiRegionService.stage_version``), which ships it to every replica region and makes
it current once all of them hold it. Only a key without live replicas takes step 2 in
the same transaction (through ``make_version_current``, which for an MRK insists that
the shared view already promoted the version).

An MRK's rotation setting (on, period, next date) and its rotation history (which
version became current when, in which order) are shared properties kept in its
replicated view; this module's per-region tables follow the view in every region
(``follow_shared_state``, called by replication whenever the view changes), so
GetKeyRotationStatus and ListKeyRotations answer the same in every region. Changes are
made at the primary only; at a replica they are UnsupportedOperationException (AWS). An
on-demand rotation returns at once; while it waits for a replica region it is "in
progress" (GetKeyRotationStatus's OnDemandRotationStartDate, ConflictException for
another rotation) and ListKeyRotations shows it once it completed.

The scheduler (``rotate_due_keys``) is driven by the injected clock: a key due while it
is disabled rotates as soon as it is enabled again, and then every period from there.
MRKs are rotated by the scheduler of their primary region only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from meridian.server.domain import validation
from meridian.server.domain.errors import (
    ConflictException,
    DisabledException,
    KMSInvalidStateException,
    LimitExceededException,
    UnsupportedOperationException,
    ValidationException,
)
from meridian.server.domain.key_context import KeyContext
from meridian.server.domain.key_material import (
    ImportState,
    IncludeKeyMaterial,
    KeyMaterial,
    KeyMaterialState,
    KeyMaterialTransaction,
    KeyMaterialWriter,
    RotationSettings,
    RotationType,
)
from meridian.server.domain.key_specs import parse_required
from meridian.server.domain.model import Caller, Key, KeySpec, KeyState, KeyVersion, Origin
from meridian.server.domain.multi_region import SharedState
from meridian.server.domain.pagination import parse_marker
from meridian.server.domain.ports import KeyWriter
from meridian.server.domain.service import Page, page, state_phrase

if TYPE_CHECKING:
    # Imported for types only: multi_region_service imports the key service, which
    # builds this module.
    from meridian.server.domain.multi_region_service import MultiRegionService

ROTATION_PERIOD_DAYS_MIN = 90
ROTATION_PERIOD_DAYS_MAX = 2560
ROTATION_PERIOD_DAYS_DEFAULT = 365
ON_DEMAND_ROTATIONS_MAX = 25
ROTATION_BATCH_KEYS_MAX = 100
MATERIAL_ID_BYTES = 32


@dataclass(frozen=True, slots=True)
class RotationStatus:
    key_id: str
    enabled: bool
    period_days: int | None
    next_rotation: datetime | None
    # When an on-demand rotation that has not completed yet was requested (an MRK's
    # rotation waiting for its replica regions); None when none is in progress.
    on_demand_rotation_start: datetime | None = None


@dataclass(frozen=True, slots=True)
class RotationEntry:
    """One row of ListKeyRotations."""

    key_id: str
    key_material_id: str
    key_material_description: str | None
    import_state: ImportState | None
    key_material_state: KeyMaterialState
    expiration_model: str | None
    valid_to: datetime | None
    rotation_date: datetime | None
    rotation_type: RotationType | None


class KeyRotation:
    def __init__(self, context: KeyContext) -> None:
        self._context = context
        self._multi_region: MultiRegionService | None = None
        self._materials_in: Callable[[KeyWriter], KeyMaterialWriter] | None = None

    def attach_multi_region(
        self,
        multi_region: MultiRegionService,
        *,
        materials_in: Callable[[KeyWriter], KeyMaterialWriter],
    ) -> None:
        """Rotate MRKs through ``multi_region`` (called by the composition root on a node
        with replication). ``materials_in(tx)`` gives this module's tables inside a key
        store transaction, for following the shared view in replication's transactions."""
        self._multi_region = multi_region
        self._materials_in = materials_in
        multi_region.shared_state_changed = self.follow_shared_state

    # ---- the API -------------------------------------------------------------------

    async def enable_key_rotation(
        self, caller: Caller, key_id: str, rotation_period_in_days: int | None
    ) -> None:
        period = (
            ROTATION_PERIOD_DAYS_DEFAULT
            if rotation_period_in_days is None
            else rotation_period_in_days
        )
        if not ROTATION_PERIOD_DAYS_MIN <= period <= ROTATION_PERIOD_DAYS_MAX:
            raise ValidationException(
                f"RotationPeriodInDays must be between {ROTATION_PERIOD_DAYS_MIN} and "
                f"{ROTATION_PERIOD_DAYS_MAX}"
            )
        now = self._context.service.clock.now()
        async with self._context.materials.write() as tx:
            key = await self._context.resolve_key_only(tx.keys, key_id)
            _require_automatic_rotation(key)
            multi_region = self._multi_region_of(key)
            if multi_region is not None:
                await multi_region.require_shared_write(
                    tx.keys, key, action="you can change its rotation setting"
                )
            _require_enabled(key)
            # For an MRK this row follows the shared setting (follow_shared_state).
            settings = await tx.materials.get_rotation(key.key_id)
            if settings is None or not settings.enabled or settings.next_rotation is None:
                next_rotation = now + timedelta(days=period)
                on_demand = 0 if settings is None else settings.on_demand_rotations
            else:
                # A new period counts from the start of the current cycle; if that date has
                # passed, the key rotates at the scheduler's next pass.
                cycle_start = settings.next_rotation - timedelta(days=settings.period_days)
                next_rotation = max(cycle_start + timedelta(days=period), now)
                on_demand = settings.on_demand_rotations
            if multi_region is not None:
                await multi_region.set_rotation(
                    tx.keys, key, enabled=True, period_days=period, next_rotation=next_rotation
                )
                return
            await tx.materials.put_rotation(
                RotationSettings(key.key_id, True, period, next_rotation, on_demand)
            )

    async def disable_key_rotation(self, caller: Caller, key_id: str) -> None:
        async with self._context.materials.write() as tx:
            key = await self._context.resolve_key_only(tx.keys, key_id)
            _require_automatic_rotation(key)
            multi_region = self._multi_region_of(key)
            if multi_region is not None:
                await multi_region.require_shared_write(
                    tx.keys, key, action="you can change its rotation setting"
                )
            _require_enabled(key)
            settings = await tx.materials.get_rotation(key.key_id)
            if multi_region is not None:
                if settings is not None and settings.enabled:
                    await multi_region.set_rotation(
                        tx.keys, key, enabled=False, period_days=settings.period_days
                    )
                return
            if settings is not None and settings.enabled:
                settings.enabled = False
                settings.next_rotation = None
                await tx.materials.put_rotation(settings)

    async def get_key_rotation_status(self, caller: Caller, key_id: str) -> RotationStatus:
        key = await self._context.resolve_key_only(self._context.service.store.reader, key_id)
        _require_symmetric(key)
        # For an MRK the row follows the shared setting, so every region answers alike.
        settings = await self._context.materials.reader.get_rotation(key.key_id)
        started = None
        multi_region = self._multi_region_of(key)
        if multi_region is not None:
            state = await multi_region.shared_state(key.key_id)
            started = None if state is None else _on_demand_rotation_start(state)
        # AWS: a key pending deletion reports rotation off (and gets it back if the
        # deletion is cancelled), and imported material never rotates automatically.
        if (
            settings is None
            or not settings.enabled
            or key.origin is not Origin.AWS_KMS
            or key.state in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION)
        ):
            return RotationStatus(key.key_id, False, None, None, started)
        return RotationStatus(
            key.key_id, True, settings.period_days, settings.next_rotation, started
        )

    async def rotate_key_on_demand(self, caller: Caller, key_id: str) -> Key:
        service = self._context.service
        key = await self._context.resolve_key_only(service.store.reader, key_id)
        _require_symmetric(key)
        multi_region = self._multi_region_of(key)
        if multi_region is None:
            _require_enabled(key)
        elif key.origin is not Origin.AWS_KMS:
            # MRKs are made with Meridian's material only (replication/DESIGN.md); imported
            # MRK material would need AWS's import into every replica first.
            raise UnsupportedOperationException(
                f"{key.arn} is a multi-Region key with imported key material, which "
                "Meridian does not rotate"
            )
        now = service.clock.now()
        version = None
        material = None
        if key.origin is Origin.AWS_KMS:
            material = await self._context.new_material(key.key_spec)
            version = await self._context.wrap_version(
                key.key_id, service.randbytes(MATERIAL_ID_BYTES), material.secret, now
            )
        async with self._context.materials.write() as tx:
            key = await self._context.resolve_key_only(tx.keys, key_id)
            if multi_region is not None and version is not None and material is not None:
                # The replica check comes first: it is the answer at a replica (AWS).
                await multi_region.require_shared_write(
                    tx.keys, key, action="you can rotate its key material"
                )
                _require_enabled(key)
                await self._rotate_multi_region(
                    tx, key, version, material.secret, RotationType.ON_DEMAND, now
                )
            else:
                _require_enabled(key)
                await self._rotate_single_region_on_demand(tx, key, version, now)
        if version is not None and material is not None:
            service.remember_material(key.key_id, version.material_id, material.secret)
        return key

    async def _rotate_single_region_on_demand(
        self, tx: KeyMaterialTransaction, key: Key, version: KeyVersion | None, now: datetime
    ) -> None:
        settings = await tx.materials.get_rotation(key.key_id) or RotationSettings(
            key.key_id, False, ROTATION_PERIOD_DAYS_DEFAULT, None
        )
        if settings.on_demand_rotations >= ON_DEMAND_ROTATIONS_MAX:
            raise LimitExceededException(
                f"{key.arn} has used all {ON_DEMAND_ROTATIONS_MAX} on-demand rotations"
            )
        if version is not None:
            await self.add_key_version(tx, key, version)
            material_id = version.material_id
        else:
            material_id = await _pending_imported_material(tx, key)
        await self.make_version_current(
            tx, key, material_id, rotation_type=RotationType.ON_DEMAND, now=now
        )
        # On-demand rotations leave the automatic schedule as it was (AWS).
        settings.on_demand_rotations += 1
        await tx.materials.put_rotation(settings)

    async def _rotate_multi_region(
        self,
        tx: KeyMaterialTransaction,
        key: Key,
        version: KeyVersion,
        secret: bytes,
        rotation_type: RotationType,
        now: datetime,
    ) -> None:
        """Stage a new version of an MRK at its primary (two-phase rotation).

        It becomes current here and now only if the key has no live replica; otherwise
        replication promotes it once every replica region holds it, and the old version
        keeps encrypting everywhere until then. One rotation at a time: a second one
        while the first waits would leave a version that never becomes current.
        """
        multi_region = self._multi_region
        assert multi_region is not None
        state = await multi_region.shared_state(key.key_id, tx.keys)
        if state is None:
            raise AssertionError(f"multi-Region key {key.key_id} has no replication state")
        pending = state.settings.pending_material_id
        if pending is not None:
            waiting = ", ".join(state.missing_holders(pending)) or "none"
            raise ConflictException(
                f"A rotation of {key.arn} is in progress: its new key material is not yet "
                f"held by every replica region (waiting for: {waiting})"
            )
        if (
            rotation_type is RotationType.ON_DEMAND
            and state.on_demand_rotations() >= ON_DEMAND_ROTATIONS_MAX
        ):
            raise LimitExceededException(
                f"{key.arn} has used all {ON_DEMAND_ROTATIONS_MAX} on-demand rotations"
            )
        await self.add_key_version(tx, key, version)
        if await multi_region.stage_version(
            tx.keys, key, version, secret, rotation_type=rotation_type
        ):
            await self.make_version_current(
                tx, key, version.material_id, rotation_type=rotation_type, now=now
            )

    async def list_key_rotations(
        self,
        caller: Caller,
        *,
        key_id: str,
        include_key_material: str,
        limit: int | None,
        marker: str,
    ) -> Page[RotationEntry]:
        page_size = validation.validate_limit(limit)
        include = parse_required(
            IncludeKeyMaterial,
            include_key_material or IncludeKeyMaterial.ROTATIONS_ONLY.value,
            "IncludeKeyMaterial",
        )
        after = parse_marker("rotations", marker)
        key = await self._context.resolve_key_only(self._context.service.store.reader, key_id)
        _require_symmetric(key)
        materials = await self._context.materials.reader.list_materials(key.key_id)
        multi_region = self._multi_region_of(key)
        if multi_region is not None:
            # An MRK rotation is listed once it completed (AWS: rotation is asynchronous),
            # so that every region lists the same rotations; a version still waiting for
            # a replica region (or one a forced promotion left behind) is not shown.
            state = await multi_region.shared_state(key.key_id)
            hidden = frozenset() if state is None else state.staged_not_rotated()
            materials = [material for material in materials if material.material_id not in hidden]
        if include is IncludeKeyMaterial.ROTATIONS_ONLY:
            materials = [material for material in materials if material.rotation_type]
        materials.sort(key=_rotation_order)
        entries = [_entry(key, material) for material in materials]
        if after is not None:
            names = [entry.key_material_id for entry in entries]
            entries = entries[names.index(after) + 1 :] if after in names else []
        return page(entries[: page_size + 1], page_size, "rotations", _entry_name)

    # ---- the scheduler --------------------------------------------------------------

    async def rotate_due_keys(self) -> list[str]:
        """Rotate every enabled key whose automatic rotation is due; returns their ids."""
        return [
            key_id
            for key_id in await self.keys_due_for_rotation()
            if await self.rotate_if_due(key_id)
        ]

    async def keys_due_for_rotation(self) -> list[str]:
        """Enabled keys whose automatic rotation is due (the lifecycle task rotates them)."""
        now = self._context.service.clock.now()
        return await self._context.materials.reader.keys_due_for_rotation(
            now, limit=ROTATION_BATCH_KEYS_MAX
        )

    async def rotate_if_due(self, key_id: str) -> bytes | None:
        """Rotate ``key_id`` if it is still due; the new version's id, or None if not."""
        service = self._context.service
        now = service.clock.now()
        # Wrapping can be an HSM call: it happens before the write lock is taken.
        material = await self._context.new_material(KeySpec.SYMMETRIC_DEFAULT)
        version = await self._context.wrap_version(
            key_id, service.randbytes(MATERIAL_ID_BYTES), material.secret, now
        )
        async with self._context.materials.write() as tx:
            key = await tx.keys.get_key(key_id)
            settings = await tx.materials.get_rotation(key_id)
            # Anything may have changed since the scan: check it all again.
            if (
                key is None
                or key.state is not KeyState.ENABLED
                or key.key_spec is not KeySpec.SYMMETRIC_DEFAULT
                or key.origin is not Origin.AWS_KMS
                or settings is None
                or settings.next_rotation is None
                or settings.next_rotation > now
            ):
                return None
            following = next_rotation_after(settings.next_rotation, settings.period_days, now)
            if key.multi_region:
                multi_region = self._multi_region
                state = (
                    None
                    if multi_region is None
                    else await multi_region.shared_state(key_id, tx.keys)
                )
                # Only the primary rotates an MRK, and one rotation at a time: a key due
                # while a rotation waits for a replica region rotates after it completes.
                if (
                    multi_region is None
                    or state is None
                    or state.primary_region != service.region
                    or state.settings.pending_material_id is not None
                ):
                    return None
                await self._rotate_multi_region(
                    tx, key, version, material.secret, RotationType.AUTOMATIC, now
                )
                await multi_region.set_rotation(
                    tx.keys,
                    key,
                    enabled=True,
                    period_days=settings.period_days,
                    next_rotation=following,
                )
            else:
                await self.add_key_version(tx, key, version)
                await self.make_version_current(
                    tx, key, version.material_id, rotation_type=RotationType.AUTOMATIC, now=now
                )
                settings.next_rotation = following
                await tx.materials.put_rotation(settings)
        service.remember_material(key_id, version.material_id, material.secret)
        return version.material_id

    # ---- the two steps of a rotation -------------------------------------------------

    async def add_key_version(
        self, tx: KeyMaterialTransaction, key: Key, version: KeyVersion
    ) -> None:
        """Step 1: store a new version of ``key``. It decrypts from now on; it does not
        encrypt until ``make_version_current``."""
        await tx.materials.insert_version(version)
        await tx.materials.put_material(
            KeyMaterial(
                key_id=key.key_id, material_id=version.material_id, created_at=version.created_at
            )
        )

    async def make_version_current(
        self,
        tx: KeyMaterialTransaction,
        key: Key,
        material_id: bytes,
        *,
        rotation_type: RotationType,
        now: datetime,
    ) -> None:
        """Step 2: make version ``material_id`` the one ``key`` encrypts with.

        This is the one place a key's encrypting version changes by rotation. For a
        multi-region key it runs only once every replica holds the version: the shared
        view must already have promoted it, and its date and place among the rotations
        are the view's, so that every region records the same.
        """
        materials = await tx.materials.list_materials(key.key_id)
        material = next((m for m in materials if m.material_id == material_id), None)
        if material is None or not material.present:
            raise AssertionError(f"key {key.key_id}: no stored version to make current")
        if key.multi_region:
            state = (
                None
                if self._multi_region is None
                else await self._multi_region.shared_state(key.key_id, tx.keys)
            )
            mark = None if state is None else state.rotations.get(material_id)
            if state is None or mark is None or state.settings.current_material_id != material_id:
                raise AssertionError(
                    f"key {key.key_id}: a multi-Region version made current before every "
                    "replica region holds it"
                )
            rotation_date, serial = _from_us(mark.rotated_at_us), mark.serial
        else:
            rotation_date = now
            serial = 1 + max((m.rotation_serial or 0 for m in materials), default=0)
        material.rotation_type = rotation_type
        material.rotation_date = rotation_date
        material.rotation_serial = serial
        material.pending_rotation = False
        await tx.materials.put_material(material)
        key.current_material_id = material_id
        await tx.keys.update_key(key)

    # ---- multi-Region keys -------------------------------------------------------------

    def _multi_region_of(self, key: Key) -> MultiRegionService | None:
        """The replication service for an MRK; None for a single-region key."""
        if not key.multi_region:
            return None
        if self._multi_region is None:
            # Every node wires replication (server/node.py); one that did not must not
            # rotate an MRK in one phase, so it refuses, as it refuses creating MRKs.
            raise UnsupportedOperationException(
                f"{key.arn} is a multi-Region key; this node does not run replication"
            )
        return self._multi_region

    async def follow_shared_state(self, tx: KeyWriter, key: Key, state: SharedState) -> None:
        """Bring this region's rotation tables for ``key`` in line with its shared view:
        the rotation setting (GetKeyRotationStatus, the scheduler) and the record of each
        completed rotation (ListKeyRotations). Runs in the transaction that stored the
        view, in every region, whoever changed it."""
        if self._materials_in is None:
            raise AssertionError("follow_shared_state before attach_multi_region")
        materials = self._materials_in(tx)
        settings = state.settings
        wanted = RotationSettings(
            key_id=key.key_id,
            enabled=settings.next_rotation_us is not None,
            period_days=settings.rotation_period_days or ROTATION_PERIOD_DAYS_DEFAULT,
            next_rotation=None
            if settings.next_rotation_us is None
            else _from_us(settings.next_rotation_us),
            on_demand_rotations=state.on_demand_rotations(),
        )
        existing = await materials.get_rotation(key.key_id)
        never_set = RotationSettings(key.key_id, False, ROTATION_PERIOD_DAYS_DEFAULT, None)
        if existing != wanted and not (existing is None and wanted == never_set):
            await materials.put_rotation(wanted)
        for material in await materials.list_materials(key.key_id):
            mark = state.rotations.get(material.material_id)
            if mark is None:
                continue
            # Every staged version names its rotation type; ON_DEMAND is what a version
            # staged without one (by a test or a tool) was: an explicit request.
            rotation_type = (
                state.versions[material.material_id].rotation_type or RotationType.ON_DEMAND
            )
            recorded = (material.rotation_type, material.rotation_date, material.rotation_serial)
            if recorded != (rotation_type, _from_us(mark.rotated_at_us), mark.serial):
                material.rotation_type = rotation_type
                material.rotation_date = _from_us(mark.rotated_at_us)
                material.rotation_serial = mark.serial
                await materials.put_material(material)


def _on_demand_rotation_start(state: SharedState) -> datetime | None:
    pending = state.settings.pending_material_id
    if pending is None:
        return None
    version = state.versions[pending]
    if version.rotation_type is not RotationType.ON_DEMAND:
        return None
    return _from_us(version.created_at_us)


def _from_us(moment_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=moment_us)


def next_rotation_after(due: datetime, period_days: int, now: datetime) -> datetime:
    """The rotation after one that was due at ``due`` and ran at ``now``.

    Normally one period after ``due``, so that late passes do not drift the schedule; a
    key that was disabled past a whole period rotates now and then every period from now.
    """
    following = due + timedelta(days=period_days)
    return following if following > now else now + timedelta(days=period_days)


async def _pending_imported_material(tx: KeyMaterialTransaction, key: Key) -> bytes:
    pending = [
        material
        for material in await tx.materials.list_materials(key.key_id)
        if material.pending_rotation and material.present
    ]
    if not pending:
        raise KMSInvalidStateException(
            f"{key.arn} has imported key material: import new key material "
            "(ImportType NEW_KEY_MATERIAL) before rotating on demand"
        )
    return pending[0].material_id


def _require_symmetric(key: Key) -> None:
    if key.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
        raise UnsupportedOperationException(
            f"{key.arn} is a {key.key_spec.value} key; only symmetric encryption keys rotate"
        )


def _require_automatic_rotation(key: Key) -> None:
    _require_symmetric(key)
    if key.origin is not Origin.AWS_KMS:
        raise UnsupportedOperationException(
            f"{key.arn} has imported key material, which does not rotate automatically"
        )


def _require_enabled(key: Key) -> None:
    if key.state is KeyState.DISABLED:
        raise DisabledException(f"{key.arn} is disabled.")
    if key.state is not KeyState.ENABLED:
        raise KMSInvalidStateException(f"{key.arn} is {state_phrase(key.state)}.")


def _rotation_order(material: KeyMaterial) -> tuple[int, int, datetime, bytes]:
    # The first material, then rotations in the order they happened, then material
    # imported for a rotation that has not happened yet.
    if material.pending_rotation:
        return (2, 0, material.created_at, material.material_id)
    if material.rotation_serial is None:
        return (0, 0, material.created_at, material.material_id)
    return (1, material.rotation_serial, material.created_at, material.material_id)


def _entry(key: Key, material: KeyMaterial) -> RotationEntry:
    return RotationEntry(
        key_id=key.key_id,
        key_material_id=material.material_id.hex(),
        key_material_description=material.description if material.imported else None,
        import_state=material.import_state,
        key_material_state=material.state(key),
        expiration_model=material.expiration_model,
        valid_to=material.valid_to,
        rotation_date=material.rotation_date,
        rotation_type=material.rotation_type,
    )


def _entry_name(entry: RotationEntry) -> str:
    return entry.key_material_id
