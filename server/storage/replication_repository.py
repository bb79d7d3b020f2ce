"""SQL for multi-Region keys and the replication log (the tables of migration 2).

The repositories work on a connection they are given, so that inside
``SqliteStore.write()`` they share its transaction: an outbox entry commits with the change
it records, an inbound position with the entries it covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from meridian.server.domain import identifiers
from meridian.server.domain.model import Key, KeyVersion
from meridian.server.domain.multi_region import (
    LocalMeta,
    Record,
    SharedState,
)
from meridian.server.domain.multi_region_codec import (
    decode_meta,
    decode_state,
    encode_meta,
    encode_record,
    encode_state,
)
from meridian.server.storage.repository import _KEY_COLUMNS, _key_from_row, from_us, to_us

# Key ids per ``IN (...)`` list of a bulk read: far below SQLite's bound on parameters
# (32,766), and small enough that one statement never holds the thread for long.
KEY_IDS_PER_QUERY_MAX = 500


@dataclass(frozen=True, slots=True)
class LogBounds:
    log_id: bytes
    first_retained_seq: int
    head_seq: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    key_id: str
    epoch: int
    created_at_us: int
    record: bytes


@dataclass(frozen=True, slots=True)
class InboundRow:
    origin_region: str
    log_id: bytes
    applied_seq: int
    applied_at_us: int


@dataclass(frozen=True, slots=True)
class PeerRow:
    region: str
    signing_public_key: bytes | None
    wrap_x25519_public_key: bytes | None
    wrap_mlkem_public_key: bytes | None
    pinned_at_us: int | None
    acked_log_id: bytes | None
    acked_seq: int
    acked_at_us: int | None


class SqliteReplicationRepository:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    # Every statement is one hop to aiosqlite's thread (execute_fetchall), not three
    # (execute, fetch, close): on a busy machine each hop waits for the scheduler, and the
    # replication paths run many small reads.
    async def _one(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        rows = await self._db.execute_fetchall(sql, parameters)
        return next(iter(rows), None)

    async def _all(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, parameters))

    async def _all_in(self, sql: str, key_ids: Iterable[str]) -> list[Any]:
        """``sql`` with one ``IN ({ids})`` list, run over the distinct ``key_ids`` in chunks."""
        distinct = sorted(set(key_ids))
        rows: list[Any] = []
        for start in range(0, len(distinct), KEY_IDS_PER_QUERY_MAX):
            chunk = distinct[start : start + KEY_IDS_PER_QUERY_MAX]
            rows.extend(await self._all(sql.format(ids=", ".join("?" * len(chunk))), chunk))
        return rows

    # ---- bulk reads (one statement per chunk of keys; a batch reads everything at once) --

    async def states_of(self, key_ids: Iterable[str]) -> dict[str, tuple[SharedState, LocalMeta]]:
        rows = await self._all_in(
            "SELECT key_id, state, meta FROM mrk_state WHERE key_id IN ({ids})", key_ids
        )
        return {row[0]: (decode_state(bytes(row[1])), decode_meta(bytes(row[2]))) for row in rows}

    async def keys_with_live_member(self, key_ids: Iterable[str], region: str) -> set[str]:
        """Those of ``key_ids`` whose stored view has ``region`` as a live member: what a
        shipper asks of the keys whose record does not name its peer, answered inside
        SQLite (JSON1) without decoding whole views into Python."""
        if not identifiers.is_valid_region(region):
            raise ValueError("bad region name")
        # Views are canonical JSON text in a BLOB column: read as text (a blob would be
        # SQLite's binary JSONB to newer versions). The region name was checked above
        # (letters, digits, dashes), so it is safe inside the statement.
        condition = f"json_extract(CAST(state AS TEXT), '$.members.\"{region}\".deleted') = 0"
        rows = await self._all_in(
            f"SELECT key_id FROM mrk_state WHERE key_id IN ({{ids}}) AND {condition}",  # noqa: S608
            key_ids,
        )
        return {row[0] for row in rows}

    async def keys_of(self, key_ids: Iterable[str]) -> dict[str, Key]:
        rows = await self._all_in(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id IN ({{ids}})",  # noqa: S608
            key_ids,
        )
        return {row[0]: _key_from_row(row) for row in rows}

    async def versions_of(self, key_ids: Iterable[str]) -> dict[str, list[KeyVersion]]:
        rows = await self._all_in(
            "SELECT key_id, material_id, created_at_us, wrapped_material FROM key_versions "
            "WHERE key_id IN ({ids})",
            key_ids,
        )
        versions: dict[str, list[KeyVersion]] = {}
        for row in rows:
            versions.setdefault(row[0], []).append(
                KeyVersion(
                    key_id=row[0],
                    material_id=bytes(row[1]),
                    created_at=from_us(row[2]),
                    wrapped_material=bytes(row[3]),
                )
            )
        return versions

    async def wrapped_materials_of(
        self, key_ids: Iterable[str]
    ) -> dict[str, list[tuple[bytes, bytes]]]:
        """Per key, its stored versions' ``(material id, wrapped material)``: what a
        shipper seals (``versions_of`` without the rest of each row)."""
        rows = await self._all_in(
            "SELECT key_id, material_id, wrapped_material FROM key_versions "
            "WHERE key_id IN ({ids})",
            key_ids,
        )
        found: dict[str, list[tuple[bytes, bytes]]] = {}
        for row in rows:
            found.setdefault(row[0], []).append((bytes(row[1]), bytes(row[2])))
        return found

    async def held_material_ids_of(self, key_ids: Iterable[str]) -> dict[str, frozenset[bytes]]:
        rows = await self._all_in(
            "SELECT key_id, material_id FROM key_versions WHERE key_id IN ({ids})", key_ids
        )
        held: dict[str, set[bytes]] = {}
        for row in rows:
            held.setdefault(row[0], set()).add(bytes(row[1]))
        return {key_id: frozenset(ids) for key_id, ids in held.items()}

    # ---- multi-Region key views ---------------------------------------------------------

    async def get_state(self, key_id: str) -> tuple[SharedState, LocalMeta] | None:
        row = await self._one("SELECT state, meta FROM mrk_state WHERE key_id = ?", (key_id,))
        if row is None:
            return None
        return decode_state(bytes(row[0])), decode_meta(bytes(row[1]))

    async def states_after(
        self, after_key_id: str, *, limit: int
    ) -> list[tuple[SharedState, LocalMeta]]:
        rows = await self._all(
            "SELECT state, meta FROM mrk_state WHERE key_id > ? ORDER BY key_id LIMIT ?",
            (after_key_id, limit),
        )
        return [(decode_state(bytes(row[0])), decode_meta(bytes(row[1]))) for row in rows]

    async def pending_states(self, *, limit: int) -> list[SharedState]:
        rows = await self._all(
            "SELECT state FROM mrk_state WHERE pending = 1 ORDER BY key_id LIMIT ?", (limit,)
        )
        return [decode_state(bytes(row[0])) for row in rows]

    async def count_states(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM mrk_state")
        return int(row[0])

    async def held_material_ids(self, key_id: str) -> frozenset[bytes]:
        rows = await self._all("SELECT material_id FROM key_versions WHERE key_id = ?", (key_id,))
        return frozenset(bytes(row[0]) for row in rows)

    async def versions(self, key_id: str) -> list[KeyVersion]:
        rows = await self._all(
            "SELECT material_id, created_at_us, wrapped_material FROM key_versions "
            "WHERE key_id = ?",
            (key_id,),
        )
        return [
            KeyVersion(
                key_id=key_id,
                material_id=bytes(row[0]),
                created_at=from_us(row[1]),
                wrapped_material=bytes(row[2]),
            )
            for row in rows
        ]

    # ---- the log -------------------------------------------------------------------------

    async def log_bounds(self) -> LogBounds | None:
        row = await self._one(
            "SELECT log_id, first_retained_seq, head_seq FROM replication_log WHERE singleton = 1"
        )
        if row is None:
            return None
        return LogBounds(log_id=bytes(row[0]), first_retained_seq=row[1], head_seq=row[2])

    async def outbox(self, first_seq: int, last_seq: int) -> list[OutboxRow]:
        rows = await self._all(
            "SELECT seq, key_id, epoch, created_at_us, record FROM replication_outbox "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first_seq, last_seq),
        )
        return [OutboxRow(row[0], row[1], row[2], row[3], bytes(row[4])) for row in rows]

    async def outbox_created_at_us(self, seq: int) -> int | None:
        row = await self._one("SELECT created_at_us FROM replication_outbox WHERE seq = ?", (seq,))
        return None if row is None else int(row[0])

    async def inbound(self, origin_region: str) -> InboundRow | None:
        row = await self._one(
            "SELECT origin_region, log_id, applied_seq, applied_at_us FROM replication_inbound "
            "WHERE origin_region = ?",
            (origin_region,),
        )
        return None if row is None else InboundRow(row[0], bytes(row[1]), row[2], row[3])

    async def inbound_all(self) -> list[InboundRow]:
        rows = await self._all(
            "SELECT origin_region, log_id, applied_seq, applied_at_us FROM replication_inbound "
            "ORDER BY origin_region"
        )
        return [InboundRow(row[0], bytes(row[1]), row[2], row[3]) for row in rows]

    async def identity_seeds(self) -> bytes | None:
        """This node's identity seeds, wrapped by the root key; None before the first start."""
        row = await self._one("SELECT wrapped_seeds FROM replication_identity WHERE singleton = 1")
        return None if row is None else bytes(row[0])

    async def peer(self, region: str) -> PeerRow | None:
        row = await self._one(
            "SELECT region, signing_public_key, wrap_x25519_public_key, wrap_mlkem_public_key, "
            "pinned_at_us, acked_log_id, acked_seq, acked_at_us FROM replication_peers "
            "WHERE region = ?",
            (region,),
        )
        return None if row is None else _peer(row)

    async def peers(self) -> list[PeerRow]:
        rows = await self._all(
            "SELECT region, signing_public_key, wrap_x25519_public_key, wrap_mlkem_public_key, "
            "pinned_at_us, acked_log_id, acked_seq, acked_at_us FROM replication_peers "
            "ORDER BY region"
        )
        return [_peer(row) for row in rows]


