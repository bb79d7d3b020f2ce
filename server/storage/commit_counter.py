"""A counter of store commits shared by the worker processes of one node.

Each worker keeps committed rows in process-local caches (``KeyCache``, the material
cache, the authorizer's grants and identity policies) that its own commits clear. With
several workers a commit in one must also clear the others' caches before they serve
a stale key (a disabled key must not keep encrypting). Every worker bumps this counter
after each commit of the key store and before acknowledging it; every worker reads it
before trusting a cache, and clears its caches when it moved. The read is a memory
load from a shared mapping (no system call, no SQL), so the hot path stays SQL-free.

Why not ``PRAGMA data_version``: it answers the same question, but through aiosqlite's
thread, which costs a thread hop on every request.

The window: a worker's commit is visible in the database a few microseconds before
the counter moves, so a request *running concurrently* with a commit may still see
the old state (as it could in one process). A request that starts after the commit
was acknowledged always sees it: the bump happens before the acknowledgement.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

COUNTER_BYTES = 8
FILE_NAME = "meridian.commits"


class SharedCommitCounter:
    """A 64-bit counter in a small file every worker maps into memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # A new file is extended to the counter's size (zero); an existing one is
            # left as it is, so a worker never resets what another has counted.
            if os.fstat(descriptor).st_size < COUNTER_BYTES:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                try:
                    if os.fstat(descriptor).st_size < COUNTER_BYTES:
                        os.ftruncate(descriptor, COUNTER_BYTES)
                finally:
                    fcntl.flock(descriptor, fcntl.LOCK_UN)
            self._map = mmap.mmap(descriptor, COUNTER_BYTES, mmap.MAP_SHARED)
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor

    @classmethod
    def in_directory(cls, data_dir: Path) -> SharedCommitCounter:
        return cls(data_dir / FILE_NAME)

    def value(self) -> int:
        """The current count (a torn read can only look like a change, never hide one)."""
        return int.from_bytes(self._map[:COUNTER_BYTES], "little")

    def bump(self) -> int:
        """Count one commit; returns the new value. The file lock makes the increment
        atomic across processes (commits are rare next to reads, so a system call here
        costs nothing that matters)."""
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)
        try:
            value = (self.value() + 1) % (1 << (8 * COUNTER_BYTES))
            self._map[:COUNTER_BYTES] = value.to_bytes(COUNTER_BYTES, "little")
            return value
        finally:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._descriptor)
