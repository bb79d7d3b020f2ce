"""The node's SQLite store: two connections, one serialised durable writer.

Keys read on the hot path come from a cache of committed rows that every commit
clears (``KeyCache``), so Encrypt/Decrypt run no SQL. This assumes this process is the
only writer of its database while it runs: a tool that edits the file offline must do so
with the node stopped. A node with several worker processes (server/workers.py) shares
the database between them; each commit then also bumps a counter all workers map
(``commit_counter.py``), and a worker that sees it move clears its caches first.

Why two connections: reads must never see another request's uncommitted writes,
and SQLite in WAL mode gives a reader connection exactly the committed state while
the writer works. Writes are serialised by an asyncio lock (control-plane traffic
is small) and each logical change is one ``BEGIN IMMEDIATE … COMMIT`` with
``synchronous=FULL``, so an acknowledged change survives SIGKILL and power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from meridian.server.storage.commit_counter import SharedCommitCounter
from meridian.server.storage.idempotency import reserve_pending_token
from meridian.server.storage.migrations import apply_migrations
from meridian.server.storage.reader import connect_reader
from meridian.server.storage.repository import KeyCache, SqliteRepository, SqliteWriter
from meridian.server.storage.write_turns import WriteTurns

BUSY_TIMEOUT_MS = 5000
# Committed keys held in memory unless the node's [caches] keys_max says otherwise.
KEY_CACHE_ENTRIES_DEFAULT = 100_000


class SqliteStore:
    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        path: Path,
        commits: SharedCommitCounter | None = None,
        *,
        key_cache_entries_max: int = KEY_CACHE_ENTRIES_DEFAULT,
    ) -> None:
        self.path = path
        self._writer_connection = writer
        self._reader_connection = reader
        self._writer = SqliteWriter(writer)
        # Other workers' commits (None: this process is the only writer).
        self._commits = commits
        # Several workers' writers take turns before BEGIN (None: a lone node).
        self._turns = WriteTurns(path) if commits is not None else None
        self._commits_seen = commits.value() if commits is not None else 0
        self._other_writers_listeners: list[Callable[[], None]] = []
        self._key_cache = KeyCache(
            key_cache_entries_max,
            before_use=self.observe_other_writers if commits is not None else None,
        )
        self._reader = SqliteRepository(reader, self._key_cache)
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        commits: SharedCommitCounter | None = None,
        key_cache_entries_max: int = KEY_CACHE_ENTRIES_DEFAULT,
    ) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute("PRAGMA synchronous=FULL")
            await apply_migrations(writer)
            # Shared by every request: it runs no statement that can stay active
            # between jobs, which would hold the others' reads in an old snapshot.
            reader = await connect_reader(path, busy_timeout_ms=BUSY_TIMEOUT_MS)
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader, path, commits, key_cache_entries_max=key_cache_entries_max)

    def on_other_writers_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when another worker committed (a cache of it is stale)."""
        self._other_writers_listeners.append(listener)

    def observe_other_writers(self) -> None:
        """Clear every cache of committed state if any worker committed since the last
        look. Cheap (one load from shared memory); called before each cache is trusted
        and at the start of every call."""
        commits = self._commits
        if commits is None:
            return
        value = commits.value()
        if value == self._commits_seen:
            return
        self._commits_seen = value
        self._key_cache.invalidate()
        for listener in self._other_writers_listeners:
            listener()

    @property
    def reader(self) -> SqliteRepository:
        return self._reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteWriter]:
        async with self._write_lock:
            if self._turns is None:
                async with self._transaction() as writer:
                    yield writer
                return
            await self._take_turn(self._turns)
            try:
                async with self._transaction() as writer:
                    yield writer
            finally:
                self._turns.release()

    async def _take_turn(self, turns: WriteTurns) -> None:
        """Wait for this worker's turn to write (storage/write_turns.py), off the loop."""
        if turns.try_acquire():
            return  # free: no thread hop
        taking = asyncio.ensure_future(asyncio.to_thread(turns.acquire, BUSY_TIMEOUT_MS / 1000))
        try:
            await asyncio.shield(taking)
        except asyncio.CancelledError:
            # The thread may still get the lock after we stopped waiting: give it back.
            taking.add_done_callback(_release_if_taken(turns))
            raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqliteWriter]:
        # BEGIN, COMMIT and ROLLBACK are awaited to their end even when the caller is
        # cancelled (a client's deadline cancels its handler): the statement runs on in
        # aiosqlite's thread regardless, and a transaction nobody ends keeps the
        # connection inside it, so every later write would fail (STYLE.md 12).
        connection = self._writer_connection
        try:
            await _settle(connection.execute("BEGIN IMMEDIATE"))
            yield self._writer
            # A retried call's idempotency token commits with the change it guards.
            token = await reserve_pending_token(connection)
        except BaseException:
            await _end_transaction(connection)
            raise
        try:
            await _settle(connection.execute("COMMIT"))
        except BaseException:
            # A failed COMMIT (I/O error, disk full) must not leave the transaction
            # open for the next writer; SQLite may already have rolled it back. A
            # cancelled wait for a COMMIT that succeeded leaves nothing to roll back.
            with contextlib.suppress(Exception):
                await _end_transaction(connection)
            raise
        finally:
            # Only now: until the commit, readers must keep seeing the old rows.
            # The other workers are told before this change is acknowledged.
            if self._commits is not None:
                bumped = self._commits.bump()
                # Nobody else committed since the last look: nothing else to clear.
                if bumped == self._commits_seen + 1:
                    self._commits_seen = bumped
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
        if self._commits is not None:
            self._commits.close()
        if self._turns is not None:
            self._turns.close()


async def _settle(statement: Awaitable[object]) -> None:
    """Await ``statement`` to its end; a cancellation meanwhile is re-raised after it."""
    running = asyncio.ensure_future(statement)
    cancelled = False
    while True:
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            if running.done():
                raise
            cancelled = True  # keep waiting: the statement is still running
            continue
        break
    if cancelled:
        raise asyncio.CancelledError


async def _end_transaction(connection: aiosqlite.Connection) -> None:
    """Roll back if a transaction is open (a BEGIN that failed opened none)."""
    if connection.in_transaction:
        await _settle(connection.execute("ROLLBACK"))


def _release_if_taken(turns: WriteTurns) -> Callable[[asyncio.Future[None]], None]:
    def release(taking: asyncio.Future[None]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            turns.release()

    return release


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, never implicitly.
    connection = await aiosqlite.connect(str(path), isolation_level=None)
    await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    await connection.execute("PRAGMA foreign_keys=ON")
    return connection
