"""A write whose caller is cancelled (a client's deadline) never leaves the store wedged.

aiosqlite runs each statement on its own thread: cancelling the await does not stop the
statement. A BEGIN cancelled while it waits for the database lock still begins its
transaction later; unless the store waits for it and rolls it back, the connection stays
inside a transaction nobody ends and every later write fails.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from meridian.server.storage.store import SqliteStore


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_the_store_usable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "meridian.sqlite3"
    store = await SqliteStore.open(path)
    other_writer = sqlite3.connect(str(path), isolation_level=None)
    try:
        other_writer.execute("BEGIN IMMEDIATE")  # holds the database's write lock

        async def cancelled_write() -> None:
            async with store.write_connection() as connection:
                await connection.execute("CREATE TABLE never (x INTEGER)")

        task = asyncio.ensure_future(cancelled_write())
        await asyncio.sleep(0.2)  # its BEGIN IMMEDIATE now waits for the lock (busy timeout)
        task.cancel()
        other_writer.execute("ROLLBACK")  # the lock is free: that BEGIN goes through now
        with pytest.raises(asyncio.CancelledError):
            await task

        async with store.write_connection() as connection:
            await connection.execute("CREATE TABLE later (x INTEGER)")
            await connection.execute("INSERT INTO later VALUES (1)")
    finally:
        other_writer.close()
        await store.close()
    check = sqlite3.connect(str(path))
    try:
        tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
        assert "later" in tables and "never" not in tables
        assert check.execute("SELECT x FROM later").fetchall() == [(1,)]
    finally:
        check.close()
