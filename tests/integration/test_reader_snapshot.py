"""A committed key is visible to the next read of the store's shared reader connection.

SQLite's read snapshot belongs to a connection, not to a statement: while any statement
of the reader connection is active (stepped, not yet reset), every other statement on it
reads in the same, older snapshot. Every request of a node reads through that one
connection, so a statement one request left active made another request miss a key that
had been committed and acknowledged in between: the bench's CreateKey returned, and the
ReplicateKey right after it was answered NotFoundException by the authorization hook
(server/storage/reader.py has the whole story).

The tests force the interleaving that load made likely: aiosqlite's reader thread is
held (by SQLite's trace callback, which runs on that thread before a statement starts
reading) right before the read of the new key, while the key is committed through the
writer; released, the read must see it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meridian.server.domain.model import Key, KeySpec, KeyState, KeyUsage, KeyVersion, Origin
from meridian.server.storage.store import SqliteStore

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
# Bounds on every wait, so a broken interleaving fails the test instead of hanging it.
WAIT_S_MAX = 5.0


def _key(number: int) -> tuple[Key, KeyVersion]:
    key_id = f"mrk-{number:032x}"
    material_id = bytes([number]) * 32
    key = Key(
        key_id=key_id,
        arn=f"arn:meridian:kms:us-east-1:000000000000:key/{key_id}",
        account_id="000000000000",
        region="us-east-1",
        created_at=CREATED,
        description="",
        key_spec=KeySpec.SYMMETRIC_DEFAULT,
        key_usage=KeyUsage.ENCRYPT_DECRYPT,
        origin=Origin.AWS_KMS,
        state=KeyState.ENABLED,
        policy="{}",
        current_material_id=material_id,
        multi_region=True,
    )
    version = KeyVersion(
        key_id=key_id, material_id=material_id, created_at=CREATED, wrapped_material=b"w" * 62
    )
    return key, version


async def _create(store: SqliteStore, key: Key, version: KeyVersion) -> None:
    async with store.write() as tx:
        await tx.insert_key(key, version)


async def _wait_for(event: threading.Event) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S_MAX
    while not event.is_set():
        assert asyncio.get_running_loop().time() < deadline, "the reader was never held"
        await asyncio.sleep(0.001)


async def _read_after_commit(
    store: SqliteStore, new: tuple[Key, KeyVersion], meanwhile: Callable[[], Awaitable[None]]
) -> Key | None:
    """Read ``new`` through the reader, after ``meanwhile`` (another request's use of the
    reader) and with ``new`` committed while the reader's thread is held right before
    that read: whatever the reader ran before, the read must see the commit."""
    key, version = new
    connection = store.reader.connection
    reached = threading.Event()
    release = threading.Event()

    def trace(statement: str) -> None:
        if key.key_id in statement and not reached.is_set():
            reached.set()
            release.wait(WAIT_S_MAX)

    # Installed first: it is a job on the reader's thread too, and would otherwise run
    # between the other request's statement and this read.
    await connection.set_trace_callback(trace)
    try:
        await meanwhile()
        reading = asyncio.ensure_future(store.reader.get_key(key.key_id))
        await _wait_for(reached)
        # Everything queued before the read has run on the reader's thread by now.
        await _create(store, key, version)
        release.set()
        return await reading
    finally:
        release.set()
        await connection.set_trace_callback(None)


async def test_a_read_interleaved_with_another_requests_read_sees_a_key_committed_between(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "meridian.sqlite3")
    existing, new = _key(1), _key(2)
    others: list[asyncio.Future[Key | None]] = []

    async def other_request() -> None:
        # Another request's read of an existing key (not cached yet: a statement that
        # returns a row), handed to the reader's thread just before the new key's read.
        others.append(asyncio.ensure_future(store.reader.get_key(existing[0].key_id)))
        await asyncio.sleep(0)

    try:
        await _create(store, *existing)
        found = await _read_after_commit(store, new, other_request)
        assert found is not None and found.key_id == new[0].key_id
        assert (await others[0]) is not None
    finally:
        await store.close()


async def test_a_cancelled_read_does_not_hold_the_reader_in_the_past(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "meridian.sqlite3")
    existing, new = _key(1), _key(2)

    async def cancelled_request() -> None:
        # A read whose caller gives up (a client's deadline cancels its handler) after it
        # was handed to aiosqlite's thread: the thread still runs the statement.
        cancelled = asyncio.ensure_future(store.reader.get_key(existing[0].key_id))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    try:
        await _create(store, *existing)
        found = await _read_after_commit(store, new, cancelled_request)
        assert found is not None and found.key_id == new[0].key_id
    finally:
        await store.close()


async def test_the_reader_offers_no_statement_that_outlives_its_job(tmp_path: Path) -> None:
    """Every read of the reader runs to its end in one job (execute_fetchall); the cursor
    API, whose statements stay active between jobs, is refused, so no repository can
    bring the stale reads back."""
    store = await SqliteStore.open(tmp_path / "meridian.sqlite3")
    try:
        await _create(store, *_key(1))
        connection = store.reader.connection
        assert len(await connection.execute_fetchall("SELECT key_id FROM keys")) == 1
        for method in ("execute", "executemany", "executescript", "execute_insert", "cursor"):
            with pytest.raises(TypeError, match="execute_fetchall"):
                getattr(connection, method)("SELECT key_id FROM keys")
        with pytest.raises(TypeError, match="execute_fetchall"):
            connection.iterdump()
        # The store's writes are untouched: they go through the writer connection.
        await _create(store, *_key(2))
        assert len(await connection.execute_fetchall("SELECT key_id FROM keys")) == 2
    finally:
        await store.close()
