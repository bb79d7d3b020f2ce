"""Turn-taking between the SQLite writers of a node's worker processes.

SQLite lets one writer in at a time; the others wait in its busy handler, which polls
with sleeps that grow to 100 ms. With several worker processes (server/workers.py)
four or more writers (each worker's key store and audit group commit) meet on the one
database, and those sleeps became the latency: a CreateKey under load waited most of
a second. So every writer first takes its turn through this lock, an ``flock`` on a
file beside the database, and only then begins its ``BEGIN IMMEDIATE`` transaction,
which then never waits.

The wait polls the lock at most every millisecond (``flock`` has no timeout, and a
writer must give up after ``timeout_s`` rather than hang: a transaction that waits for
another writer's commit would otherwise wait forever). ``flock`` locks belong to an
open file description, so each writer opens the file itself, and two writers in one
process exclude each other too. A lone node (``workers = 1``) does not use it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

LOCK_SUFFIX = "-write-turns.lock"
_POLL_S_MIN = 0.0001
_POLL_S_MAX = 0.001


class WriteTurns:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + LOCK_SUFFIX)
        self._descriptor: int | None = os.open(
            self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )

    def try_acquire(self) -> bool:
        """Take the turn if it is free now (never waits)."""
        try:
            fcntl.flock(self._open_descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self, timeout_s: float) -> None:
        """Wait for this writer's turn; raises sqlite3.OperationalError after
        ``timeout_s``, as SQLite's own busy timeout would."""
        descriptor = self._open_descriptor()
        deadline = time.monotonic() + timeout_s
        pause = _POLL_S_MIN
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked") from None
            time.sleep(pause)
            pause = min(pause * 2, _POLL_S_MAX)

    def release(self) -> None:
        fcntl.flock(self._open_descriptor(), fcntl.LOCK_UN)

    def close(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)

    def _open_descriptor(self) -> int:
        if self._descriptor is None:
            raise sqlite3.OperationalError("the write-turns lock is closed")
        return self._descriptor
