"""The store's reader connection: each statement runs to its end in one job, or not at all.

SQLite's read snapshot belongs to a connection, not to a statement. In WAL mode a
connection outside an explicit transaction reads in a snapshot that begins when one of
its statements starts reading and lasts while *any* of its statements is still active
(stepped, not yet run to its end or reset). The node has one reader connection, shared by
every request in flight, whose statements aiosqlite runs one job at a time on its thread.
So a statement that one request leaves active holds every other request's reads in the
past, and a key committed (and acknowledged) meanwhile reads as missing. Two ways a
statement stayed active:

- **A cursor read in several jobs**: ``execute`` (the statement stepped to its first row),
  then ``fetchone``/``fetchall``, then ``close``. A read that another request queued
  between the first job and the last ran in the first one's snapshot.
- **A cancelled ``execute``** (a client's deadline cancels its handler, a task is
  dropped): aiosqlite's thread runs the statement anyway and keeps what it returned, a
  cursor whose statement is active, until its *next* job has finished, so that next
  read, whoever made it, ran in the old snapshot.

Seen under load in the replication benchmark: CreateKey returned, and the ReplicateKey
sent right after it was answered NotFoundException, because the authorization hook's
read of the new key (``Authorizer._resolve`` -> ``SqliteRepository.get_key``) ran in a
snapshot taken before CreateKey committed. The same stale read could also cache an old
row of a key in ``KeyCache`` under the current generation, kept until the next commit.

``execute_fetchall`` runs its statement to the end (and so resets it) inside one job,
whether or not its caller still waits, and that is the only way to read through
``ReaderConnection``: the cursor API is refused, so no repository can bring the hazard
back. Writes never use this connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite

__all__ = ["ReaderConnection", "connect_reader"]

# Rows aiosqlite fetches per job when iterating a cursor (its own default); unused here,
# as nothing iterates a cursor on this connection, but its constructor asks for it.
_ITER_CHUNK_ROWS = 64


class ReaderConnection(aiosqlite.Connection):
    """An aiosqlite connection for committed reads through ``execute_fetchall`` only."""

    def execute(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("execute")

    def executemany(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("executemany")

    def executescript(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("executescript")

    def execute_insert(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("execute_insert")

    def cursor(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("cursor")

    def iterdump(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("iterdump")


def _refuse(method: str) -> NoReturn:
    raise TypeError(
        f"the store's reader connection does not offer {method}(): its statements must "
        "run to their end in one job (execute_fetchall), or a statement left active "
        "holds every request's reads in an old snapshot (server/storage/reader.py)"
    )


async def connect_reader(path: Path, *, busy_timeout_ms: int) -> ReaderConnection:
    """Open ``path`` for reading, as ``aiosqlite.connect`` would, as a ReaderConnection."""

    def connector() -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN, so every read sees the latest commit.
        return sqlite3.connect(str(path), isolation_level=None)

    connection = ReaderConnection(connector, _ITER_CHUNK_ROWS)
    await connection  # starts aiosqlite's thread, which opens the database
    try:
        await connection.execute_fetchall(f"PRAGMA busy_timeout={busy_timeout_ms}")
        await connection.execute_fetchall("PRAGMA foreign_keys=ON")
    except BaseException:
        await connection.close()
        raise
    return connection
