"""SQL for idempotency tokens (table ``idempotency_tokens``, migration 7).

The reservation is written by ``SqliteStore.write()`` inside the transaction of the
change it guards (``reserve_pending_token``); the outcome follows in a transaction of
its own (``SqliteIdempotencyRecords``). See ``server/domain/idempotency.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import aiosqlite

from meridian.server.domain.idempotency import (
    PENDING_TOKEN,
    IdempotencyRecord,
    PendingToken,
    TokenHeldElsewhere,
)
from meridian.server.storage.repository import from_us, to_us

__all__ = ["IDEMPOTENCY_SCHEMA", "SqliteIdempotencyRecords", "reserve_pending_token"]

IDEMPOTENCY_SCHEMA = """
CREATE TABLE idempotency_tokens (
    principal_arn TEXT NOT NULL,
    token TEXT NOT NULL,
    operation TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    created_at_us INTEGER NOT NULL,
    response_type TEXT,
    response BLOB,
    error_reason TEXT,
    error_message TEXT,
    PRIMARY KEY (principal_arn, token)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_tokens_by_age ON idempotency_tokens (created_at_us);
"""

# Expired records forgotten per stored outcome.
FORGET_BATCH_RECORDS_MAX = 100

WriteTransaction = Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]


async def reserve_pending_token(connection: aiosqlite.Connection) -> PendingToken | None:
    """Inside a write transaction: record the running call's token, if it has one not
    yet recorded. Returns it so the store can mark it reserved once COMMIT succeeded."""
    pending = PENDING_TOKEN.get()
    if pending is None or pending.reserved:
        return None
    if pending.live_after is not None:
        # Several workers: another may have reserved the token since this one looked.
        # This transaction holds SQLite's write lock, so the answer cannot change
        # before COMMIT; raising rolls the whole change back.
        rows = await _all(
            connection,
            "SELECT created_at_us FROM idempotency_tokens WHERE principal_arn = ? AND token = ?",
            (pending.principal_arn, pending.token),
        )
        if rows and rows[0][0] >= to_us(pending.live_after):
            raise TokenHeldElsewhere()
    # REPLACE: the guard found no live record before the call ran, so a row still
    # there is an expired one that may be reused.
    await connection.execute(
        "INSERT OR REPLACE INTO idempotency_tokens "
        "(principal_arn, token, operation, request_digest, created_at_us) VALUES (?, ?, ?, ?, ?)",
        (
            pending.principal_arn,
            pending.token,
            pending.operation,
            pending.request_digest,
            to_us(pending.created_at),
        ),
    )
    return pending


class SqliteIdempotencyRecords:
    """The domain's ``IdempotencyRecords`` over the store's serialised writer."""

    def __init__(self, write: WriteTransaction) -> None:
        self._write = write

    async def find(
        self, principal_arn: str, token: str, *, not_before: datetime
    ) -> IdempotencyRecord | None:
        # Through the writer: it sees every committed outcome, and token lookups are as
        # rare as the creating calls that make them.
        async with self._write() as connection:
            rows = await _all(
                connection,
                "SELECT operation, request_digest, created_at_us, response_type, response, "
                "error_reason, error_message FROM idempotency_tokens "
                "WHERE principal_arn = ? AND token = ? AND created_at_us >= ?",
                (principal_arn, token, to_us(not_before)),
            )
        if not rows:
            return None
        row = rows[0]
        return IdempotencyRecord(
            operation=row[0],
            request_digest=bytes(row[1]),
            created_at=from_us(row[2]),
            response_type=row[3],
            response=None if row[4] is None else bytes(row[4]),
            error_reason=row[5],
            error_message=row[6],
        )

    async def store_response(
        self,
        pending: PendingToken,
        response_type: str,
        response: bytes,
        *,
        forget_before: datetime,
    ) -> None:
        async with self._write() as connection:
            await connection.execute(
                "UPDATE idempotency_tokens SET response_type = ?, response = ? "
                "WHERE principal_arn = ? AND token = ?",
                (response_type, response, pending.principal_arn, pending.token),
            )
            await _forget(connection, forget_before)

    async def store_error(
        self, pending: PendingToken, reason: str, message: str, *, forget_before: datetime
    ) -> None:
        async with self._write() as connection:
            await connection.execute(
                "UPDATE idempotency_tokens SET error_reason = ?, error_message = ? "
                "WHERE principal_arn = ? AND token = ?",
                (reason, message, pending.principal_arn, pending.token),
            )
            await _forget(connection, forget_before)


async def _forget(connection: aiosqlite.Connection, before: datetime) -> None:
    # A bounded batch per stored outcome: the table shrinks as fast as it grows, and no
    # single call pays for a long backlog.
    await connection.execute(
        "DELETE FROM idempotency_tokens WHERE (principal_arn, token) IN ("
        "SELECT principal_arn, token FROM idempotency_tokens "
        "WHERE created_at_us < ? ORDER BY created_at_us LIMIT ?)",
        (to_us(before), FORGET_BATCH_RECORDS_MAX),
    )


async def _all(
    connection: aiosqlite.Connection, sql: str, parameters: tuple[object, ...]
) -> list[aiosqlite.Row]:
    async with connection.execute(sql, parameters) as cursor:
        return list(await cursor.fetchall())
