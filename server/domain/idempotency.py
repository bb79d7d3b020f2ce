"""Idempotency tokens: a retried creating call acts once (DESIGN.md §6).

A client sends a token with every call that is not safe to repeat (CreateKey,
CreateAlias, ScheduleKeyDeletion, ...) and sends the same token when it retries the
call after an unknown outcome. The node remembers, per principal and token, the
request's digest and its outcome, and answers a retry with the remembered outcome
instead of acting again.

The record is *reserved in the same transaction as the change it guards*: the API
layer puts a ``PendingToken`` in ``PENDING_TOKEN`` while the operation runs, and the
store writes it inside the operation's first write transaction. So a SIGKILL can
never leave a change without its token (a retry would act twice) nor a token without
its change (a retry would be refused although nothing happened). The outcome is
stored right after; if the node dies in between, a retry learns that the call took
effect but that its answer is lost (``OutcomeLost``).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "PENDING_TOKEN",
    "IdempotencyRecord",
    "IdempotencyRecords",
    "PendingToken",
    "TokenHeldElsewhere",
]

TOKEN_CHARS_MAX = 128


@dataclass
class PendingToken:
    """A token whose call is running; ``reserved`` once its record is committed."""

    principal_arn: str
    token: str
    operation: str
    request_digest: bytes
    created_at: datetime
    reserved: bool = False
    # Set when other worker processes share the store (server/workers.py): a stored
    # record of the same token made at or after this time belongs to a call another
    # worker runs or ran, so the reservation raises TokenHeldElsewhere instead of
    # replacing it. None: the guard already saw that no live record exists.
    live_after: datetime | None = None


class TokenHeldElsewhere(Exception):
    """Another worker process reserved this token first: wait for its outcome."""


# Set by the API layer around one operation; read by the store when it commits. A
# context variable, like the interceptor's CURRENT_CALLER: it follows the request's
# task and is invisible to every other request and to background tasks.
PENDING_TOKEN: contextvars.ContextVar[PendingToken | None] = contextvars.ContextVar(
    "meridian_pending_idempotency_token", default=None
)


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    operation: str
    request_digest: bytes
    created_at: datetime
    # Exactly one of the two outcomes, or neither when the node stopped between the
    # change and storing its outcome.
    response_type: str | None  # the response message's full protobuf name
    response: bytes | None
    error_reason: str | None
    error_message: str | None


class IdempotencyRecords(Protocol):
    async def find(
        self, principal_arn: str, token: str, *, not_before: datetime
    ) -> IdempotencyRecord | None:
        """The record of ``token``, unless it was made before ``not_before``."""
        ...

    async def store_response(
        self,
        pending: PendingToken,
        response_type: str,
        response: bytes,
        *,
        forget_before: datetime,
    ) -> None:
        """Store a call's response; in the same transaction, forget a bounded number of
        records made before ``forget_before``."""
        ...

    async def store_error(
        self, pending: PendingToken, reason: str, message: str, *, forget_before: datetime
    ) -> None: ...
