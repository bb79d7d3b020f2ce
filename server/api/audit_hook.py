"""The audit CallHook: one durable record per call, before its response is sent.

``before`` (state-changing calls only) durably writes an *intent*; if it cannot, the
call is refused with DependencyTimeoutException and nothing has happened.
``after`` (every call: allowed, refused, unauthenticated, malformed) chains the record
and waits until it is durable. If that fails:

- nothing irreversible happened (a read, a crypto call, a refused or failed change):
  the caller gets DependencyTimeoutException (UNAVAILABLE, safe to retry) and the
  response (ciphertext, plaintext...) is withheld;
- a change was carried out: the caller gets KMSInternalException (outcome unknown,
  not retried blindly), and the intent written before it becomes a record with
  outcome ``Unknown`` as soon as the store works again (or at the next start).

What the call was about (key ARNs, alias, key material ids) comes from, in order:
the facts other hooks left (``key_arn`` and ``related_key_arn``, or ``key_arns``;
``key_material_id``), the response, and the request (key id fields, the
ciphertext's public header).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog
from google.protobuf.message import Message

from meridian.server.api import request_ids
from meridian.server.api.audit_documents import (
    READ_ONLY_OPERATIONS,
    CallSubject,
    api_call_document,
    shrink,
)
from meridian.server.api.interceptor import CallInfo
from meridian.server.audit.events import AuditEvent, AuditFormatError, to_us
from meridian.server.audit.sink import AuditUnavailable
from meridian.server.domain import identifiers
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto import blob as blob_recipe
from meridian.server.domain.errors import (
    DependencyTimeoutException,
    KmsError,
    KMSInternalException,
)

log = structlog.get_logger("meridian.audit")

# Keys of CallInfo.facts this hook reads or writes.
FACT_RECEIVED_AT = "audit.received_at"
FACT_INTENT = "audit.intent"
FACT_SEQ = "audit.seq"

# Request fields that name a key, most decisive first.
_KEY_FIELDS = ("key_id", "source_key_id", "target_key_id", "destination_key_id")
AliasLookup = Callable[[str], Awaitable[str | None]]


class ApiAuditTrail(Protocol):
    async def open_intent(self, request_id: str, event: AuditEvent) -> None: ...

    async def record(self, event: AuditEvent, *, intent_request_id: str | None = None) -> int: ...

    async def record_many(
        self, events: Sequence[tuple[AuditEvent, str | None]]
    ) -> list[int | AuditUnavailable]: ...


class AuditHook:
    def __init__(
        self,
        trail: ApiAuditTrail,
        *,
        region: str,
        account_id: str,
        clock: Clock,
        alias_lookup: AliasLookup,
        new_id: Callable[[], str] = request_ids.new_id,
    ) -> None:
        self._trail = trail
        self._region = region
        self._account_id = account_id
        self._clock = clock
        self._alias_lookup = alias_lookup
        self._new_id = new_id

    async def before(self, call: CallInfo) -> None:
        call.facts.setdefault(FACT_RECEIVED_AT, self._clock.now())
        if call.operation in READ_ONLY_OPERATIONS:
            return
        event = await self._event(call, None, None, pending=True)
        try:
            await self._trail.open_intent(call.request_id, event)
        except AuditUnavailable as failure:
            log.error("audit intent not written; call refused", error=str(failure))
            raise _unavailable() from None
        call.facts[FACT_INTENT] = True

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None:
        await self._record(call, await self._event(call, response, error), error)

    async def after_items(
        self, outcomes: Sequence[tuple[CallInfo, Any | None, KmsError | None]]
    ) -> list[KmsError | None]:
        """``after`` for the items of a batch: every record is built first, then all are
        handed to the trail as one unit and awaited together, so the writer commits them
        in one group (a record submitted while the next is still being built would
        commit alone), with one lock, one timer and no task per record."""
        built: list[AuditEvent | BaseException] = []
        for call, response, error in outcomes:
            try:
                built.append(await self._event(call, response, error))
            except Exception as failure:  # as CallPipeline does for a hook that crashes
                built.append(failure)
        chained = [
            (index, event)
            for index, event in enumerate(built)
            if not isinstance(event, BaseException)
        ]
        failures: list[BaseException | None] = [
            event if isinstance(event, BaseException) else None for event in built
        ]
        try:
            results: list[int | AuditUnavailable] = await self._trail.record_many(
                [(event, _intent_of(outcomes[index][0])) for index, event in chained]
            )
        except Exception as failure:  # a crash, not a refusal: each item's own failure
            results = []
            for index, _ in chained:
                failures[index] = failure
            chained = []
        for (index, _), result in zip(chained, results, strict=True):
            call, _, error = outcomes[index]
            if isinstance(result, AuditUnavailable):
                failures[index] = self._not_recorded(call, result, error)
            else:
                call.facts[FACT_SEQ] = result
        return [
            _as_hook_error(call, failure)
            for (call, _, _), failure in zip(outcomes, failures, strict=True)
        ]

    async def _record(self, call: CallInfo, event: AuditEvent, error: KmsError | None) -> None:
        intent = _intent_of(call)
        try:
            call.facts[FACT_SEQ] = await self._trail.record(event, intent_request_id=intent)
        except AuditUnavailable as failure:
            raise self._not_recorded(call, failure, error) from None

    def _not_recorded(
        self, call: CallInfo, failure: AuditUnavailable, error: KmsError | None
    ) -> KmsError:
        """What the caller is told when the call's record could not be written."""
        log.error(
            "audit record not written; call failed",
            request_id=call.request_id,
            operation=call.operation,
            error=str(failure),
        )
        if _intent_of(call) is not None and error is None:
            # The change was made; only its record is missing (the intent stands in).
            return KMSInternalException()
        return _unavailable()

    async def _event(
        self, call: CallInfo, response: Any | None, error: KmsError | None, *, pending: bool = False
    ) -> AuditEvent:
        received = call.facts.get(FACT_RECEIVED_AT)
        if not isinstance(received, datetime):
            received = self._clock.now()
        document = api_call_document(
            operation=call.operation,
            request=call.request,
            response=response,
            error=error,
            principal_arn=call.caller.principal_arn if call.caller else None,
            source_address=call.source_address,
            request_id=call.request_id,
            event_id=self._new_id(),
            received_at=received,
            region=self._region,
            account_id=self._account_id,
            subject=await self._subject(call, response),
            facts=call.facts,
            pending=pending,
        )
        # The record's time in µs as its eventTime text says it (to_us and format_time
        # agree for every aware datetime: tests/unit/test_audit_time.py); a naive one is
        # left to the parser.
        event_time_us = to_us(received) if received.tzinfo is not None else None
        try:
            return AuditEvent.from_document(document, event_time_us=event_time_us)
        except AuditFormatError:
            return AuditEvent.from_document(shrink(document), event_time_us=event_time_us)

    # ---- what the call was about ----------------------------------------------------

    async def _subject(self, call: CallInfo, response: Any | None) -> CallSubject:
        facts = call.facts
        arns: list[str] = []
        if isinstance(facts.get("key_arns"), list | tuple):
            arns = [str(arn) for arn in facts["key_arns"] if arn]
        elif facts.get("key_arn"):
            arns = [str(facts["key_arn"])]
            if facts.get("related_key_arn"):
                arns.append(str(facts["related_key_arn"]))
        alias_name = ""
        if not arns:
            arns = _response_key_arns(call.operation, response)
        if not arns:
            arns, alias_name = await self._request_key_arns(call.request)
        else:
            _, alias_name = await self._request_key_arns(call.request, resolve=False)
        material_ids = _material_ids(facts, response)
        return CallSubject(tuple(dict.fromkeys(arns)), alias_name, material_ids)

    async def _request_key_arns(
        self, request: Any, *, resolve: bool = True
    ) -> tuple[list[str], str]:
        arns: list[str] = []
        alias_name = ""
        for name in _KEY_FIELDS:
            text = _string_field(request, name)
            if not text:
                continue
            arn, alias = self._reference(text)
            if alias and not alias_name:
                alias_name = alias
                if resolve:
                    arn = await self._resolve_alias(alias)
            if arn:
                arns.append(arn)
        if not arns and resolve:
            blob = _field(request, "ciphertext_blob", b"")
            key_id = _blob_key_id(blob) if isinstance(blob, bytes) else ""
            if key_id:
                arns.append(identifiers.key_arn(self._region, self._account_id, key_id))
        return arns, alias_name

    def _reference(self, text: str) -> tuple[str, str]:
        """(key ARN, alias name) that ``text`` names, as far as it says itself."""
        if text.startswith("arn:"):
            try:
                arn = identifiers.parse_arn(text)
            except KmsError:
                return "", ""
            if arn.resource.startswith("key/"):
                return text, ""
            if arn.resource.startswith("alias/"):
                return "", arn.resource
            return "", ""
        if text.startswith("alias/"):
            return "", text
        if identifiers.is_key_id(text):
            return identifiers.key_arn(self._region, self._account_id, text), ""
        return "", ""

    async def _resolve_alias(self, alias_name: str) -> str:
        try:
            key_id = await self._alias_lookup(alias_name)
        except Exception:
            log.warning("alias lookup for the audit record failed", alias=alias_name)
            return ""
        return identifiers.key_arn(self._region, self._account_id, key_id) if key_id else ""


