"""SQL for key material records and rotation settings: the domain's KeyMaterial ports.

They share the node's two connections with the key tables (as access control's do), so
a rotation, an import or a deletion of material is part of the same durable
``BEGIN IMMEDIATE … COMMIT`` as the key row it changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiosqlite

from meridian.server.domain.key_material import (
    ExpirationModel,
    ImportState,
    KeyMaterial,
    KeyMaterialTransaction,
    RotationSettings,
    RotationType,
)
from meridian.server.domain.model import KeyVersion
from meridian.server.storage.repository import from_us, to_us
from meridian.server.storage.store import SqliteStore

_INSERT_MATERIAL = """
    INSERT OR REPLACE INTO key_material (
        key_id, material_id, created_at_us, public_key, rotation_type, rotation_date_us,
        rotation_serial, pending_rotation, imported, import_state, expiration_model,
        valid_to_us, description
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Every version of a key: the recorded ones (with whether their wrapped bytes are held),
# and versions some other writer stored without a record, read as generated material.
_LIST_MATERIALS = """
    SELECT m.material_id, m.created_at_us, m.public_key, m.rotation_type, m.rotation_date_us,
        m.rotation_serial, m.pending_rotation, m.imported, m.import_state, m.expiration_model,
        m.valid_to_us, m.description, v.material_id IS NOT NULL
    FROM key_material m
    LEFT JOIN key_versions v ON v.key_id = m.key_id AND v.material_id = m.material_id
    WHERE m.key_id = ?1
    UNION ALL
    SELECT v.material_id, v.created_at_us, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, '', 1
    FROM key_versions v
    WHERE v.key_id = ?1 AND NOT EXISTS (
        SELECT 1 FROM key_material m WHERE m.key_id = v.key_id AND m.material_id = v.material_id
    )
    ORDER BY 2, 1
"""


def _optional_us(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def _optional_datetime(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def _material_from_row(key_id: str, row: Any) -> KeyMaterial:
    material = KeyMaterial(
        key_id=key_id,
        material_id=bytes(row[0]),
        created_at=from_us(row[1]),
        public_key=None if row[2] is None else bytes(row[2]),
        rotation_type=None if row[3] is None else RotationType(row[3]),
        rotation_date=_optional_datetime(row[4]),
        rotation_serial=row[5],
        pending_rotation=bool(row[6]),
        imported=bool(row[7]),
        import_state=None if row[8] is None else ImportState(row[8]),
        expiration_model=None if row[9] is None else ExpirationModel(row[9]),
        valid_to=_optional_datetime(row[10]),
        description=row[11],
        present=bool(row[12]),
    )
    material.check_invariants()
    return material


class SqliteKeyMaterialRepository:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    async def _all(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        # One hop to aiosqlite's thread, not three (execute, fetch, close): replication
        # calls these once per key it applies (rotation.follow_shared_state).
        return list(await self._db.execute_fetchall(sql, parameters))

    async def list_materials(self, key_id: str) -> list[KeyMaterial]:
        rows = await self._all(_LIST_MATERIALS, (key_id,))
        return [_material_from_row(key_id, row) for row in rows]

    async def get_material(self, key_id: str, material_id: bytes) -> KeyMaterial | None:
        for material in await self.list_materials(key_id):
            if material.material_id == material_id:
                return material
        return None

    async def get_rotation(self, key_id: str) -> RotationSettings | None:
        rows = await self._all(
            "SELECT enabled, period_days, next_rotation_us, on_demand_rotations "
            "FROM key_rotation WHERE key_id = ?",
            (key_id,),
        )
        if not rows:
            return None
        enabled, period_days, next_rotation_us, on_demand_rotations = rows[0]
        settings = RotationSettings(
            key_id=key_id,
            enabled=bool(enabled),
            period_days=period_days,
            next_rotation=_optional_datetime(next_rotation_us),
            on_demand_rotations=on_demand_rotations,
        )
        settings.check_invariants()
        return settings

    async def keys_due_for_rotation(self, now: datetime, *, limit: int) -> list[str]:
        # Only Enabled keys: a disabled key is not rotated (AWS), and leaving it out here
        # keeps it from filling every batch until it is enabled again. For the same
        # reason a multi-Region key is due only in its primary region (every region's
        # row follows the shared schedule) and not while a rotation of it waits for its
        # replica regions (domain/rotation.py).
        rows = await self._all(
            "SELECT r.key_id FROM key_rotation r JOIN keys k ON k.key_id = r.key_id "
            "WHERE r.next_rotation_us IS NOT NULL AND r.next_rotation_us <= ? "
            "AND k.key_state = 'Enabled' AND (k.multi_region = 0 OR EXISTS ("
            "SELECT 1 FROM mrk_state s WHERE s.key_id = k.key_id "
            "AND s.primary_region = k.region AND s.pending = 0)) "
            "ORDER BY r.next_rotation_us LIMIT ?",
            (to_us(now), limit),
        )
        return [row[0] for row in rows]

    async def materials_due_to_expire(
        self, now: datetime, *, limit: int
    ) -> list[tuple[str, bytes]]:
        rows = await self._all(
            "SELECT key_id, material_id FROM key_material "
            "WHERE valid_to_us IS NOT NULL AND import_state = 'IMPORTED' AND valid_to_us <= ? "
            "ORDER BY valid_to_us LIMIT ?",
            (to_us(now), limit),
        )
        return [(row[0], bytes(row[1])) for row in rows]


class SqliteKeyMaterialWriter(SqliteKeyMaterialRepository):
    """The write half; used only inside the store's write transaction."""

    async def put_material(self, material: KeyMaterial) -> None:
        material.check_invariants()
        await self._db.execute(
            _INSERT_MATERIAL,
            (
                material.key_id,
                material.material_id,
                to_us(material.created_at),
                material.public_key,
                None if material.rotation_type is None else material.rotation_type.value,
                _optional_us(material.rotation_date),
                material.rotation_serial,
                int(material.pending_rotation),
                int(material.imported),
                None if material.import_state is None else material.import_state.value,
                None if material.expiration_model is None else material.expiration_model.value,
                _optional_us(material.valid_to),
                material.description,
            ),
        )

    async def delete_material(self, key_id: str, material_id: bytes) -> None:
        await self.delete_version(key_id, material_id)
        await self._db.execute(
            "DELETE FROM key_material WHERE key_id = ? AND material_id = ?", (key_id, material_id)
        )

    async def insert_version(self, version: KeyVersion) -> None:
        await self._db.execute(
            "INSERT INTO key_versions (key_id, material_id, created_at_us, wrapped_material) "
            "VALUES (?, ?, ?, ?)",
            (
                version.key_id,
                version.material_id,
                to_us(version.created_at),
                version.wrapped_material,
            ),
        )

    async def delete_version(self, key_id: str, material_id: bytes) -> None:
        await self._db.execute(
            "DELETE FROM key_versions WHERE key_id = ? AND material_id = ?", (key_id, material_id)
        )

    async def put_rotation(self, settings: RotationSettings) -> None:
        settings.check_invariants()
        await self._db.execute(
            "INSERT OR REPLACE INTO key_rotation "
            "(key_id, enabled, period_days, next_rotation_us, on_demand_rotations) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                settings.key_id,
                int(settings.enabled),
                settings.period_days,
                _optional_us(settings.next_rotation),
                settings.on_demand_rotations,
            ),
        )


class SqliteKeyMaterialStore:
    """The KeyMaterialStore port over the node's SqliteStore: same connections, same lock."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._reader = SqliteKeyMaterialRepository(store.reader.connection)

    @property
    def reader(self) -> SqliteKeyMaterialRepository:
        return self._reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[KeyMaterialTransaction]:
        async with self._store.write() as keys:
            yield KeyMaterialTransaction(
                keys=keys, materials=SqliteKeyMaterialWriter(keys.connection)
            )