class SqliteReplicationWriter(SqliteReplicationRepository):
    """The write half; use only on the connection of an open ``SqliteStore.write()``."""

    async def put_state(self, state: SharedState, meta: LocalMeta, *, now_us: int) -> None:
        await self.put_states([(state, meta)], now_us=now_us)

    async def put_states(
        self,
        states: Sequence[tuple[SharedState, LocalMeta]],
        *,
        now_us: int,
        encoded: Sequence[bytes] | None = None,
    ) -> None:
        """Upsert many views in one statement (one thread hop). ``encoded``: each view's
        ``encode_state``, if the caller has it already."""
        if not states:
            return
        if encoded is None:
            encoded = [encode_state(state) for state, _meta in states]
        await self._db.executemany(
            "INSERT INTO mrk_state "
            "(key_id, epoch, primary_region, pending, state, meta, updated_at_us) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
            "epoch = excluded.epoch, primary_region = excluded.primary_region, "
            "pending = excluded.pending, state = excluded.state, meta = excluded.meta, "
            "updated_at_us = excluded.updated_at_us",
            [
                (
                    state.key_id,
                    state.epoch,
                    state.primary_region,
                    int(state.settings.pending_material_id is not None),
                    state_bytes,
                    encode_meta(meta),
                    now_us,
                )
                for (state, meta), state_bytes in zip(states, encoded, strict=True)
            ],
        )

    async def put_meta(self, key_id: str, meta: LocalMeta) -> None:
        await self._db.execute(
            "UPDATE mrk_state SET meta = ? WHERE key_id = ?", (encode_meta(meta), key_id)
        )

    async def ensure_log(self, log_id: bytes) -> LogBounds:
        """The log's bounds, creating the log with ``log_id`` if this store has none."""
        await self._db.execute(
            "INSERT OR IGNORE INTO replication_log (singleton, log_id, head_seq, "
            "first_retained_seq) VALUES (1, ?, 0, 1)",
            (log_id,),
        )
        bounds = await self.log_bounds()
        assert bounds is not None
        return bounds

    async def append_record(self, record: Record, *, now_us: int) -> int:
        """Append ``record`` to the outbox; returns its sequence number."""
        return (await self.append_records([record], now_us=now_us))[-1]

    async def append_records(
        self,
        records: Sequence[Record],
        *,
        now_us: int,
        state_bytes: Sequence[bytes | None] | None = None,
    ) -> list[int]:
        """Append ``records`` in order, in three statements whatever their number; returns
        their sequence numbers (consecutive). ``state_bytes``: per record, its view's
        ``encode_state`` if the caller has it already (None: encode it here)."""
        if not records:
            return []
        if state_bytes is None:
            state_bytes = [None] * len(records)
        row = await self._one("SELECT head_seq FROM replication_log WHERE singleton = 1")
        if row is None:
            raise AssertionError("the replication log is not initialised")
        first = int(row[0]) + 1
        seqs = list(range(first, first + len(records)))
        await self._db.execute(
            "UPDATE replication_log SET head_seq = ? WHERE singleton = 1", (seqs[-1],)
        )
        await self._db.executemany(
            "INSERT INTO replication_outbox (seq, key_id, epoch, created_at_us, record) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (
                    seq,
                    record.state.key_id,
                    record.state.epoch,
                    now_us,
                    encode_record(record, state_bytes=encoded),
                )
                for seq, record, encoded in zip(seqs, records, state_bytes, strict=True)
            ],
        )
        return seqs

    async def prune_outbox(self, through_seq: int) -> int:
        """Delete entries up to ``through_seq``; returns how many went."""
        cursor = await self._db.execute(
            "DELETE FROM replication_outbox WHERE seq <= ?", (through_seq,)
        )
        await self._db.execute(
            "UPDATE replication_log SET first_retained_seq = MAX(first_retained_seq, ?) "
            "WHERE singleton = 1",
            (through_seq + 1,),
        )
        return cursor.rowcount

    async def insert_identity_seeds(self, wrapped: bytes, *, now_us: int) -> None:
        await self._db.execute(
            "INSERT INTO replication_identity (singleton, wrapped_seeds, created_at_us) "
            "VALUES (1, ?, ?)",
            (wrapped, now_us),
        )

    async def insert_version(self, version: KeyVersion) -> None:
        await self.insert_versions([version])

    async def insert_versions(self, versions: Sequence[KeyVersion]) -> None:
        if not versions:
            return
        await self._db.executemany(
            "INSERT OR IGNORE INTO key_versions (key_id, material_id, created_at_us, "
            "wrapped_material) VALUES (?, ?, ?, ?)",
            [
                (
                    version.key_id,
                    version.material_id,
                    to_us(version.created_at),
                    version.wrapped_material,
                )
                for version in versions
            ],
        )

    async def set_inbound(
        self, origin_region: str, log_id: bytes, seq: int, *, now_us: int
    ) -> None:
        await self._db.execute(
            "INSERT INTO replication_inbound (origin_region, log_id, applied_seq, applied_at_us) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (origin_region) DO UPDATE SET "
            "log_id = excluded.log_id, applied_seq = excluded.applied_seq, "
            "applied_at_us = excluded.applied_at_us",
            (origin_region, log_id, seq, now_us),
        )

    async def pin_peer(
        self, region: str, *, signing: bytes, x25519: bytes, mlkem: bytes, now_us: int
    ) -> None:
        await self._db.execute(
            "INSERT INTO replication_peers (region, signing_public_key, wrap_x25519_public_key, "
            "wrap_mlkem_public_key, pinned_at_us, acked_seq) VALUES (?, ?, ?, ?, ?, 0) "
            "ON CONFLICT (region) DO UPDATE SET signing_public_key = excluded.signing_public_key, "
            "wrap_x25519_public_key = excluded.wrap_x25519_public_key, "
            "wrap_mlkem_public_key = excluded.wrap_mlkem_public_key, "
            "pinned_at_us = excluded.pinned_at_us",
            (region, signing, x25519, mlkem, now_us),
        )

    async def unpin_peer(self, region: str) -> None:
        await self._db.execute(
            "UPDATE replication_peers SET signing_public_key = NULL, "
            "wrap_x25519_public_key = NULL, wrap_mlkem_public_key = NULL, pinned_at_us = NULL "
            "WHERE region = ?",
            (region,),
        )

    async def record_ack(self, region: str, log_id: bytes, seq: int, *, now_us: int) -> None:
        await self._db.execute(
            "INSERT INTO replication_peers (region, acked_log_id, acked_seq, acked_at_us) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (region) DO UPDATE SET "
            "acked_log_id = excluded.acked_log_id, acked_seq = excluded.acked_seq, "
            "acked_at_us = excluded.acked_at_us",
            (region, log_id, seq, now_us),
        )


def _optional_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _peer(row: Any) -> PeerRow:
    return PeerRow(
        region=row[0],
        signing_public_key=_optional_bytes(row[1]),
        wrap_x25519_public_key=_optional_bytes(row[2]),
        wrap_mlkem_public_key=_optional_bytes(row[3]),
        pinned_at_us=row[4],
        acked_log_id=_optional_bytes(row[5]),
        acked_seq=row[6],
        acked_at_us=row[7],
    )


__all__ = [
    "InboundRow",
    "LogBounds",
    "OutboxRow",
    "PeerRow",
    "SqliteReplicationRepository",
    "SqliteReplicationWriter",
    "from_us",
]
