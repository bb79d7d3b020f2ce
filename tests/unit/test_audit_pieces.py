"""Unit tests of the audit trail's small pieces: documents, redaction, events, settings,
the signing recipe, pricing, time arguments, and the hook's fail-closed error mapping."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meridian.cli.audit_tools import parse_time
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.audit_documents import (
    CallSubject,
    api_call_document,
    json_safe,
    message_document,
)
from meridian.server.api.audit_hook import FACT_SEQ, AuditHook
from meridian.server.api.interceptor import CallInfo
from meridian.server.audit.events import (
    AuditEvent,
    AuditFormatError,
    ServiceEvent,
    ServiceEventName,
    format_time,
    index_of,
    parse_time_us,
    service_event_document,
    to_us,
)
from meridian.server.audit.ports import KeyInventoryRow, LastUse, UsageRow
from meridian.server.audit.pricing import PriceTable, RegionUsage, build_report, load_price_table
from meridian.server.audit.settings import parse_audit_settings, parse_metrics_settings
from meridian.server.audit.sink import AuditUnavailable
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto import audit_signing
from meridian.server.domain.errors import (
    DependencyTimeoutException,
    KMSInternalException,
    ValidationException,
)
from meridian.server.domain.model import Caller

ARN = "arn:meridian:kms:us-east-1:111122223333:key/0b0e2e4f-1111-4222-8333-944455556666"
WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


# ---- documents and redaction ------------------------------------------------------------


def test_bytes_and_secret_named_fields_never_reach_a_document() -> None:
    request = pb.ReEncryptRequest(
        ciphertext_blob=b"\x01blob",
        destination_key_id=ARN,
        source_encryption_context={"k": "v"},
        grant_tokens=["token"],
    )
    document = message_document(request)
    assert document == {
        "destinationKeyId": ARN,
        "sourceEncryptionContext": {"k": "v"},
        "grantTokens": ["token"],
    }
    data_key = pb.GenerateDataKeyResponse(plaintext=b"k" * 32, ciphertext_blob=b"c", key_id=ARN)
    assert message_document(data_key) == {"keyId": ARN}


def test_facts_become_json_without_secrets_or_floats() -> None:
    class Kind(enum.Enum):
        ALLOW = "allow"

    @dataclasses.dataclass
    class Decision:
        kind: Kind
        matched: tuple[str, ...]
        score: float
        private_key: bytes

    safe = json_safe(
        {"decision": Decision(Kind.ALLOW, ("a", "b"), 0.5, b"k"), "secret_value": "x", "b": b"x"}
    )
    assert safe == {"decision": {"kind": "allow", "matched": ["a", "b"], "score": "0.5"}, "b": None}


def _document(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "operation": "Encrypt",
        "request": pb.EncryptRequest(key_id=ARN, plaintext=b"secret"),
        "response": None,
        "error": None,
        "principal_arn": "arn:meridian:iam::111122223333:user/alice",
        "source_address": "10.0.0.1",
        "request_id": "request-1",
        "event_id": "event-1",
        "received_at": WHEN,
        "region": "us-east-1",
        "account_id": "111122223333",
        "subject": CallSubject((ARN,), "alias/payroll", ("ab" * 32,)),
        "facts": {"grant_id": "g1", "authorization": {"decision": "allow"}},
    }
    arguments.update(changes)
    return api_call_document(**arguments)


def test_an_api_call_document_has_cloudtrail_fields() -> None:
    document = _document()
    assert document["eventTime"] == "2026-03-04T05:06:07.890123Z"
    assert document["userIdentity"] == {
        "type": "IAMUser",
        "principalId": "alice",
        "arn": "arn:meridian:iam::111122223333:user/alice",
        "accountId": "111122223333",
        "userName": "alice",
    }
    assert document["resources"] == [
        {"accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": ARN}
    ]
    assert document["readOnly"] is True
    assert document["responseElements"] is None
    assert document["meridian"] == {
        "outcome": "Success",
        "authorization": {"decision": "allow"},
        "grantId": "g1",
        "aliasName": "alias/payroll",
    }
    assert document["additionalEventData"] == {"keyMaterialId": "ab" * 32}
    index = AuditEvent.from_document(document).index
    assert (index.event_name, index.key_arn, index.outcome) == ("Encrypt", ARN, "Success")
    assert index.event_time_us == to_us(WHEN)


def test_denied_and_unauthenticated_calls_say_so() -> None:
    from meridian.server.api.interceptor import NotAuthenticated

    document = _document(principal_arn=None, error=NotAuthenticated())
    assert document["userIdentity"] == {"type": "Unknown"}
    assert document["errorCode"] == "AccessDeniedException"
    assert document["meridian"]["outcome"] == "Denied"
    failed = _document(error=ValidationException("Plaintext must be 1 to 4096 bytes"))
    assert failed["meridian"]["outcome"] == "Failure"
    assert failed["errorMessage"] == "Plaintext must be 1 to 4096 bytes"


def test_event_times_round_trip_and_bad_ones_are_refused() -> None:
    assert parse_time_us(format_time(WHEN)) == to_us(WHEN)
    for bad in ("2026-03-04T05:06:07Z", "2026-13-04T05:06:07.000000Z", "yesterday"):
        with pytest.raises(AuditFormatError):
            parse_time_us(bad)


def test_service_event_documents_refuse_non_scalar_details() -> None:
    event = ServiceEvent(ServiceEventName.ROTATE_KEY, key_arn=ARN, details={"version": 2})
    document = service_event_document(event, region="us-east-1", account_id="1", when=WHEN)
    assert document["eventType"] == "AwsServiceEvent"
    assert document["additionalEventData"] == {"keyId": ARN, "version": 2}
    assert index_of(document).key_arn == ARN
    bad = ServiceEvent(ServiceEventName.ROTATE_KEY, details={"ratio": 0.5})  # type: ignore[dict-item]
    with pytest.raises(AuditFormatError):
        service_event_document(bad, region="us-east-1", account_id="1", when=WHEN)


# ---- the hook's fail-closed mapping -----------------------------------------------------


class FailingTrail:
    def __init__(self, *, intent_fails: bool, record_fails: bool) -> None:
        self.intent_fails = intent_fails
        self.record_fails = record_fails
        self.intents: list[str] = []

    async def open_intent(self, request_id: str, event: AuditEvent) -> None:
        if self.intent_fails:
            raise AuditUnavailable("disk full")
        self.intents.append(request_id)

    async def record(self, event: AuditEvent, *, intent_request_id: str | None = None) -> int:
        if self.record_fails:
            raise AuditUnavailable("disk full")
        return 1

    async def record_many(
        self, events: Sequence[tuple[AuditEvent, str | None]]
    ) -> list[int | AuditUnavailable]:
        return [
            AuditUnavailable("disk full") if self.record_fails else seq
            for seq, _ in enumerate(events, start=1)
        ]


def _call(operation: str, request: Any) -> CallInfo:
    caller = Caller(principal_arn="arn:meridian:iam::1:user/a", source_address="", request_id="r")
    return CallInfo(operation, request, caller, "r", "127.0.0.1", 0.0)


async def _no_alias(name: str) -> str | None:
    return None


def _hook(trail: FailingTrail) -> AuditHook:
    return AuditHook(
        trail, region="us-east-1", account_id="1", clock=FakeClock(), alias_lookup=_no_alias
    )


async def test_an_unwritable_intent_refuses_the_change_before_it_runs() -> None:
    hook = _hook(FailingTrail(intent_fails=True, record_fails=False))
    with pytest.raises(DependencyTimeoutException):
        await hook.before(_call("CreateKey", pb.CreateKeyRequest()))


async def test_reads_do_not_write_intents() -> None:
    trail = FailingTrail(intent_fails=False, record_fails=False)
    await _hook(trail).before(_call("Decrypt", pb.DecryptRequest()))
    assert trail.intents == []


async def test_a_lost_record_after_a_change_is_an_internal_error() -> None:
    trail = FailingTrail(intent_fails=False, record_fails=True)
    hook = _hook(trail)
    call = _call("CreateKey", pb.CreateKeyRequest())
    await hook.before(call)
    assert trail.intents == ["r"]
    with pytest.raises(KMSInternalException):
        await hook.after(call, pb.CreateKeyResponse(), None)


@pytest.mark.parametrize(
    ("operation", "request_message", "error"),
    [
        ("Encrypt", pb.EncryptRequest(key_id=ARN, plaintext=b"x"), None),
        ("CreateKey", pb.CreateKeyRequest(), ValidationException("bad")),
    ],
)
async def test_a_lost_record_with_nothing_changed_is_retryable(
    operation: str, request_message: Any, error: ValidationException | None
) -> None:
    hook = _hook(FailingTrail(intent_fails=False, record_fails=True))
    call = _call(operation, request_message)
    await hook.before(call)
    with pytest.raises(DependencyTimeoutException):
        await hook.after(call, None, error)


async def test_batch_items_whose_records_are_lost_fail_as_single_calls_would() -> None:
    hook = _hook(FailingTrail(intent_fails=False, record_fails=True))
    read = _call("Encrypt", pb.EncryptRequest(key_id=ARN, plaintext=b"x"))
    change = _call("CreateKey", pb.CreateKeyRequest())
    await hook.before(change)
    failures = await hook.after_items([(read, None, None), (change, pb.CreateKeyResponse(), None)])
    assert [type(failure) for failure in failures] == [
        DependencyTimeoutException,
        KMSInternalException,
    ]


async def test_batch_items_get_their_own_seq() -> None:
    hook = _hook(FailingTrail(intent_fails=False, record_fails=False))
    calls = [_call("Encrypt", pb.EncryptRequest(key_id=ARN, plaintext=b"x")) for _ in range(3)]
    assert await hook.after_items([(call, None, None) for call in calls]) == [None] * 3
    assert [call.facts[FACT_SEQ] for call in calls] == [1, 2, 3]


# ---- settings, signing, pricing, time arguments ------------------------------------------


def test_audit_settings_are_checked() -> None:
    settings = parse_audit_settings({"enabled": False, "digest_interval_s": 1, "retention_days": 7})
    assert (settings.enabled, settings.digest_interval_s, settings.retention_days) == (
        False,
        1.0,
        7,
    )
    for bad in ({"enabled": "yes"}, {"batch_records_max": 0}, {"digest_interval_s": "1"}, {"x": 1}):
        with pytest.raises(ValueError, match="audit"):
            parse_audit_settings(bad)
    assert parse_metrics_settings({"listen": "127.0.0.1:9464"}).listen == "127.0.0.1:9464"
    with pytest.raises(ValueError, match="host:port"):
        parse_metrics_settings({"listen": "9464"})


def test_the_signing_recipe_binds_its_context_and_key() -> None:
    signer = audit_signing.AuditSigner(bytes(range(32)))
    signature = signer.sign(b"digest")
    audit_signing.verify(signer.public_key, b"digest", signature)
    with pytest.raises(audit_signing.AuditSignatureError):
        audit_signing.verify(signer.public_key, b"digest!", signature)
    other = audit_signing.AuditSigner(bytes(32))
    with pytest.raises(audit_signing.AuditSignatureError):
        audit_signing.verify(other.public_key, b"digest", signature)
    pem = audit_signing.public_key_pem(signer.public_key)
    assert audit_signing.load_public_key(pem) == signer.public_key
    assert audit_signing.key_id_of(signer.public_key) == signer.key_id
    with pytest.raises(audit_signing.AuditSignatureError):
        audit_signing.load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n")
    assert "seed" not in repr(signer)


def test_the_cost_report_follows_the_price_table(tmp_path: Path) -> None:
    created = to_us(datetime(2026, 1, 1, tzinfo=UTC))
    used = LastUse(ARN, "Encrypt", to_us(datetime(2026, 1, 20, tzinfo=UTC)), "e", "r")
    idle = ARN.replace("0b0e", "1111")
    region = RegionUsage(
        region="us-east-1",
        first_day="2026-01-01",
        last_day="2026-01-30",
        counts=[
            UsageRow("2026-01-02", ARN, "Encrypt", 30_000, 0),
            UsageRow("2026-01-02", ARN, "GenerateDataKey", 10_000, 10),
            UsageRow("2026-01-02", ARN, "Sign", 10_000, 0),
        ],
        last_uses=[used],
        keys=[
            KeyInventoryRow(ARN, "Enabled", created),
            KeyInventoryRow(idle, "Enabled", created),
            KeyInventoryRow(ARN + "x", "PendingDeletion", created),
        ],
        tracking_start=datetime(2026, 1, 1, tzinfo=UTC),
    )
    report = build_report(
        [region], PriceTable(), today=date(2026, 4, 1), unused_days=60, data_key_reuse=100
    )
    assert report.total_requests == 50_000
    assert report.free_requests == 20_000
    # 20,000 symmetric requests after the free tier at $0.03/10k, 10,000 asymmetric at $0.15/10k.
    assert report.request_cost == pytest.approx(0.06 + 0.15)
    assert report.key_cost == pytest.approx(2.0)  # two billable keys, one 30-day month
    assert [entry.key_arn for entry in report.unused] == [ARN, idle]
    assert report.data_key_requests_with_cache == 100
    prices = tmp_path / "prices.toml"
    prices.write_text('key_month = 2.5\nasymmetric_operations = ["Sign"]\ncurrency = "EUR"\n')
    table = load_price_table(prices)
    assert (table.key_month, table.currency, table.asymmetric_operations) == (
        2.5,
        "EUR",
        frozenset({"Sign"}),
    )
    prices.write_text("key_month = -1\n")
    with pytest.raises(ValueError, match="key_month"):
        load_price_table(prices)


def test_time_arguments() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert parse_time("7d", now=now) == now - timedelta(days=7)
    assert parse_time("90m", now=now) == now - timedelta(minutes=90)
    assert parse_time("now", now=now) == now
    assert parse_time("2026-04-01", now=now) == datetime(2026, 4, 1, tzinfo=UTC)
    assert parse_time("2026-04-01T10:00:00+02:00", now=now).utcoffset() == timedelta(hours=2)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("last tuesday", now=now)
