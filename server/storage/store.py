"""The node's SQLite store: two connections, one serialised durable writer.

Why two connections: reads must never see another request's uncommitted writes,
and SQLite in WAL mode gives a reader connection exactly the committed state while
the writer works. Writes are serialised by an asyncio lock (control-plane traffic
is small) and each logical change is one ``BEGIN IMMEDIATE … COMMIT`` with
``synchronous=FULL``, so an acknowledged change survives SIGKILL and power loss.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from meridian.server.storage.migrations import apply_migrations
from meridian.server.storage.repository import SqliteRepository, SqliteWriter

BUSY_TIMEOUT_MS = 5000


class SqliteStore:
    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: Path
    ) -> None:
        self.path = path
        self._writer_connection = writer
        self._reader_connection = reader
        self._writer = SqliteWriter(writer)
        self._reader = SqliteRepository(reader)
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute("PRAGMA synchronous=FULL")
            await apply_migrations(writer)
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader, path)

    @property
    def reader(self) -> SqliteRepository:
        return self._reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteWriter]:
        async with self._write_lock:
            await self._writer_connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer_connection.execute("ROLLBACK")
                raise
            await self._writer_connection.execute("COMMIT")

    async def close(self) -> None:
        await self._reader_connection.close()
        await self._writer_connection.close()


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, never implicitly.
    connection = await aiosqlite.connect(str(path), isolation_level=None)
    await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    await connection.execute("PRAGMA foreign_keys=ON")
    return connection
