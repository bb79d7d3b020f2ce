"""One owner per data directory: the running node, or an offline tool, never both.

The node's store assumes it is the only writer of its database while it runs (its
committed-key cache is cleared only by its own commits, storage/store.py), so an
offline tool such as ``meridian node seed-keys`` must not write while a node serves
the same ``data_dir``. The node holds ``flock(2)`` on ``DATA_DIR/node.lock`` from
start to stop; a tool takes the same lock and is refused while the node holds it.

The node's lock is *shared* and a tool's *exclusive*: a node may run as several
worker processes on one data directory (server/workers.py), each holding the shared
lock, and a tool is refused while any of them runs; a node is refused while a tool
holds the exclusive lock.

Why flock and not a pid file: the kernel releases the lock when the holder dies, even
by SIGKILL, so a crashed node never leaves a stale lock that an operator must delete,
and a recycled pid can never look like a running node. The file holds the holder's pid
and role only to make the refusal readable; it is never trusted for the decision.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE_NAME = "node.lock"
# What the lock file may hold: "<pid> <role>\n"; anything longer is not ours.
_HOLDER_BYTES_MAX = 200


class DataDirBusy(Exception):
    """Another process (a running node, or another tool) holds the data directory."""


class DataDirLock:
    """An exclusive, non-blocking lock on a data directory; release() or process exit frees it."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, data_dir: Path, *, role: str, shared: bool = False) -> DataDirLock:
        """Take the lock or raise :class:`DataDirBusy` naming the holder; never waits.

        ``shared``: for a node's worker processes, which may hold it together.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE_NAME
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise DataDirBusy(f"{data_dir} is in use by {holder}") from None
        except BaseException:
            os.close(descriptor)
            raise
        # Written after the lock is held, so a reader never sees a half-written line of
        # a process that then failed to lock. Shared holders overwrite each other: the
        # line names one of them, which is all a refusal needs.
        line = f"{os.getpid()} {role}\n".encode()
        os.pwrite(descriptor, line.ljust(_HOLDER_BYTES_MAX // 2), 0)
        return cls(path, descriptor)

    def release(self) -> None:
        """Free the lock (idempotent). The file stays: deleting it would race a new holder."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)


def _read_holder(descriptor: int) -> str:
    text = os.pread(descriptor, _HOLDER_BYTES_MAX, 0).decode("utf-8", "replace").split()
    if len(text) == 2 and text[0].isdigit():
        return f"a {text[1]} (pid {text[0]})"
    return "another process"
