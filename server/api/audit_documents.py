"""Turns one API call (request, response, error, facts) into its CloudTrail-like document.

Secrets never enter a document, by construction rather than by a list of operations:
every ``bytes`` field of any message (plaintext, ciphertext, data keys, signatures,
public keys, imported material...) is left out, and so is any string field whose name
says it is secret (``plaintext``, ``password``, ``secret``, ``private_key``,
``credential``). Operations added later are covered without touching this module.
Strings are capped, so a request cannot bloat the trail.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from meridian.server.audit.events import (
    EVENT_SOURCE,
    EVENT_VERSION,
    EventType,
    Outcome,
    format_time,
    key_resources,
)
from meridian.server.domain.errors import AccessDeniedException, KmsError

# CloudTrail marks these readOnly; everything else may change state and gets an intent.
READ_ONLY_OPERATIONS = frozenset(
    {
        "DescribeKey",
        "ListKeys",
        "ListAliases",
        "ListResourceTags",
        "ListGrants",
        "ListRetirableGrants",
        "ListKeyPolicies",
        "ListKeyRotations",
        "GetKeyPolicy",
        "GetKeyRotationStatus",
        "GetPublicKey",
        "GetParametersForImport",
        "GetKeyLastUsage",
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateRandom",
        "GenerateMac",
        "VerifyMac",
        "Sign",
        "Verify",
        "DeriveSharedSecret",
        "Encapsulate",
        "Decapsulate",
        # Meridian's audit and usage service (meridian.audit.v1).
        "GetAuditTrailInfo",
        "ListAuditRecords",
        "ListAuditDigests",
        "GetUsageReport",
        # Meridian's batch extensions: each item gets a record of its own besides this one.
        "BatchEncrypt",
        "BatchDecrypt",
        "BatchGenerateDataKey",
    }
)
# The batch extensions (docs/batch-operations.md). Their own record names the number of
# items, not the items: each item's parameters are in the item's record already.
BATCH_OPERATIONS = frozenset({"BatchEncrypt", "BatchDecrypt", "BatchGenerateDataKey"})
# CallInfo.facts key set on each item of a batch: {"id": batch request id, "index": n}.
FACT_BATCH = "batch"
_SECRET_NAME = re.compile("plaintext|password|secret|private_key|credential")
# The response fields that are the call's answer to the region question, not content.
_RESPONSE_FIELDS_LEFT_OUT = frozenset({"region"})
STRING_CHARS_MAX = 32 * 1024
LIST_ITEMS_MAX = 100
DEPTH_MAX = 8


def message_document(message: Message, *, depth: int = 0) -> dict[str, Any]:
    """The JSON-safe, secret-free view of a protobuf message (camelCase names)."""
    document: dict[str, Any] = {}
    if depth > DEPTH_MAX:
        return document
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_BYTES or _is_secret_name(field.name):
            continue
        if field.name in _RESPONSE_FIELDS_LEFT_OUT and field.number >= 1000:
            continue
        document[_camel(field.name)] = _field_value(field, value, depth)
    return document


def _field_value(field: FieldDescriptor, value: Any, depth: int) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message_type = field.message_type
        assert message_type is not None
        if message_type.GetOptions().map_entry:
            value_field = message_type.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_BYTES:
                return {}
            return {
                _cap(str(key)): _scalar(item)
                if value_field.type != FieldDescriptor.TYPE_MESSAGE
                else message_document(item, depth=depth + 1)
                for key, item in list(value.items())[:LIST_ITEMS_MAX]
            }
        if message_type.full_name == "google.protobuf.Timestamp":
            if field.is_repeated:
                return [_request_time(item) for item in value]
            return _request_time(value)
        if field.is_repeated:
            return [message_document(item, depth=depth + 1) for item in value[:LIST_ITEMS_MAX]]
        return message_document(value, depth=depth + 1)
    if field.is_repeated:
        return [_scalar(item) for item in value[:LIST_ITEMS_MAX]]
    return _scalar(value)


def _request_time(stamp: Any) -> str:
    """A Timestamp of a request (ImportKeyMaterial's ValidTo) in ISO 8601. One outside
    datetime's range is bad input the operation refuses; the record shows it as sent
    instead of failing the call with an internal error."""
    try:
        return format_time(stamp.ToDatetime())
    except (ValueError, OverflowError, OSError):
        return f"{stamp.seconds}s{stamp.nanos:+d}ns"


def _scalar(value: Any) -> Any:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        # Integers only in audit documents (canonical text); a float is kept as text.
        return repr(value)
    return _cap(str(value))


def _cap(text: str) -> str:
    return text if len(text) <= STRING_CHARS_MAX else text[:STRING_CHARS_MAX] + "…[truncated]"


# Field and fact names come from a fixed set (the protos, the hooks), and every record
# asks about the same few again: remembering the answers saves a regex search and a
# split per field per record. Bounded all the same, as a name could come from a request.
@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


@functools.lru_cache(maxsize=4096)
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def json_safe(value: Any, *, depth: int = 0) -> Any:
    """Facts left by other hooks (an authorization decision...) as JSON values.

    Dataclasses become objects, enums their values, sequences lists; bytes are left
    out (they might be secret), floats become text; anything else its ``str``.
    """
    if depth > DEPTH_MAX:
        return None
    kind = type(value)
    # Exact types first: the facts other hooks leave are plain dicts, lists and text.
    if kind is str:
        return _cap(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is dict:
        return {
            name: json_safe(item, depth=depth + 1)
            for key, item in itertools.islice(value.items(), LIST_ITEMS_MAX)
            if not _is_secret_name(name := str(key))
        }
    if kind is list or kind is tuple:
        return [json_safe(item, depth=depth + 1) for item in value[:LIST_ITEMS_MAX]]
    if isinstance(value, Enum):
        return json_safe(value.value, depth=depth + 1)
    if isinstance(value, str):
        return _cap(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    if isinstance(value, datetime):
        return format_time(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: json_safe(getattr(value, item.name), depth=depth + 1)
            for item in dataclasses.fields(value)
            if not _is_secret_name(item.name)
        }
    if isinstance(value, Mapping):
        return {
            str(key): json_safe(item, depth=depth + 1)
            for key, item in list(value.items())[:LIST_ITEMS_MAX]
            if not _is_secret_name(str(key))
        }
    if isinstance(value, Sequence | set | frozenset):
        return [json_safe(item, depth=depth + 1) for item in list(value)[:LIST_ITEMS_MAX]]
    return _cap(str(value))


# Per fact name, the last fact made JSON-safe and what it became. Hooks hand the same
# fact object to several calls (the items of a batch that share a decision share its
# record: server/api/authorization.py), so their records convert it once. Held by
# identity, with a reference to the object, so a new fact can never be mistaken for
# it; facts are not changed once handed over, and documents only read what they hold.
_last_converted: dict[str, tuple[object, Any]] = {}


def _json_safe_fact(name: str, value: object) -> Any:
    last = _last_converted.get(name)
    if last is None or last[0] is not value:
        last = (value, json_safe(value))
        _last_converted[name] = last
    return last[1]


@dataclasses.dataclass(frozen=True, slots=True)
class CallSubject:
    """What the call was about, as far as the audit hook could tell."""

    key_arns: tuple[str, ...] = ()
    alias_name: str = ""
    key_material_ids: tuple[str, ...] = ()


def user_identity(principal_arn: str | None, access_key_id: str = "") -> dict[str, Any]:
    if not principal_arn:
        return {"type": "Unknown"}
    parts = principal_arn.split(":", 5)
    account = parts[4] if len(parts) == 6 else ""
    kind, _, name = (parts[5] if len(parts) == 6 else "").partition("/")
    identity: dict[str, Any] = {
        "type": "MeridianNode" if kind == "node" else "IAMUser",
        "principalId": name,
        "arn": principal_arn,
        "accountId": account,
        "userName": name,
    }
    if access_key_id:
        identity["accessKeyId"] = access_key_id
    return identity


def outcome_of(error: KmsError | None) -> Outcome:
    if error is None:
        return Outcome.SUCCESS
    if isinstance(error, AccessDeniedException):
        return Outcome.DENIED
    return Outcome.FAILURE


def api_call_document(
    *,
    operation: str,
    request: Any,
    response: Any | None,
    error: KmsError | None,
    principal_arn: str | None,
    source_address: str,
    request_id: str,
    event_id: str,
    received_at: datetime,
    region: str,
    account_id: str,
    subject: CallSubject,
    facts: Mapping[str, Any],
    pending: bool = False,
) -> dict[str, Any]:
    read_only = operation in READ_ONLY_OPERATIONS
    extension: dict[str, Any] = {
        "outcome": "Pending" if pending else outcome_of(error).value,
    }
    for fact, name in (
        ("authorization", "authorization"),
        ("grant_id", "grantId"),
        ("transport", "transport"),
    ):
        if fact in facts:
            extension[name] = _json_safe_fact(fact, facts[fact])
    if subject.alias_name:
        extension["aliasName"] = subject.alias_name
    additional: dict[str, Any] = {}
    if subject.key_material_ids:
        additional["keyMaterialId"] = subject.key_material_ids[0]
        if len(subject.key_material_ids) > 1:
            additional["destinationKeyMaterialId"] = subject.key_material_ids[1]
    batch = facts.get(FACT_BATCH)
    if isinstance(batch, Mapping):
        # An item of a batch: ties the record to the batch call's own record.
        additional["batchId"] = _cap(str(batch.get("id", "")))
        additional["batchItemIndex"] = int(batch.get("index", 0))
    request_parameters = message_document(request) if isinstance(request, Message) else None
    if operation in BATCH_OPERATIONS and isinstance(request, Message):
        additional["batchId"] = request_id
        request_parameters = {"itemCount": len(getattr(request, "items", ()))}
    document: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": user_identity(principal_arn, str(facts.get("access_key_id") or "")),
        "eventTime": format_time(received_at),
        "eventSource": EVENT_SOURCE,
        "eventName": operation,
        "awsRegion": region,
        "sourceIPAddress": source_address,
        "userAgent": _cap(str(facts.get("user_agent") or "")),
        "requestParameters": request_parameters,
        "responseElements": (
            message_document(response)
            if isinstance(response, Message) and not read_only and not pending
            else None
        ),
        "additionalEventData": additional,
        "requestID": request_id,
        "eventID": event_id,
        "readOnly": read_only,
        "resources": key_resources(account_id, subject.key_arns),
        "eventType": EventType.API_CALL.value,
        "managementEvent": True,
        "recipientAccountId": account_id,
        "eventCategory": "Management",
        "meridian": extension,
    }
    if error is not None:
        document["errorCode"] = error.reason
        document["errorMessage"] = _cap(error.message)
    return document


def shrink(document: dict[str, Any]) -> dict[str, Any]:
    """A document too large for the trail, without its parameters (noted as such)."""
    smaller = dict(document)
    smaller["requestParameters"] = None
    smaller["responseElements"] = None
    smaller["meridian"] = {**document["meridian"], "parametersOmitted": "too large"}
    return smaller
