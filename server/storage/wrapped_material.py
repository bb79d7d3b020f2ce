"""Direct access to the columns that hold blobs wrapped by the root key, for re-wrapping.

``meridian node rewrap-root`` runs in its own process beside a serving node. It opens the
node's database with its own connection (WAL mode lets both work at once), reads each
wrapped column's rows in key order, and replaces each blob with a compare-and-set: a row
the node deleted or changed meanwhile is left alone. Each batch is one short
``BEGIN IMMEDIATE … COMMIT`` with ``synchronous=FULL``, so the node's own writes wait at
most one batch, and a kill at any instant leaves every row either under the old root key
or under the new one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

BUSY_TIMEOUT_MS = 5000
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class WrappedColumn:
    """A table column of root-key-wrapped blobs, and the columns that identify a row."""

    table: str
    key_columns: tuple[str, ...]
    blob_column: str

    def __post_init__(self) -> None:
        # The names go into SQL text (SQLite cannot bind identifiers); they are constants
        # in the code, and this makes sure they stay plain identifiers.
        for name in (self.table, self.blob_column, *self.key_columns):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not a plain SQL identifier")
        if not self.key_columns:
            raise ValueError("a wrapped column needs the columns that identify its rows")


@dataclass(frozen=True)
class WrappedRow:
    key: tuple[Any, ...]
    wrapped: bytes


@dataclass(frozen=True)
class Replacement:
    row: WrappedRow
    wrapped: bytes


class WrappedMaterialStore:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    @classmethod
    async def open(cls, database: Path) -> WrappedMaterialStore:
        """Open an existing node database; never creates one (a wrong path must fail)."""
        try:
            connection = await aiosqlite.connect(
                _read_write_uri(database), uri=True, isolation_level=None
            )
        except sqlite3.OperationalError:
            raise FileNotFoundError(f"no Meridian database at {database}") from None
        try:
            await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=FULL")
            store = cls(connection)
            if not await store.has_table("key_versions"):
                raise FileNotFoundError(f"{database} is not a Meridian node database")
        except BaseException:
            await connection.close()
            raise
        return store

    async def close(self) -> None:
        await self._connection.close()

    async def has_table(self, table: str) -> bool:
        async with self._connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ) as cursor:
            return await cursor.fetchone() is not None

    async def page(
        self, column: WrappedColumn, after: tuple[Any, ...] | None, *, limit: int
    ) -> list[WrappedRow]:
        """Up to ``limit`` rows with a blob, in key order, after ``after``."""
        keys = ", ".join(column.key_columns)
        sql = f"SELECT {keys}, {column.blob_column} FROM {column.table} "  # noqa: S608
        sql += f"WHERE {column.blob_column} IS NOT NULL "
        parameters: list[Any] = []
        if after is not None:
            placeholders = ", ".join("?" for _ in column.key_columns)
            sql += f"AND ({keys}) > ({placeholders}) "
            parameters.extend(after)
        sql += f"ORDER BY {keys} LIMIT ?"
        parameters.append(limit)
        async with self._connection.execute(sql, parameters) as cursor:
            rows = await cursor.fetchall()
        width = len(column.key_columns)
        return [WrappedRow(tuple(row[:width]), bytes(row[width])) for row in rows]

    async def replace(self, column: WrappedColumn, replacements: Sequence[Replacement]) -> int:
        """Swap each row's blob if it is still the one read; returns how many were swapped."""
        if not replacements:
            return 0
        match = " AND ".join(f"{name} = ?" for name in column.key_columns)
        sql = (
            f"UPDATE {column.table} SET {column.blob_column} = ? "  # noqa: S608
            f"WHERE {match} AND {column.blob_column} = ?"
        )
        swapped = 0
        await self._connection.execute("BEGIN IMMEDIATE")
        try:
            for replacement in replacements:
                row = replacement.row
                cursor = await self._connection.execute(
                    sql, (replacement.wrapped, *row.key, row.wrapped)
                )
                swapped += cursor.rowcount
                await cursor.close()
            await self._connection.execute("COMMIT")
        except BaseException:
            await self._connection.execute("ROLLBACK")
            raise
        return swapped

    async def count(self, column: WrappedColumn) -> int:
        sql = f"SELECT COUNT(*) FROM {column.table} WHERE {column.blob_column} IS NOT NULL"  # noqa: S608
        async with self._connection.execute(sql) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0


def _read_write_uri(database: Path) -> str:
    # mode=rw opens an existing database only; as_uri escapes any "?" or "#" in the path.
    return f"{database.absolute().as_uri()}?mode=rw"
