"""The commit thread's usage tally (server/audit/usage.py) counts a group of records
exactly as merging each record's own effects does."""

from __future__ import annotations

from dataclasses import astuple

from hypothesis import given
from hypothesis import strategies as st

from meridian.server.audit.events import EventType, Outcome, RecordIndex
from meridian.server.audit.usage import UsageTally, merge_increments, usage_effects

ARNS = st.sampled_from(["", "arn:k1", "arn:k2", "arn:k3"])
DAY_US = 86_400_000_000

INDEXES = st.builds(
    RecordIndex,
    # Several days, both sides of midnight, and times before 1970.
    event_time_us=st.integers(min_value=-3 * DAY_US, max_value=3 * DAY_US),
    event_id=st.text(max_size=3),
    request_id=st.text(max_size=3),
    event_type=st.sampled_from([EventType.API_CALL.value, EventType.SERVICE_EVENT.value]),
    event_name=st.sampled_from(["Encrypt", "Decrypt", "CreateKey", "DescribeKey"]),
    principal_arn=st.just("arn:p"),
    key_arn=ARNS,
    related_key_arn=ARNS,
    outcome=st.sampled_from([Outcome.SUCCESS.value, Outcome.FAILURE.value, Outcome.DENIED.value]),
    error_code=st.just(""),
)


@given(st.lists(INDEXES, max_size=40))
def test_the_tally_equals_the_merged_effects_of_each_record(indexes: list[RecordIndex]) -> None:
    tally = UsageTally()
    increments = []
    last_uses = []
    for index in indexes:
        tally.add(index)
        found, uses = usage_effects(index)
        increments.extend(found)
        last_uses.extend(uses)
    assert sorted(map(astuple, tally.increments())) == sorted(
        map(astuple, merge_increments(increments))
    )
    assert tally.last_uses == last_uses
