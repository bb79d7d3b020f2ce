"""SQLite storage of the audit trail (the ``AuditStorage`` port), on its own connections.

Three connections to the node's database, each used by one thread: the group-commit
thread's (``open_group_commit``; every record, intent and digest goes through it, see
``server/audit/writer.py``), a writer for the rare other writes (the trail's state,
signing keys, peers' digests, pruning), and a reader, so queries never delay a commit.
All run the synchronous code of :class:`AuditDatabase`, which the command line also
uses to read a trail offline. Not aiosqlite: a group commit is one call on its thread,
not one thread hop per statement.

The audit tables live in the node's database (migration 5). SQLite allows one writer
at a time: the key store's writer and these wait for each other through
``busy_timeout``, and all transactions are short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from meridian.server.audit.chain import StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.ports import (
    Intent,
    KeyInventoryRow,
    LastUse,
    NewDigest,
    RecordQuery,
    SigningKeyRow,
    TrailState,
    UsageRow,
)
from meridian.server.storage.audit_database import AuditDatabase

__all__ = ["AuditDatabase", "SqliteAuditStorage"]

T = TypeVar("T")


class SqliteAuditStorage:
    """The async port over two :class:`AuditDatabase` connections, one thread each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="audit-reader")
        self._writer: AuditDatabase | None = None
        self._reader: AuditDatabase | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteAuditStorage:
        """Open the node's database (migrations must have run: SqliteStore.open)."""
        storage = cls(path)
        try:
            storage._writer = await storage._on(storage._write_thread, AuditDatabase.open, path)
            storage._reader = await storage._on(storage._read_thread, AuditDatabase.open, path)
        except BaseException:
            await storage.close()
            raise
        return storage

    async def _on(self, thread: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(thread, function, *args)

    async def _write(self, function: Callable[..., T], *args: Any) -> T:
        return await self._on(self._write_thread, function, *args)

    async def _read(self, function: Callable[..., T], *args: Any) -> T:
        return await self._on(self._read_thread, function, *args)

    @property
    def _w(self) -> AuditDatabase:
        assert self._writer is not None, "the audit storage is closed"
        return self._writer

    @property
    def _r(self) -> AuditDatabase:
        assert self._reader is not None, "the audit storage is closed"
        return self._reader

    def open_group_commit(self) -> AuditDatabase:
        """The group-commit thread's own connection (opened on, and used by, that thread)."""
        return AuditDatabase.open(self.path)

    async def load_state(self) -> TrailState | None:
        return await self._read(self._r.load_state)

    async def create_state(self, state: TrailState) -> TrailState:
        return await self._write(self._w.create_state, state)

    async def signing_keys(self) -> list[SigningKeyRow]:
        return await self._read(self._r.signing_keys)

    async def add_signing_key(self, row: SigningKeyRow) -> None:
        await self._write(self._w.add_signing_key, row)

    async def intents(self) -> list[Intent]:
        return await self._read(self._r.intents)

    async def last_digest(self) -> NewDigest | None:
        return await self._read(self._r.last_digest)

    async def digests(self, *, after_number: int, limit: int) -> list[SignedDigest]:
        return await self._read(lambda: self._r.digests(after_number=after_number, limit=limit))

    async def records(self, query: RecordQuery) -> list[StoredRecord]:
        return await self._read(self._r.records, query)

    async def last_record(self) -> StoredRecord | None:
        return await self._read(self._r.last_record)

    async def prunable_digest(self, cutoff_us: int) -> NewDigest | None:
        return await self._read(self._r.prunable_digest, cutoff_us)

    async def delete_pruned(self, through_seq: int, *, rows_max: int) -> int:
        return await self._write(lambda: self._w.delete_pruned(through_seq, rows_max=rows_max))

    async def peer_position(self, peer_region: str) -> int:
        return await self._read(self._r.peer_position, peer_region)

    async def set_peer_position(self, peer_region: str, acked_number: int, now_us: int) -> None:
        await self._write(self._w.set_peer_position, peer_region, acked_number, now_us)

    async def store_peer_digests(
        self,
        origin_region: str,
        keys: Sequence[tuple[str, bytes]],
        digests: Sequence[SignedDigest],
        now_us: int,
    ) -> None:
        await self._write(self._w.store_peer_digests, origin_region, keys, digests, now_us)

    async def peer_digests(
        self, origin_region: str, *, after_number: int, limit: int
    ) -> list[SignedDigest]:
        return await self._read(
            lambda: self._r.peer_digests(origin_region, after_number=after_number, limit=limit)
        )

    async def peer_keys(self, origin_region: str) -> list[tuple[str, bytes]]:
        return await self._read(self._r.peer_keys, origin_region)

    async def peer_regions(self) -> list[str]:
        return await self._read(self._r.peer_regions)

    async def usage_rows(self, *, first_day: str, last_day: str) -> list[UsageRow]:
        return await self._read(lambda: self._r.usage_rows(first_day=first_day, last_day=last_day))

    async def last_use(self, key_arn: str) -> LastUse | None:
        return await self._read(self._r.last_use, key_arn)

    async def last_uses(self) -> list[LastUse]:
        return await self._read(self._r.last_uses)

    async def key_inventory(self) -> list[KeyInventoryRow]:
        return await self._read(self._r.key_inventory)

    async def key_state_counts(self) -> dict[str, int]:
        return await self._read(self._r.key_state_counts)

    async def close(self) -> None:
        for database, thread in (
            (self._writer, self._write_thread),
            (self._reader, self._read_thread),
        ):
            if database is not None:
                await self._on(thread, database.close)
        self._writer = self._reader = None
        self._write_thread.shutdown(wait=True)
        self._read_thread.shutdown(wait=True)
