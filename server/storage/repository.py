"""SQL for keys, versions, aliases and tags: the domain's KeyRepository/KeyWriter ports.

Times are stored as integer microseconds since the epoch (UTC) so that they sort
and compare exactly.
"""

from __future__ import annotations

import dataclasses
import operator
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from meridian.server.domain.model import (
    Alias,
    Key,
    KeySpec,
    KeyState,
    KeyUsage,
    KeyVersion,
    Origin,
    Tag,
)

_KEY_COLUMNS = (
    "key_id, arn, account_id, region, created_at_us, description, key_spec, key_usage, "
    "origin, key_state, policy, current_material_id, multi_region, deletion_date_us, "
    "pending_window_days, revision"
)
# A key and its current version in one statement (the version's columns last, NULL if
# the key has none, e.g. an EXTERNAL key awaiting its material): a key read on a cache
# miss brings what Encrypt, Decrypt and GenerateDataKey need next, so a miss costs one
# hop to aiosqlite's thread instead of two (docs/performance.md, "Scale").
_SELECT_KEY_WITH_CURRENT_VERSION = (
    "SELECT "
    + ", ".join(f"k.{column.strip()}" for column in _KEY_COLUMNS.split(","))
    + ", v.created_at_us, v.wrapped_material FROM keys AS k "
    "LEFT JOIN key_versions AS v "
    "ON v.key_id = k.key_id AND v.material_id = k.current_material_id "
    "WHERE k.key_id = ?"
)
_KEY_COLUMNS_COUNT = len(_KEY_COLUMNS.split(","))


def to_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC).replace(microsecond=value % 1_000_000)


