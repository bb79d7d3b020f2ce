"""Audit events: CloudTrail-like JSON documents, their canonical text and their index.

An event's canonical text (sorted keys, no insignificant whitespace, UTF-8, integers
only, no floats) is what the hash chain covers and what ``audit_records.body`` stores.
The searchable columns of a record (time, principal, key ARNs, operation, outcome) are
*derived* from that text by :func:`index_of`, so the verifier can recompute them and
catch a column edited to hide a record from queries.

Field names follow CloudTrail's (``eventTime``, ``eventName``, ``userIdentity``,
``requestParameters``, ``resources``, ...); Meridian's additions live in one object,
``meridian`` (outcome, authorization decision, grant used, key material ids).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

EVENT_VERSION = "1.11"
EVENT_SOURCE = "kms.meridian"
KEY_RESOURCE_TYPE = "AWS::KMS::Key"
# An event's canonical text is bounded so that one request cannot bloat the trail; the
# largest legitimate request parameter is a 32 KiB key policy.
EVENT_BYTES_MAX = 128 * 1024
_EVENT_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
# The reference encoder of canonical text, built once (``json.dumps`` with options
# builds a new one per call). It holds no state between calls.
_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# orjson writes the same text for what documents hold (strings, 64-bit integers,
# booleans, null, lists, objects with string keys; tests/unit/test_audit_canonical.py
# holds it to the reference) in a tenth of the time. Anything else it would write its
# own way (a dataclass, a datetime, a subclass of str or int) it refuses instead, and
# the reference encoder then decides, as it always did.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class AuditFormatError(ValueError):
    """A stored or received audit document is not what this format defines."""


class EventType(StrEnum):
    API_CALL = "AwsApiCall"
    SERVICE_EVENT = "AwsServiceEvent"


class Outcome(StrEnum):
    SUCCESS = "Success"
    FAILURE = "Failure"  # the service refused or failed the request
    DENIED = "Denied"  # AccessDeniedException, including no authenticated principal
    UNKNOWN = "Unknown"  # recovered from an intent: the action may or may not have happened


class ServiceEventName(StrEnum):
    """Events the service records on its own (CloudTrail's AwsServiceEvent)."""

    ROTATE_KEY = "RotateKey"
    DELETE_KEY = "DeleteKey"
    DELETE_EXPIRED_KEY_MATERIAL = "DeleteExpiredKeyMaterial"
    SYNCHRONIZE_MULTI_REGION_KEY = "SynchronizeMultiRegionKey"
    UPDATE_PRIMARY_REGION = "UpdatePrimaryRegion"
    FORCE_PROMOTE_REPLICA = "ForcePromoteReplica"
    PRUNE_AUDIT_RECORDS = "PruneAuditRecords"
    # `meridian node seed-keys` put keys into a stopped node's store (server/seeding.py).
    SEED_KEYS = "SeedKeys"


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Something the service did on its own, for :class:`~meridian.server.audit.sink.AuditSink`.

    ``details`` holds small, non-secret facts (peer region, epoch, version number...);
    values must be strings, integers or booleans. Never key material.
    """

    event_name: ServiceEventName
    key_arn: str = ""
    key_material_id: str = ""
    details: Mapping[str, str | int | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordIndex:
    """The searchable columns of a record, all derived from its document."""

    event_time_us: int
    event_id: str
    request_id: str
    event_type: str
    event_name: str
    principal_arn: str
    key_arn: str
    related_key_arn: str
    outcome: str
    error_code: str

    @property
    def key_arns(self) -> tuple[str, ...]:
        # Spelled out: asked for on every record's commit, where a generator showed.
        key_arn, related = self.key_arn, self.related_key_arn
        if key_arn:
            return (key_arn, related) if related else (key_arn,)
        return (related,) if related else ()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One record's content before it joins the chain: canonical text plus its index."""

    body: str
    index: RecordIndex

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, event_time_us: int | None = None
    ) -> AuditEvent:
        """``event_time_us``: the time ``eventTime`` was written from, if the caller has
        it (the audit hook), which spares parsing the text back; it must be that time
        (``to_us(t)`` for ``format_time(t)``), as the verifier derives it from the text."""
        body = canonical_json(document)
        # An ASCII text (nearly every record) is as long in UTF-8 as it is in characters,
        # and str knows whether it is ASCII without a scan: no encoding just to measure.
        # Any other text is encoded, which also refuses what UTF-8 cannot carry.
        size = len(body) if body.isascii() else len(body.encode("utf-8"))
        if size > EVENT_BYTES_MAX:
            raise AuditFormatError(f"an audit event is limited to {EVENT_BYTES_MAX} bytes")
        return cls(body=body, index=index_of(document, event_time_us=event_time_us))


