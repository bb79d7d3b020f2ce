"""The audit hook gives a record's index the time it formatted into ``eventTime``
instead of parsing the text back (server/api/audit_hook.py): both must agree, or a
record's time column would differ from its text and the verifier would flag it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from meridian.server.audit.events import (
    AuditEvent,
    ServiceEvent,
    ServiceEventName,
    format_time,
    index_of,
    parse_time_us,
    service_event_document,
    to_us,
)

MOMENTS = st.datetimes(
    min_value=datetime(1000, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


@given(MOMENTS)
def test_the_time_in_us_is_what_the_text_says(moment: datetime) -> None:
    assert to_us(moment) == parse_time_us(format_time(moment))


@given(MOMENTS)
def test_an_index_given_the_time_equals_one_derived_from_the_text(moment: datetime) -> None:
    document = service_event_document(
        ServiceEvent(
            ServiceEventName.ROTATE_KEY, key_arn="arn:aws:kms:us-east-1:000000000000:key/k"
        ),
        region="us-east-1",
        account_id="000000000000",
        when=moment,
        event_id="e",
    )
    given_time = AuditEvent.from_document(document, event_time_us=to_us(moment))
    assert given_time == AuditEvent.from_document(document)
    assert given_time.index == index_of(document)
