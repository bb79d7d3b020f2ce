"""Server side of idempotency tokens: a retried call with the same token acts once.

The SDK sends ``x-meridian-idempotency-token`` (gRPC metadata, so no AWS-shaped
message gains a field) with every call that is not safe to repeat, and the same token
on each retry of that call. For such a call this guard, in order:

1. waits for any call with the same principal and token still running in this node
   (a retry that overtook a slow first attempt waits for its outcome; with several
   worker processes, a call running in another worker is seen through the store: its
   reservation, and the outcome the retry polls for);
2. answers from the stored record if there is one: the same response bytes, or the
   same error; a token reused for a different request is a ValidationException;
3. otherwise runs the operation with a ``PendingToken`` in context, so the store
   reserves the token in the operation's own write transaction, then stores the
   outcome.

The work runs shielded from cancellation: a client that gives up (deadline) cancels
its RPC, but the operation and the recording of its outcome still finish, so the
retry finds the answer instead of an outcome lost half-way.

Tokens are scoped to the principal (one caller cannot replay another's answers) and
kept for ``RETENTION``; authorization hooks run before this guard, so a replay is
authorized like any call.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc
from meridian.server.api.interceptor import CURRENT_CALLER, Context
from meridian.server.domain.clock import Clock
from meridian.server.domain.errors import (
    KmsError,
    KMSInternalException,
    KMSInvalidStateException,
    ValidationException,
    all_error_classes,
)
from meridian.server.domain.idempotency import (
    PENDING_TOKEN,
    TOKEN_CHARS_MAX,
    IdempotencyRecord,
    IdempotencyRecords,
    PendingToken,
    TokenHeldElsewhere,
)

__all__ = ["TOKEN_METADATA_KEY", "IdempotencyGuard", "deduplicating"]

TOKEN_METADATA_KEY = "x-meridian-idempotency-token"  # noqa: S105 - a header name
# A retry comes within a call's deadline, seconds later; a day is generous and keeps
# the table small.
RETENTION = timedelta(hours=24)

# How long a retry waits for another worker's call with the same token to finish (a
# creating call takes milliseconds; an RSA-4096 CreateKey about a second), and how
# often it looks meanwhile.
OUTCOME_WAIT_S = 30.0
OUTCOME_POLL_S = 0.02
_TOKEN = re.compile(rf"^[A-Za-z0-9_-]{{1,{TOKEN_CHARS_MAX}}}$")

Handler = Callable[[Any, Context], Awaitable[Any]]


class IdempotencyGuard:
    def __init__(
        self,
        records: IdempotencyRecords,
        clock: Clock,
        *,
        retention: timedelta = RETENTION,
        shared_store: bool = False,
    ) -> None:
        self._records = records
        self._clock = clock
        self._retention = retention
        # Other worker processes share the store (server/workers.py): the in-process
        # lock below cannot see their calls, so the reservation checks for them and a
        # retry waits for their outcome in the store instead.
        self._shared_store = shared_store
        # Calls in flight per (principal, token), with how many wait on each lock; an
        # entry lives only while someone holds or waits for it.
        self._running: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def wrap(self, operation: str, handler: Handler, response_class: type[Message]) -> Handler:
        async def deduplicated(request: Any, context: Context) -> Any:
            token = _token(context)
            if token is None:
                return await handler(request, context)
            principal_arn = CURRENT_CALLER.get().principal_arn
            digest = _digest(operation, request)
            work = asyncio.ensure_future(
                self._once(
                    principal_arn,
                    token,
                    operation,
                    digest,
                    response_class,
                    handler,
                    request,
                    context,
                )
            )
            # A cancelled RPC must not cut the work (or the recording of its outcome) short.
            work.add_done_callback(_consume)
            return await asyncio.shield(work)

        return deduplicated

    async def _once(
        self,
        principal_arn: str,
        token: str,
        operation: str,
        digest: bytes,
        response_class: type[Message],
        handler: Handler,
        request: Any,
        context: Context,
    ) -> Any:
        async with self._exclusive((principal_arn, token)):
            now = self._clock.now()
            record = await self._records.find(
                principal_arn, token, not_before=now - self._retention
            )
            if record is not None and self._shared_store and not _has_outcome(record):
                # Reserved by a call another worker may still be running.
                record = await self._outcome(principal_arn, token, now - self._retention)
            if record is not None:
                return _replay(record, operation, digest, response_class)
            pending = PendingToken(
                principal_arn=principal_arn,
                token=token,
                operation=operation,
                request_digest=digest,
                created_at=now,
                live_after=now - self._retention if self._shared_store else None,
            )
            forget_before = now - self._retention
            reset = PENDING_TOKEN.set(pending)
            held_elsewhere = False
            try:
                response = await handler(request, context)
            except TokenHeldElsewhere:
                # Another worker reserved it after our look; this call's change was
                # rolled back with the reservation.
                held_elsewhere = True
            except KmsError as error:
                if pending.reserved:
                    await self._records.store_error(
                        pending, error.reason, error.message, forget_before=forget_before
                    )
                raise
            except Exception:
                if pending.reserved:
                    internal = KMSInternalException()
                    await self._records.store_error(
                        pending, internal.reason, internal.message, forget_before=forget_before
                    )
                raise
            finally:
                PENDING_TOKEN.reset(reset)
            if held_elsewhere:
                # Answer with that call's outcome (read with no token of ours pending).
                record = await self._outcome(principal_arn, token, now - self._retention)
                if record is None:
                    raise KMSInternalException()
                return _replay(record, operation, digest, response_class)
            # Only a call that changed something is recorded: one that did not (it
            # failed validation, or had nothing to do) is as safe to run again.
            if pending.reserved:
                await self._records.store_response(
                    pending,
                    response.DESCRIPTOR.full_name,
                    response.SerializeToString(),
                    forget_before=forget_before,
                )
            return response

    async def _outcome(
        self, principal_arn: str, token: str, not_before: datetime
    ) -> IdempotencyRecord | None:
        """The record once another worker stored its outcome, polling the store for at
        most ``OUTCOME_WAIT_S``; the last record read if that worker never does (it
        stopped between the change and its outcome: _replay says so)."""
        deadline = asyncio.get_running_loop().time() + OUTCOME_WAIT_S
        while True:
            record = await self._records.find(principal_arn, token, not_before=not_before)
            if record is None or _has_outcome(record):
                return record
            if asyncio.get_running_loop().time() >= deadline:
                return record
            await asyncio.sleep(OUTCOME_POLL_S)

    @asynccontextmanager
    async def _exclusive(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, waiting = self._running.get(key, (asyncio.Lock(), 0))
        self._running[key] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._running[key]
            if waiting == 1:
                del self._running[key]
            else:
                self._running[key] = (lock, waiting - 1)


def deduplicating(
    servicer: kms_pb2_grpc.KeyManagementServiceServicer, guard: IdempotencyGuard
) -> kms_pb2_grpc.KeyManagementServiceServicer:
    """A servicer for the gRPC server whose every RPC passes through ``guard``.

    Built from the service's descriptor, so RPCs added to the service later are
    covered without a change here.
    """
    service = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]
    methods = {
        method.name: staticmethod(
            guard.wrap(
                method.name, getattr(servicer, method.name), GetMessageClass(method.output_type)
            )
        )
        for method in service.methods
    }
    servicer_class = type(
        "DeduplicatingServicer", (kms_pb2_grpc.KeyManagementServiceServicer,), methods
    )
    wrapped: kms_pb2_grpc.KeyManagementServiceServicer = servicer_class()
    return wrapped


def _replay(
    record: IdempotencyRecord, operation: str, digest: bytes, response_class: type[Message]
) -> Message:
    if record.operation != operation or record.request_digest != digest:
        raise ValidationException("The idempotency token was already used for a different request")
    if record.response is not None:
        return response_class.FromString(record.response)
    if record.error_reason is not None:
        raise _error(record.error_reason, record.error_message or "")
    raise KMSInvalidStateException(
        f"The {operation} request with this idempotency token took effect, but the node "
        "stopped before it could record the answer; look the result up instead of retrying"
    )


def _has_outcome(record: IdempotencyRecord) -> bool:
    return record.response is not None or record.error_reason is not None


def _error(reason: str, message: str) -> KmsError:
    for error_class in all_error_classes():
        if error_class.reason == reason:
            return error_class(message)
    return KMSInternalException()


def _token(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_METADATA_KEY:
            if not isinstance(value, str) or not _TOKEN.match(value):
                raise ValidationException(
                    f"{TOKEN_METADATA_KEY} must be 1 to {TOKEN_CHARS_MAX} letters, digits, "
                    "'-' or '_'"
                )
            return value
    return None


def _digest(operation: str, request: Message) -> bytes:
    serialized = request.SerializeToString(deterministic=True)
    return hashlib.sha256(operation.encode() + b"\0" + serialized).digest()


def _consume(work: asyncio.Future[Any]) -> None:
    # The caller may be gone (cancelled); reading the outcome keeps asyncio from logging
    # "exception was never retrieved".
    if not work.cancelled():
        work.exception()
