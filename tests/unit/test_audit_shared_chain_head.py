"""The head a worker chains onto when several workers share one audit chain
(``AuditDatabase.commit_on_chain``): read in one statement, the same as the separate
reads of the state row, the last record and the last digest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from meridian.server.audit.chain import ChainHead
from meridian.server.audit.ports import CommitBatch, NewDigest, TrailState
from meridian.server.storage.audit_database import AuditDatabase
from meridian.server.storage.audit_schema import AUDIT_SCHEMA


def _database(tmp_path: Path) -> AuditDatabase:
    path = tmp_path / "audit.sqlite3"
    connection = sqlite3.connect(path)
    for statement in AUDIT_SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.commit()
    connection.close()
    database = AuditDatabase.open(path)
    database.create_state(
        TrailState("chain", "us-east-1", 0, ChainHead(3, b"h" * 32), 0, b"\0" * 32)
    )
    return database


def _record(database: AuditDatabase, seq: int, digest: bytes) -> None:
    database.connection.execute(
        "INSERT INTO audit_records VALUES (?, 0, 'e', 'r', 't', 'n', 'p', '', '', 'ok', '', "
        "'{}', ?, ?)",
        (seq, b"p" * 32, digest),
    )


def _seen_by_commit(database: AuditDatabase) -> tuple[ChainHead, NewDigest | None]:
    seen: list[tuple[ChainHead, NewDigest | None]] = []

    def build(head: ChainHead, digest: NewDigest | None) -> CommitBatch:
        seen.append((head, digest))
        return CommitBatch(head=head)

    database.commit_on_chain(build)
    return seen[0]


def test_an_empty_chain_is_chained_onto_the_state_rows_head(tmp_path: Path) -> None:
    database = _database(tmp_path)
    try:
        assert _seen_by_commit(database) == (ChainHead(3, b"h" * 32), None)
    finally:
        database.close()


def test_the_head_is_the_last_record_when_the_state_row_is_behind(tmp_path: Path) -> None:
    database = _database(tmp_path)
    try:
        _record(database, 4, b"a" * 32)
        _record(database, 5, b"b" * 32)
        database.connection.execute(
            "INSERT INTO audit_digests VALUES (1, 4, 10, 'k1', 'first', x'01')"
        )
        database.connection.execute(
            "INSERT INTO audit_digests VALUES (2, 5, 20, 'k1', 'second', x'02')"
        )
        head, digest = _seen_by_commit(database)
        assert head == ChainHead(5, b"b" * 32)
        assert digest == database.last_digest()
        assert digest is not None and digest.digest.number == 2 and digest.last_seq == 5
    finally:
        database.close()


def test_a_state_row_ahead_of_the_records_wins(tmp_path: Path) -> None:
    # Pruned records, or a head moved past records deleted since: never reuse a number.
    database = _database(tmp_path)
    try:
        _record(database, 2, b"a" * 32)
        assert _seen_by_commit(database)[0] == ChainHead(3, b"h" * 32)
    finally:
        database.close()
