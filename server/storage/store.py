"""The node's SQLite store: two connections, one serialised durable writer.

Keys read on the hot path come from a cache of committed rows that every commit
clears (``KeyCache``), so Encrypt/Decrypt run no SQL. This assumes this process is the
only writer of its database while it runs: a tool that edits the file offline must do so
with the node stopped.

Why two connections: reads must never see another request's uncommitted writes,
and SQLite in WAL mode gives a reader connection exactly the committed state while
the writer works. Writes are serialised by an asyncio lock (control-plane traffic
is small) and each logical change is one ``BEGIN IMMEDIATE … COMMIT`` with
``synchronous=FULL``, so an acknowledged change survives SIGKILL and power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from meridian.server.storage.idempotency import reserve_pending_token
from meridian.server.storage.migrations import apply_migrations
from meridian.server.storage.repository import KeyCache, SqliteRepository, SqliteWriter

BUSY_TIMEOUT_MS = 5000


class SqliteStore:
    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: Path
    ) -> None:
        self.path = path
        self._writer_connection = writer
        self._reader_connection = reader
        self._writer = SqliteWriter(writer)
        self._key_cache = KeyCache()
        self._reader = SqliteRepository(reader, self._key_cache)
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
                # A retried call's idempotency token commits with the change it guards.
                token = await reserve_pending_token(self._writer_connection)
            except BaseException:
                await self._writer_connection.execute("ROLLBACK")
                raise
            try:
                await self._writer_connection.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (I/O error, disk full) must not leave the transaction
                # open for the next writer; SQLite may already have rolled it back.
                with contextlib.suppress(Exception):
                    await self._writer_connection.execute("ROLLBACK")
                raise
            finally:
                # Only now: until the commit, readers must keep seeing the old rows.
                self._key_cache.invalidate()
            if token is not None:
                token.reserved = True

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction for a feature's own tables, as ``write()`` makes it."""
        async with self.write():
            yield self._writer_connection

    async def close(self) -> None:
        await self._reader_connection.close()
        await self._writer_connection.close()


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, never implicitly.
    connection = await aiosqlite.connect(str(path), isolation_level=None)
    await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    await connection.execute("PRAGMA foreign_keys=ON")
    return connection