def _optional_us(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def _key_from_row(row: Any) -> Key:
    return Key(
        key_id=row[0],
        arn=row[1],
        # Interned: the same few strings in every row (most keys keep the default
        # policy), which would otherwise be one copy per cached key, a third of its memory.
        account_id=sys.intern(row[2]),
        region=sys.intern(row[3]),
        created_at=from_us(row[4]),
        description=row[5],
        key_spec=KeySpec(row[6]),
        key_usage=KeyUsage(row[7]),
        origin=Origin(row[8]),
        state=KeyState(row[9]),
        policy=sys.intern(row[10]),
        current_material_id=bytes(row[11]),
        multi_region=bool(row[12]),
        deletion_date=None if row[13] is None else from_us(row[13]),
        pending_window_days=row[14],
        revision=row[15],
    )


_INSERT_KEY = f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({', '.join(['?'] * 16)})"
_INSERT_VERSION = (
    "INSERT INTO key_versions (key_id, material_id, created_at_us, wrapped_material) "
    "VALUES (?, ?, ?, ?)"
)


def _key_row(key: Key) -> tuple[Any, ...]:
    """The ``keys`` row of a key, in ``_KEY_COLUMNS`` order."""
    return (
        key.key_id,
        key.arn,
        key.account_id,
        key.region,
        to_us(key.created_at),
        key.description,
        key.key_spec.value,
        key.key_usage.value,
        key.origin.value,
        key.state.value,
        key.policy,
        key.current_material_id,
        int(key.multi_region),
        _optional_us(key.deletion_date),
        key.pending_window_days,
        key.revision,
    )


def _version_row(version: KeyVersion) -> tuple[Any, ...]:
    return (
        version.key_id,
        version.material_id,
        to_us(version.created_at),
        version.wrapped_material,
    )


def _alias_from_row(row: Any) -> Alias:
    return Alias(
        alias_name=row[0],
        target_key_id=row[1],
        created_at=from_us(row[2]),
        updated_at=from_us(row[3]),
    )


# Every field of a Key, in the order its constructor takes them (all are init fields).
_key_fields = operator.attrgetter(*(item.name for item in dataclasses.fields(Key)))


class KeyCache:
    """Committed keys by id, so the hot path (Encrypt, Decrypt…) runs no SQL per request.

    Every commit invalidates it all (control-plane writes are rare, so dropping everything
    is cheaper than tracking which rows a transaction touched, and cannot miss one). A read
    that raced a commit is not cached: the generation counter tells. ``before_use`` (set
    when several worker processes share the database) runs before every lookup and
    store, so another worker's commit clears this cache before it is trusted.

    Invalidation is O(1), whatever the cache holds: each entry remembers the generation
    it was read in, a commit only moves the generation, and an older entry is a miss
    that the next read replaces. Emptying the dict instead cost the event loop about
    30 ms per commit with 100,000 keys cached (scripts/bench-key-cache), a stall of every
    call in flight. When full, the least recently used entry leaves, one per insert, so
    a working set larger than the cache keeps its hottest keys cached instead of the
    whole cache being dropped every ``entries_max`` misses.

    An entry also holds the key's current version (its wrapped material), read in the
    same statement as the key: the material cache's miss that follows a key cache miss
    then finds the version here instead of reading it again. It is committed state of
    the same generation as the key, so it is invalidated with it.
    """

    def __init__(
        self, entries_max: int = 100_000, *, before_use: Callable[[], None] | None = None
    ) -> None:
        if entries_max < 1:
            raise ValueError("entries_max must be at least 1")
        # key id -> (generation it was read in, key, its current version or None);
        # least recently used first.
        self._entries: OrderedDict[str, tuple[int, Key, KeyVersion | None]] = OrderedDict()
        self._entries_max = entries_max
        self._before_use = before_use
        self.generation = 0

    def get(self, key_id: str) -> Key | None:
        if self._before_use is not None:
            self._before_use()
        entry = self._entries.get(key_id)
        if entry is None or entry[0] != self.generation:
            return None
        self._entries.move_to_end(key_id)
        # Callers mutate the keys they get (then write them), so hand out copies; built
        # from the fields directly, a quarter of what copy.copy costs a slots dataclass.
        return Key(*_key_fields(entry[1]))

    def get_version(self, key_id: str, material_id: bytes) -> KeyVersion | None:
        """The version read with a cached key, if it is that key's current one."""
        if self._before_use is not None:
            self._before_use()
        entry = self._entries.get(key_id)
        if entry is None or entry[0] != self.generation:
            return None
        version = entry[2]
        if version is None or version.material_id != material_id:
            return None
        return version  # frozen: no copy needed

    def put(self, key: Key, generation: int, current_version: KeyVersion | None = None) -> None:
        if self._before_use is not None:
            self._before_use()
        if generation != self.generation:
            return
        entries = self._entries
        if key.key_id in entries:
            entries.move_to_end(key.key_id)
        elif len(entries) >= self._entries_max:
            entries.popitem(last=False)
        entries[key.key_id] = (generation, Key(*_key_fields(key)), current_version)

    def invalidate(self) -> None:
        self.generation += 1

    def __len__(self) -> int:
        """Entries held, stale ones included (bounded by ``entries_max`` either way)."""
        return len(self._entries)


class SqliteRepository:
    """Reads (and, through :class:`SqliteWriter`, writes) over one connection."""

    def __init__(self, connection: aiosqlite.Connection, key_cache: KeyCache | None = None) -> None:
        self._db = connection
        self._key_cache = key_cache

    @property
    def connection(self) -> aiosqlite.Connection:
        """The connection (and so the transaction) other features' repositories share."""
        return self._db

    # Every statement is one hop to aiosqlite's thread (execute_fetchall): a cursor
    # used through ``execute`` costs three (execute, fetch, close), each a thread
    # switch and an event loop wake-up.
    async def _one(self, sql: str, parameters: Sequence[Any]) -> Any:
        rows = await self._db.execute_fetchall(sql, parameters)
        return next(iter(rows), None)

    async def _all(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, parameters))

    async def get_key(self, key_id: str) -> Key | None:
        cache = self._key_cache
        if cache is None:
            row = await self._one(f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id = ?", (key_id,))
            return None if row is None else _key_from_row(row)
        if (cached := cache.get(key_id)) is not None:
            return cached
        generation = cache.generation
        row = await self._one(_SELECT_KEY_WITH_CURRENT_VERSION, (key_id,))
        if row is None:
            return None
        key = _key_from_row(row)
        version = None
        if row[_KEY_COLUMNS_COUNT + 1] is not None:
            version = KeyVersion(
                key_id=key.key_id,
                material_id=key.current_material_id,
                created_at=from_us(row[_KEY_COLUMNS_COUNT]),
                wrapped_material=bytes(row[_KEY_COLUMNS_COUNT + 1]),
            )
        cache.put(key, generation, version)
        return key

    async def list_keys(self, *, after_key_id: str | None, limit: int) -> list[Key]:
        rows = await self._all(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id > ? ORDER BY key_id LIMIT ?",
            (after_key_id or "", limit),
        )
        return [_key_from_row(row) for row in rows]

    async def get_version(self, key_id: str, material_id: bytes) -> KeyVersion | None:
        cache = self._key_cache
        if cache is not None and (cached := cache.get_version(key_id, material_id)) is not None:
            return cached
        row = await self._one(
            "SELECT created_at_us, wrapped_material FROM key_versions "
            "WHERE key_id = ? AND material_id = ?",
            (key_id, material_id),
        )
        if row is None:
            return None
        return KeyVersion(
            key_id=key_id,
            material_id=material_id,
            created_at=from_us(row[0]),
            wrapped_material=bytes(row[1]),
        )

    async def keys_due_for_deletion(self, now: datetime, *, limit: int) -> list[str]:
        rows = await self._all(
            "SELECT key_id FROM keys WHERE deletion_date_us IS NOT NULL "
            "AND deletion_date_us <= ? ORDER BY deletion_date_us LIMIT ?",
            (to_us(now), limit),
        )
        return [row[0] for row in rows]

    async def get_alias(self, alias_name: str) -> Alias | None:
        row = await self._one(
            "SELECT alias_name, target_key_id, created_at_us, updated_at_us FROM aliases "
            "WHERE alias_name = ?",
            (alias_name,),
        )
        return None if row is None else _alias_from_row(row)

    async def list_aliases(
        self, *, key_id: str | None, after_alias_name: str | None, limit: int
    ) -> list[Alias]:
        columns = "alias_name, target_key_id, created_at_us, updated_at_us"
        if key_id is None:
            rows = await self._all(
                f"SELECT {columns} FROM aliases WHERE alias_name > ? ORDER BY alias_name LIMIT ?",
                (after_alias_name or "", limit),
            )
        else:
            rows = await self._all(
                f"SELECT {columns} FROM aliases WHERE target_key_id = ? AND alias_name > ? "
                "ORDER BY alias_name LIMIT ?",
                (key_id, after_alias_name or "", limit),
            )
        return [_alias_from_row(row) for row in rows]

    async def count_aliases(self, key_id: str) -> int:
        row = await self._one("SELECT COUNT(*) FROM aliases WHERE target_key_id = ?", (key_id,))
        return int(row[0])

    async def get_tags(self, key_id: str) -> list[Tag]:
        rows = await self._all(
            "SELECT tag_key, tag_value FROM tags WHERE key_id = ? ORDER BY tag_key", (key_id,)
        )
        return [Tag(tag_key=row[0], tag_value=row[1]) for row in rows]


class SqliteWriter(SqliteRepository):
    """The write half; used only inside ``SqliteStore.write()``'s transaction."""

    async def insert_key(self, key: Key, version: KeyVersion | None) -> None:
        await self._db.execute(_INSERT_KEY, _key_row(key))
        if version is None:  # an EXTERNAL key, created without material
            return
        await self._db.execute(_INSERT_VERSION, _version_row(version))

    async def insert_keys(self, keys: Sequence[tuple[Key, KeyVersion]]) -> None:
        """Many new keys with their first version, in two statements (bulk seeding).

        The same rows as :meth:`insert_key` writes; one ``executemany`` per table hands
        the batch to SQLite in one thread hop instead of two per key.
        """
        await self._db.executemany(_INSERT_KEY, [_key_row(key) for key, _ in keys])
        await self._db.executemany(_INSERT_VERSION, [_version_row(version) for _, version in keys])

    async def update_key(self, key: Key) -> None:
        key.check_invariants()
        cursor = await self._db.execute(
            "UPDATE keys SET description = ?, key_state = ?, policy = ?, "
            "current_material_id = ?, deletion_date_us = ?, pending_window_days = ?, "
            "revision = revision + 1 WHERE key_id = ? AND revision = ?",
            (
                key.description,
                key.state.value,
                key.policy,
                key.current_material_id,
                _optional_us(key.deletion_date),
                key.pending_window_days,
                key.key_id,
                key.revision,
            ),
        )
        if cursor.rowcount != 1:
            # Writes are serialised, so a stale revision means a bug, not a race to retry.
            raise AssertionError(f"key {key.key_id} changed under a serialised write")
        key.revision += 1

    async def delete_key(self, key_id: str) -> None:
        # Foreign keys cascade to versions, aliases and tags.
        await self._db.execute("DELETE FROM keys WHERE key_id = ?", (key_id,))

    async def insert_alias(self, alias: Alias) -> None:
        await self._db.execute(
            "INSERT INTO aliases (alias_name, target_key_id, created_at_us, updated_at_us) "
            "VALUES (?, ?, ?, ?)",
            (
                alias.alias_name,
                alias.target_key_id,
                to_us(alias.created_at),
                to_us(alias.updated_at),
            ),
        )

    async def update_alias(self, alias: Alias) -> None:
        await self._db.execute(
            "UPDATE aliases SET target_key_id = ?, updated_at_us = ? WHERE alias_name = ?",
            (alias.target_key_id, to_us(alias.updated_at), alias.alias_name),
        )

    async def delete_alias(self, alias_name: str) -> None:
        await self._db.execute("DELETE FROM aliases WHERE alias_name = ?", (alias_name,))

    async def put_tags(self, key_id: str, tags: Sequence[Tag]) -> None:
        await self._db.executemany(
            "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?, ?, ?) "
            "ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
            [(key_id, tag.tag_key, tag.tag_value) for tag in tags],
        )

    async def delete_tags(self, key_id: str, tag_keys: Sequence[str]) -> None:
        await self._db.executemany(
            "DELETE FROM tags WHERE key_id = ? AND tag_key = ?",
            [(key_id, tag_key) for tag_key in tag_keys],
        )
