"""Synchronous access to the audit tables over one sqlite3 connection.

Used by the node's group-commit thread and reader thread (``audit_store.py``) and by
the command line, which reads a trail straight from a node's file (``meridian audit
verify --data-dir``). SQL text is built only from the column-list constants and fixed
condition strings below; every value is a bound parameter.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from meridian.server.audit.chain import ChainHead, StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.events import RecordIndex
from meridian.server.audit.ports import (
    CommitBatch,
    Intent,
    KeyInventoryRow,
    LastUse,
    NewDigest,
    RecordQuery,
    SigningKeyRow,
    TrailState,
    UsageRow,
)
from meridian.server.storage.write_turns import WriteTurns

BUSY_TIMEOUT_MS = 10_000
CHAIN_HANDOVER_S = 0.0005
T = TypeVar("T")

_RECORD_COLUMNS = (
    "seq, prev_hash, hash, body, event_time_us, event_id, request_id, event_type, event_name, "
    "principal_arn, key_arn, related_key_arn, outcome, error_code"
)
_STATE_COLUMNS = (
    "chain_id, region, tracking_start_us, head_seq, head_hash, pruned_through_seq, "
    "pruned_through_hash"
)


class AuditDatabase:
    """Synchronous access to the audit tables over one sqlite3 connection."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None = None) -> None:
        self.connection = connection
        self._path = path
        self._turns: WriteTurns | None = None

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> AuditDatabase:
        if read_only:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        else:
            connection = sqlite3.connect(str(path), isolation_level=None)
            connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return cls(connection, path)

    def close(self) -> None:
        self.connection.close()
        if self._turns is not None:
            self._turns.close()
            self._turns = None

    def _one(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        return self.connection.execute(sql, parameters).fetchone()

    def _all(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return list(self.connection.execute(sql, parameters).fetchall())

    # ---- state and keys ------------------------------------------------------------

    def has_audit_tables(self) -> bool:
        row = self._one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_state'")
        return row is not None

    def load_state(self) -> TrailState | None:
        row = self._one(f"SELECT {_STATE_COLUMNS} FROM audit_state WHERE singleton = 1")
        if row is None:
            return None
        return TrailState(
            chain_id=row[0],
            region=row[1],
            tracking_start_us=row[2],
            head=ChainHead(row[3], bytes(row[4])),
            pruned_through_seq=row[5],
            pruned_through_hash=bytes(row[6]),
        )

    def create_state(self, state: TrailState) -> TrailState:
        with self._transaction():
            self.connection.execute(
                f"INSERT OR IGNORE INTO audit_state (singleton, {_STATE_COLUMNS}) "
                "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.chain_id,
                    state.region,
                    state.tracking_start_us,
                    state.head.seq,
                    state.head.hash,
                    state.pruned_through_seq,
                    state.pruned_through_hash,
                ),
            )
        stored = self.load_state()
        assert stored is not None
        return stored

    def signing_keys(self) -> list[SigningKeyRow]:
        rows = self._all(
            "SELECT key_id, created_at_us, public_key, wrapped_private_key "
            "FROM audit_signing_keys ORDER BY created_at_us"
        )
        return [SigningKeyRow(row[0], row[1], bytes(row[2]), bytes(row[3])) for row in rows]

    def add_signing_key(self, row: SigningKeyRow) -> None:
        with self._transaction():
            self.connection.execute(
                "INSERT INTO audit_signing_keys VALUES (?, ?, ?, ?)",
                (row.key_id, row.created_at_us, row.public_key, row.wrapped_private_key),
            )

    # ---- the group commit ----------------------------------------------------------

    def commit(self, batch: CommitBatch) -> None:
        """One transaction; each table gets one multi-row statement per 500 rows.

        Few statements rather than one per row: every statement hands the GIL back and
        forth between this thread and the event loop, and under load each hand-off
        can wait for the loop, which is what bounds a commit's duration.
        """
        with self._transaction():
            self._write_batch(batch)

    def commit_on_chain(self, build: Callable[[ChainHead, NewDigest | None], CommitBatch]) -> None:
        """One transaction whose batch is chained onto the head *stored* in it.

        Used when several worker processes append to the one chain (server/workers.py):
        ``BEGIN IMMEDIATE`` holds SQLite's write lock, so the head and last digest read
        here are the latest, and no other worker can append until COMMIT. ``build``
        chains the records (and seals) onto them.
        """
        turns = self._write_turns()
        # The workers' writers take turns (storage/write_turns.py), so that waiting for
        # another worker's commit is not SQLite's busy handler's sleeps.
        turns.acquire(BUSY_TIMEOUT_MS / 1000)
        try:
            with self._transaction():
                self._write_batch(build(*self._stored_head_and_digest()))
        finally:
            turns.release()
        # The lock is not fair: a writer that looped straight back to it could win it
        # again and again while another worker's callers wait. A moment's pause hands it
        # over (this writer's next batch only grows meanwhile).
        time.sleep(CHAIN_HANDOVER_S)

    def _write_turns(self) -> WriteTurns:
        if self._turns is None:
            if self._path is None:
                raise sqlite3.OperationalError("a shared chain needs the database's path")
            self._turns = WriteTurns(self._path)
        return self._turns

    def _stored_head_and_digest(self) -> tuple[ChainHead, NewDigest | None]:
        """The chain's head and the last digest, as stored, in one statement.

        One statement rather than three: the other workers wait while this writer holds
        the write lock, and under load each statement's return to Python can wait for
        this process's GIL (the event loop holds it), so statements under the lock are
        what its hold time is made of.
        """
        row = self._one(
            "SELECT s.head_seq, s.head_hash, r.seq, r.hash, "
            "d.number, d.last_seq, d.sealed_at_us, d.key_id, d.body, d.signature "
            "FROM audit_state AS s "
            "LEFT JOIN (SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1) AS r "
            "ON 1 = 1 "
            "LEFT JOIN (SELECT number, last_seq, sealed_at_us, key_id, body, signature "
            "FROM audit_digests ORDER BY number DESC LIMIT 1) AS d ON 1 = 1 "
            "WHERE s.singleton = 1"
        )
        if row is None:
            raise sqlite3.OperationalError("the audit trail has no state row")
        head = ChainHead(row[0], bytes(row[1]))
        # As at open (trail.py): never reuse a number, even if the head row is behind.
        if row[2] is not None and row[2] > head.seq:
            head = ChainHead(row[2], bytes(row[3]))
        digest = None if row[4] is None else _new_digest(row[4:10])
        return head, digest

    def _write_batch(self, batch: CommitBatch) -> None:
        self._insert(
            "INSERT OR REPLACE INTO audit_intents VALUES",
            [(i.request_id, i.created_at_us, i.body) for i in batch.intents_put],
        )
        self._insert(
            f"INSERT INTO audit_records ({_RECORD_COLUMNS}) VALUES",
            [
                (
                    record.seq,
                    record.prev_hash,
                    record.hash,
                    record.event.body,
                    *_index_values(record.event.index),
                )
                for record in batch.records
            ],
        )
        for chunk in _chunks([(request_id,) for request_id in batch.intents_done]):
            placeholders = ", ".join("?" for _ in chunk)
            self.connection.execute(
                f"DELETE FROM audit_intents WHERE request_id IN ({placeholders})",
                [request_id for (request_id,) in chunk],
            )
        self._insert(
            "INSERT INTO usage_daily VALUES",
            [(u.day, u.key_arn, u.operation, u.requests, u.failures) for u in batch.usage],
            " ON CONFLICT (day, key_arn, operation) DO UPDATE SET "
            "requests = requests + excluded.requests, "
            "failures = failures + excluded.failures",
        )
        self._insert(
            "INSERT INTO key_last_usage VALUES",
            [
                (u.key_arn, u.operation, u.used_at_us, u.event_id, u.request_id)
                for u in _latest_uses(batch.last_uses)
            ],
            " ON CONFLICT (key_arn) DO UPDATE SET operation = excluded.operation, "
            "used_at_us = excluded.used_at_us, event_id = excluded.event_id, "
            "request_id = excluded.request_id "
            "WHERE excluded.used_at_us >= key_last_usage.used_at_us",
        )
        if batch.digest is not None:
            new = batch.digest
            self.connection.execute(
                "INSERT INTO audit_digests VALUES (?, ?, ?, ?, ?, ?)",
                (
                    new.digest.number,
                    new.last_seq,
                    new.sealed_at_us,
                    new.digest.key_id,
                    new.digest.body,
                    new.digest.signature,
                ),
            )
        if batch.prune_anchor is not None:
            through_seq, through_hash = batch.prune_anchor
            self.connection.execute(
                "UPDATE audit_state SET pruned_through_seq = ?, pruned_through_hash = ? "
                "WHERE singleton = 1",
                (through_seq, through_hash),
            )
        if batch.records:
            self.connection.execute(
                "UPDATE audit_state SET head_seq = ?, head_hash = ? WHERE singleton = 1",
                (batch.head.seq, batch.head.hash),
            )

    def _insert(self, head: str, rows: list[tuple[Any, ...]], tail: str = "") -> None:
        """``head (?, ...), (?, ...) tail`` for up to 500 rows per statement."""
        for chunk in _chunks(rows):
            row = "(" + ", ".join("?" for _ in chunk[0]) + ")"
            values = ", ".join(row for _ in chunk)
            self.connection.execute(
                f"{head} {values}{tail}", [value for item in chunk for value in item]
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self.connection)

    # ---- intents, digests, records -------------------------------------------------

    def intents(self) -> list[Intent]:
        rows = self._all(
            "SELECT request_id, created_at_us, body FROM audit_intents ORDER BY created_at_us"
        )
        return [Intent(row[0], row[1], row[2]) for row in rows]

    def last_digest(self) -> NewDigest | None:
        row = self._one(
            "SELECT number, last_seq, sealed_at_us, key_id, body, signature "
            "FROM audit_digests ORDER BY number DESC LIMIT 1"
        )
        return None if row is None else _new_digest(row)

    def digests(self, *, after_number: int, limit: int) -> list[SignedDigest]:
        rows = self._all(
            "SELECT number, last_seq, sealed_at_us, key_id, body, signature FROM audit_digests "
            "WHERE number > ? ORDER BY number LIMIT ?",
            (after_number, limit),
        )
        return [_new_digest(row).digest for row in rows]

    def records(self, query: RecordQuery) -> list[StoredRecord]:
        conditions = ["seq > ?", "seq > (SELECT pruned_through_seq FROM audit_state)"]
        parameters: list[Any] = [query.after_seq]
        if query.key_arn:
            conditions.append("(key_arn = ? OR related_key_arn = ?)")
            parameters += [query.key_arn, query.key_arn]
        for column, value in (
            ("principal_arn", query.principal_arn),
            ("event_name", query.event_name),
            ("outcome", query.outcome),
            ("error_code", query.error_code),
        ):
            if value:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        if query.start_us is not None:
            conditions.append("event_time_us >= ?")
            parameters.append(query.start_us)
        if query.end_us is not None:
            conditions.append("event_time_us < ?")
            parameters.append(query.end_us)
        rows = self._all(
            f"SELECT {_RECORD_COLUMNS} FROM audit_records WHERE {' AND '.join(conditions)} "
            "ORDER BY seq LIMIT ?",
            [*parameters, query.limit],
        )
        return [_record(row) for row in rows]

    def last_record(self) -> StoredRecord | None:
        row = self._one(f"SELECT {_RECORD_COLUMNS} FROM audit_records ORDER BY seq DESC LIMIT 1")
        return None if row is None else _record(row)

    def prunable_digest(self, cutoff_us: int) -> NewDigest | None:
        row = self._one(
            "SELECT d.number, d.last_seq, d.sealed_at_us, d.key_id, d.body, d.signature "
            "FROM audit_digests d JOIN audit_records r ON r.seq = d.last_seq "
            "WHERE r.event_time_us < ? ORDER BY d.number DESC LIMIT 1",
            (cutoff_us,),
        )
        return None if row is None else _new_digest(row)

    def delete_pruned(self, through_seq: int, *, rows_max: int) -> int:
        with self._transaction():
            cursor = self.connection.execute(
                "DELETE FROM audit_records WHERE seq IN (SELECT seq FROM audit_records "
                "WHERE seq <= ? AND seq <= (SELECT pruned_through_seq FROM audit_state) "
                "ORDER BY seq LIMIT ?)",
                (through_seq, rows_max),
            )
            return int(cursor.rowcount)

    # ---- peers -----------------------------------------------------------------------

    def peer_position(self, peer_region: str) -> int:
        row = self._one(
            "SELECT acked_number FROM audit_peer_positions WHERE peer_region = ?", (peer_region,)
        )
        return 0 if row is None else int(row[0])

    def set_peer_position(self, peer_region: str, acked_number: int, now_us: int) -> None:
        with self._transaction():
            self.connection.execute(
                "INSERT INTO audit_peer_positions VALUES (?, ?, ?) ON CONFLICT (peer_region) "
                "DO UPDATE SET acked_number = excluded.acked_number, "
                "updated_at_us = excluded.updated_at_us",
                (peer_region, acked_number, now_us),
            )

    def store_peer_digests(
        self,
        origin_region: str,
        keys: Sequence[tuple[str, bytes]],
        digests: Sequence[SignedDigest],
        now_us: int,
    ) -> None:
        with self._transaction():
            self.connection.executemany(
                "INSERT OR IGNORE INTO audit_peer_keys VALUES (?, ?, ?, ?)",
                [(origin_region, key_id, public_key, now_us) for key_id, public_key in keys],
            )
            self.connection.executemany(
                "INSERT OR IGNORE INTO audit_peer_digests VALUES (?, ?, ?, ?, ?, ?)",
                [(origin_region, d.number, d.key_id, d.body, d.signature, now_us) for d in digests],
            )

    def peer_digests(
        self, origin_region: str, *, after_number: int, limit: int
    ) -> list[SignedDigest]:
        rows = self._all(
            "SELECT number, body, signature, key_id FROM audit_peer_digests "
            "WHERE origin_region = ? AND number > ? ORDER BY number LIMIT ?",
            (origin_region, after_number, limit),
        )
        return [SignedDigest(row[0], row[1], bytes(row[2]), row[3]) for row in rows]

    def peer_keys(self, origin_region: str) -> list[tuple[str, bytes]]:
        rows = self._all(
            "SELECT key_id, public_key FROM audit_peer_keys WHERE origin_region = ? "
            "ORDER BY first_seen_us",
            (origin_region,),
        )
        return [(row[0], bytes(row[1])) for row in rows]

    def peer_regions(self) -> list[str]:
        rows = self._all("SELECT DISTINCT origin_region FROM audit_peer_digests ORDER BY 1")
        return [row[0] for row in rows]

    # ---- usage -----------------------------------------------------------------------

    def usage_rows(self, *, first_day: str, last_day: str) -> list[UsageRow]:
        rows = self._all(
            "SELECT day, key_arn, operation, requests, failures FROM usage_daily "
            "WHERE day >= ? AND day <= ? ORDER BY day, key_arn, operation",
            (first_day, last_day),
        )
        return [UsageRow(*row) for row in rows]

    def last_use(self, key_arn: str) -> LastUse | None:
        row = self._one(
            "SELECT key_arn, operation, used_at_us, event_id, request_id FROM key_last_usage "
            "WHERE key_arn = ?",
            (key_arn,),
        )
        return None if row is None else LastUse(*row)

    def last_uses(self) -> list[LastUse]:
        rows = self._all(
            "SELECT key_arn, operation, used_at_us, event_id, request_id FROM key_last_usage"
        )
        return [LastUse(*row) for row in rows]

    def key_inventory(self) -> list[KeyInventoryRow]:
        # Read-only use of the key store's table: the usage report needs the keys that
        # exist (billed per key-month) beside the counters.
        rows = self._all("SELECT arn, key_state, created_at_us FROM keys ORDER BY arn")
        return [KeyInventoryRow(*row) for row in rows]

    def key_state_counts(self) -> dict[str, int]:
        rows = self._all("SELECT key_state, COUNT(*) FROM keys GROUP BY key_state")
        return {row[0]: int(row[1]) for row in rows}


class _Transaction:
    """``BEGIN IMMEDIATE … COMMIT``, rolled back if the block raises or COMMIT fails."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            try:
                self._connection.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._connection.in_transaction:
            # SQLite may have rolled back on its own (disk full, I/O error).
            with contextlib.suppress(sqlite3.Error):
                self._connection.execute("ROLLBACK")


_ROWS_PER_STATEMENT = 500


def _chunks(rows: list[T]) -> list[list[T]]:
    return [
        rows[start : start + _ROWS_PER_STATEMENT]
        for start in range(0, len(rows), _ROWS_PER_STATEMENT)
    ]


def _latest_uses(uses: list[LastUse]) -> list[LastUse]:
    """One row per key (a multi-row upsert may not name the same key twice)."""
    latest: dict[str, LastUse] = {}
    for use in uses:
        if use.key_arn not in latest or use.used_at_us >= latest[use.key_arn].used_at_us:
            latest[use.key_arn] = use
    return list(latest.values())


def _index_values(index: RecordIndex) -> tuple[Any, ...]:
    return (
        index.event_time_us,
        index.event_id,
        index.request_id,
        index.event_type,
        index.event_name,
        index.principal_arn,
        index.key_arn,
        index.related_key_arn,
        index.outcome,
        index.error_code,
    )


def _record(row: Any) -> StoredRecord:
    return StoredRecord(
        seq=row[0],
        prev_hash=bytes(row[1]),
        hash=bytes(row[2]),
        body=row[3],
        columns=RecordIndex(*row[4:14]),
    )


def _new_digest(row: Any) -> NewDigest:
    return NewDigest(
        digest=SignedDigest(number=row[0], body=row[4], signature=bytes(row[5]), key_id=row[3]),
        last_seq=row[1],
        sealed_at_us=row[2],
    )