def _intent_of(call: CallInfo) -> str | None:
    """The request id of the call's intent, if one was written before it ran."""
    return call.request_id if call.facts.get(FACT_INTENT) else None


def _as_hook_error(call: CallInfo, outcome: BaseException | None) -> KmsError | None:
    if outcome is None or isinstance(outcome, KmsError):
        return outcome
    if not isinstance(outcome, Exception):
        raise outcome  # cancellation and the like are not an item's outcome
    log.error("audit hook crashed", request_id=call.request_id, exc_info=outcome)
    return KMSInternalException()


def _unavailable() -> DependencyTimeoutException:
    return DependencyTimeoutException(
        "The request could not be recorded in the audit trail and was not carried out; retry later"
    )


def _string_field(message: Any, name: str) -> str:
    value = _field(message, name, "")
    return value if isinstance(value, str) else ""


def _field(message: Any, name: str, default: Any) -> Any:
    """``getattr(message, name, default)``, without asking a protobuf message for a
    field its type does not have: the AttributeError that getattr would build and
    swallow cost more than the rest of finding a call's key (several per record)."""
    if isinstance(message, Message) and name not in message.DESCRIPTOR.fields_by_name:
        return default
    return getattr(message, name, default)


def _response_key_arns(operation: str, response: Any | None) -> list[str]:
    if response is None:
        return []
    metadata: Any = _field(response, "key_metadata", None)
    arn = getattr(metadata, "arn", None) if metadata is not None else None
    if isinstance(arn, str) and arn:
        return [arn]
    arns: list[str] = []
    for name in ("source_key_id", "key_id"):
        value = _string_field(response, name)
        if value.startswith("arn:") and ":key/" in value:
            arns.append(value)
    return arns


def _material_ids(facts: dict[str, Any], response: Any | None) -> tuple[str, ...]:
    if facts.get("key_material_id"):
        return (str(facts["key_material_id"]),)
    if response is None:
        return ()
    found = [
        value
        for name in ("key_material_id", "source_key_material_id", "destination_key_material_id")
        if (value := _string_field(response, name))
    ]
    if not found:
        blob = _field(response, "ciphertext_blob", b"")
        if isinstance(blob, bytes) and blob:
            try:
                found = [blob_recipe.parse_header(blob).key_material_id.hex()]
            except Exception:
                found = []
    return tuple(found)


def _blob_key_id(blob: bytes) -> str:
    if not blob:
        return ""
    try:
        key_id = blob_recipe.parse_header(blob).key_id
    except Exception:
        return ""
    return key_id if identifiers.is_key_id(key_id) else ""