def canonical_json(document: Mapping[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8. Builders put integers only, never floats (a
    float has no single canonical text across JSON implementations, and orjson's
    differs from the reference's); the hook's builders turn any float into text and
    service event details refuse them."""
    try:
        return orjson.dumps(document, option=_ORJSON_OPTIONS).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return reference_canonical_json(document)


def reference_canonical_json(document: Mapping[str, Any]) -> str:
    """The canonical text as the standard library writes it: the definition that
    :func:`canonical_json` must match, and its fallback."""
    return _CANONICAL_ENCODER.encode(document)


def parse_document(body: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as error:
        raise AuditFormatError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise AuditFormatError("an audit event is a JSON object")
    return document


def index_of(document: Mapping[str, Any], *, event_time_us: int | None = None) -> RecordIndex:
    """The columns a record is searched by; raises AuditFormatError if they are missing.

    ``event_time_us`` is what ``eventTime`` says, when the caller already knows it.
    """
    identity = document.get("userIdentity")
    principal = identity.get("arn", "") if isinstance(identity, dict) else ""
    resources = document.get("resources") or []
    if not isinstance(resources, list):
        raise AuditFormatError("resources must be a list")
    arns = [item.get("ARN", "") for item in resources if isinstance(item, dict)]
    extension = document.get("meridian")
    if not isinstance(extension, dict):
        raise AuditFormatError("an audit event carries a 'meridian' object")
    event_time = _text(document, "eventTime")
    return RecordIndex(
        event_time_us=parse_time_us(event_time) if event_time_us is None else event_time_us,
        event_id=_text(document, "eventID"),
        request_id=str(document.get("requestID") or ""),
        event_type=_text(document, "eventType"),
        event_name=_text(document, "eventName"),
        principal_arn=principal if isinstance(principal, str) else "",
        key_arn=arns[0] if arns else "",
        related_key_arn=arns[1] if len(arns) > 1 else "",
        outcome=_text(extension, "outcome"),
        error_code=str(document.get("errorCode") or ""),
    )


def format_time(moment: datetime) -> str:
    """CloudTrail's eventTime, with microseconds: ``2026-01-01T00:00:00.000000Z``."""
    moment = moment.astimezone(UTC)
    if moment.year < 1000:
        # strftime's %Y does not pad years before 1000 on every platform; such a time
        # (only ever in a request's parameters) keeps the text it always had.
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Formatted by hand: strftime costs several times this on every record.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def parse_time_us(text: str) -> int:
    # Sliced by hand: strptime costs more than the rest of indexing a record.
    if not _EVENT_TIME.fullmatch(text):
        raise AuditFormatError(f"eventTime {text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        moment = datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            int(text[20:26]),
            tzinfo=UTC,
        )
    except ValueError:
        raise AuditFormatError(f"eventTime {text!r} is not a valid time") from None
    return to_us(moment)


def to_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, tz=UTC).replace(microsecond=value % 1_000_000)


def key_resources(account_id: str, key_arns: Sequence[str]) -> list[dict[str, str]]:
    return [
        {"accountId": account_id, "type": KEY_RESOURCE_TYPE, "ARN": arn} for arn in key_arns if arn
    ]


def service_event_document(
    event: ServiceEvent,
    *,
    region: str,
    account_id: str,
    when: datetime,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The CloudTrail-shaped document of a service event (``eventType: AwsServiceEvent``)."""
    extension: dict[str, Any] = {"outcome": Outcome.SUCCESS.value}
    additional: dict[str, Any] = {}
    if event.key_arn:
        additional["keyId"] = event.key_arn
    if event.key_material_id:
        additional["keyMaterialId"] = event.key_material_id
    for name, value in event.details.items():
        if not isinstance(value, str | int | bool):
            raise AuditFormatError(f"service event detail {name!r} must be str, int or bool")
        additional[name] = value
    return {
        "eventVersion": EVENT_VERSION,
        "userIdentity": {"accountId": account_id, "invokedBy": EVENT_SOURCE},
        "eventTime": format_time(when),
        "eventSource": EVENT_SOURCE,
        "eventName": event.event_name.value,
        "awsRegion": region,
        "sourceIPAddress": EVENT_SOURCE,
        "userAgent": EVENT_SOURCE,
        "requestParameters": None,
        "responseElements": None,
        "additionalEventData": additional,
        "eventID": event_id or str(uuid.uuid4()),
        "readOnly": False,
        "resources": key_resources(account_id, [event.key_arn]),
        "eventType": EventType.SERVICE_EVENT.value,
        "managementEvent": True,
        "recipientAccountId": account_id,
        "eventCategory": "Management",
        "meridian": extension,
    }


def unknown_outcome_document(intent_document: Mapping[str, Any]) -> dict[str, Any]:
    """The record of an intent whose outcome was never written (crash, audit outage).

    The action may or may not have taken effect; the trail says so instead of guessing.
    """
    document = dict(intent_document)
    extension = dict(document.get("meridian") or {})
    extension["outcome"] = Outcome.UNKNOWN.value
    document["meridian"] = extension
    document["errorCode"] = "OutcomeUnknown"
    document["errorMessage"] = (
        "The node stopped or its audit store failed before the outcome was recorded"
    )
    return document


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise AuditFormatError(f"an audit event needs a string {name!r}")
    return value
