"""SQL for the AWS endpoint's access keys (table ``aws_access_keys``, migration 8).

The node only reads this table (through its own read-only connection, so it never
contends with the store's writer); ``meridian access-key`` writes it, from another
process if the node is running, which SQLite's WAL mode and busy timeout allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from meridian.server.storage.migrations import apply_migrations
from meridian.server.storage.repository import from_us, to_us

BUSY_TIMEOUT_MS = 5000
LIST_ROWS_MAX = 10_000

_COLUMNS = "access_key_id, principal, description, created_at_us, revoked_at_us, wrapped_secret"


@dataclass(frozen=True, slots=True)
class AccessKeyRow:
    access_key_id: str
    principal: str
    description: str
    created_at: datetime
    revoked_at: datetime | None
    wrapped_secret: bytes | None  # None once revoked: the secret is erased

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _row(values: Any) -> AccessKeyRow:
    return AccessKeyRow(
        access_key_id=values[0],
        principal=values[1],
        description=values[2],
        created_at=from_us(values[3]),
        revoked_at=None if values[4] is None else from_us(values[4]),
        wrapped_secret=None if values[5] is None else bytes(values[5]),
    )


class AccessKeyTable:
    """One connection to the node's database, for the access key rows only."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    @classmethod
    async def open(cls, database: Path, *, read_only: bool) -> AccessKeyTable:
        """Open the table; read-only for the node, read-write (migrating) for the admin CLI.

        The read-write open creates the database and brings its schema up to date, so
        keys can be created before the node's first start (as ``cluster up`` does).
        """
        if read_only:
            connection = await aiosqlite.connect(
                f"file:{database}?mode=ro", uri=True, isolation_level=None
            )
        else:
            database.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(str(database), isolation_level=None)
        try:
            await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not read_only:
                await connection.execute("PRAGMA journal_mode=WAL")
                await connection.execute("PRAGMA synchronous=FULL")
                await apply_migrations(connection)
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def close(self) -> None:
        await self._connection.close()

    # Reads run to their end in one job (execute_fetchall): concurrent requests share this
    # connection, and a statement left active between a cursor's jobs would hold their
    # reads in an old snapshot, e.g. a revoked key still accepted (storage/reader.py).
    async def get(self, access_key_id: str) -> AccessKeyRow | None:
        rows = await self._connection.execute_fetchall(
            f"SELECT {_COLUMNS} FROM aws_access_keys WHERE access_key_id = ?",  # noqa: S608
            (access_key_id,),
        )
        values = next(iter(rows), None)
        return None if values is None else _row(values)

    async def list(self, principal: str | None = None) -> list[AccessKeyRow]:
        query = f"SELECT {_COLUMNS} FROM aws_access_keys"  # noqa: S608
        parameters: tuple[str, ...] = ()
        if principal is not None:
            query += " WHERE principal = ?"
            parameters = (principal,)
        query += f" ORDER BY principal, access_key_id LIMIT {LIST_ROWS_MAX}"
        return [
            _row(values) for values in await self._connection.execute_fetchall(query, parameters)
        ]

    async def insert(self, row: AccessKeyRow) -> None:
        if row.wrapped_secret is None or row.revoked_at is not None:
            raise ValueError("a new access key is active and has a wrapped secret")
        await self._write(
            f"INSERT INTO aws_access_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?)",  # noqa: S608
            (
                row.access_key_id,
                row.principal,
                row.description,
                to_us(row.created_at),
                row.wrapped_secret,
            ),
        )

    async def revoke(self, access_key_id: str, at: datetime) -> bool:
        """Mark the key revoked and erase its secret; False if there is no active such key."""
        changed = await self._write(
            "UPDATE aws_access_keys SET revoked_at_us = ?, wrapped_secret = NULL "
            "WHERE access_key_id = ? AND revoked_at_us IS NULL",
            (to_us(at), access_key_id),
        )
        return changed == 1

    async def _write(self, statement: str, parameters: tuple[object, ...]) -> int:
        await self._connection.execute("BEGIN IMMEDIATE")
        try:
            cursor = await self._connection.execute(statement, parameters)
            changed = cursor.rowcount
            await cursor.close()
        except BaseException:
            await self._connection.execute("ROLLBACK")
            raise
        await self._connection.execute("COMMIT")
        return changed
