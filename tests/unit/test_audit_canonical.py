"""The fast paths of an audit record's text are the same text as before.

``canonical_json`` writes with orjson and falls back to the standard library's encoder
(``reference_canonical_json``, the definition); ``format_time`` formats by hand instead
of strftime; ``AuditEvent.from_document`` skips encoding ASCII text to measure it. A
difference in any of them would change the hashed text of new records, so each is held
to the reference here over generated input.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.audit_documents import CallSubject, api_call_document, json_safe
from meridian.server.audit.events import (
    EVENT_BYTES_MAX,
    AuditEvent,
    AuditFormatError,
    canonical_json,
    format_time,
    from_us,
    index_of,
    reference_canonical_json,
    to_us,
)
from meridian.server.audit.usage import day_of

ACCOUNT = "111122223333"
KEY_ARN = f"arn:meridian:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# Every code point but the surrogates (not text), so control characters, quotes,
# backslashes, U+2028/9, astral characters and U+FFFF are all drawn.
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
INTEGERS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SCALARS = st.none() | st.booleans() | INTEGERS | TEXT
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30,
)


@given(st.dictionaries(TEXT, JSON_VALUES, max_size=8))
@settings(max_examples=400, deadline=None)
def test_canonical_text_is_the_reference_text(document: dict[str, Any]) -> None:
    assert canonical_json(document) == reference_canonical_json(document)


class Color(StrEnum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "document",
    [
        {"big": 2**64},  # beyond orjson's integers
        {"small": -(2**63) - 1},
        {"lone": "\ud800"},  # not text: the reference writes it, UTF-8 later refuses it
        {"enum": Color.RED},  # a str subclass
        {"nested": [{"deep": {"deeper": [1, 2, {"x": "\u2028\x00\x7f"}]}}]},
    ],
)
def test_what_orjson_refuses_is_written_by_the_reference(document: dict[str, Any]) -> None:
    assert canonical_json(document) == reference_canonical_json(document)


@pytest.mark.parametrize("value", [Point(1), datetime(2026, 1, 1, tzinfo=UTC), {1: "a"}])
def test_values_json_cannot_hold_are_refused_as_before(value: Any) -> None:
    document = {"value": value}
    try:
        expected = reference_canonical_json(document)
    except TypeError:
        with pytest.raises(TypeError):
            canonical_json(document)
    else:
        assert canonical_json(document) == expected


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
@settings(max_examples=300, deadline=None)
def test_event_time_is_strftime_text(moment: datetime) -> None:
    assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _document(body_text: str) -> dict[str, Any]:
    return {
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "eventID": "e",
        "eventType": "AwsApiCall",
        "eventName": "Encrypt",
        "meridian": {"outcome": "Success"},
        "pad": body_text,
    }


def _padded(character: str, size_bytes: int) -> dict[str, Any]:
    """A document whose canonical text is exactly ``size_bytes`` long in UTF-8."""
    empty = len(canonical_json(_document("")).encode("utf-8"))
    width = len(character.encode("utf-8"))
    count, remainder = divmod(size_bytes - empty, width)
    assert remainder == 0
    return _document(character * count)


@pytest.mark.parametrize("character", ["a", "é", "€", "😀"])
def test_the_size_limit_counts_utf8_bytes(character: str) -> None:
    # Sizes that divide by 1, 2, 3 and 4: at the limit and one character above it.
    empty = len(canonical_json(_document("")).encode("utf-8"))
    width = len(character.encode("utf-8"))
    fits = EVENT_BYTES_MAX - (EVENT_BYTES_MAX - empty) % width
    AuditEvent.from_document(_padded(character, fits))
    with pytest.raises(AuditFormatError):
        AuditEvent.from_document(_padded(character, fits + width))


def test_a_lone_surrogate_is_still_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        AuditEvent.from_document(_document("\udc80"))


CONTEXTS = st.dictionaries(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    TEXT,
    max_size=4,
)


@given(
    context=CONTEXTS,
    key_id=TEXT,
    principal=st.sampled_from(["", f"arn:meridian:iam::{ACCOUNT}:user/alice"]),
    grant_tokens=st.lists(TEXT, max_size=3),
    user_agent=TEXT,
)
@settings(max_examples=200, deadline=None)
def test_call_documents_have_the_reference_text(
    context: dict[str, str],
    key_id: str,
    principal: str,
    grant_tokens: list[str],
    user_agent: str,
) -> None:
    request = pb.EncryptRequest(
        key_id=key_id, plaintext=b"secret", encryption_context=context, grant_tokens=grant_tokens
    )
    facts = {
        "user_agent": user_agent,
        "authorization": {"decision": "allow", "matched": [{"sid": key_id}], "reason": context},
    }
    document = api_call_document(
        operation="Encrypt",
        request=request,
        response=pb.EncryptResponse(key_id=KEY_ARN, ciphertext_blob=b"c"),
        error=None,
        principal_arn=principal,
        source_address="ipv4:127.0.0.1:1",
        request_id="r",
        event_id="e",
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        region="us-east-1",
        account_id=ACCOUNT,
        subject=CallSubject((KEY_ARN,)),
        facts=facts,
    )
    event = AuditEvent.from_document(document)
    assert event.body == reference_canonical_json(document)
    assert json.loads(event.body) == document
    assert event.index == index_of(json.loads(event.body))


def test_json_safe_keeps_the_first_items_of_a_large_mapping() -> None:
    value = {f"k{index:03d}": index for index in range(150)}
    kept = json_safe(value)
    assert list(kept) == [f"k{index:03d}" for index in range(100)]
    assert json_safe({"password": "x", "name": "y"}) == {"name": "y"}


@given(
    st.integers(
        min_value=to_us(datetime(1, 1, 1, tzinfo=UTC)),
        max_value=to_us(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    )
)
@settings(max_examples=300, deadline=None)
def test_the_usage_day_is_the_strftime_day(time_us: int) -> None:
    assert day_of(time_us) == from_us(time_us).strftime("%Y-%m-%d")
