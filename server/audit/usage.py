"""Usage accounting: what each audit record adds to the per-key, per-operation counters.

Counters are kept beside the trail and updated in the same transaction as the records
they count, so they agree with the trail exactly. Only API calls count (service events
are not billed); failed calls are counted as failures too, since they are requests.
Last use follows AWS's GetKeyLastUsage: the last *successful cryptographic* operation
per key.
"""

from __future__ import annotations

from datetime import date

from meridian.server.audit.events import EventType, Outcome, RecordIndex, from_us
from meridian.server.audit.ports import LastUse, UsageIncrement

# AWS's KeyLastUsageTrackingOperation enum (botocore's KMS model).
LAST_USAGE_OPERATIONS = frozenset(
    {
        "Decrypt",
        "DeriveSharedSecret",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "ReEncrypt",
        "Sign",
        "Verify",
        "VerifyMac",
        "Encapsulate",
        "Decapsulate",
    }
)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_US_PER_DAY = 86_400_000_000


def day_of(time_us: int) -> str:
    # Whole days counted from the epoch: the commit thread does this for every record,
    # and a datetime plus strftime cost several times as much for the same text.
    day = date.fromordinal(_EPOCH_ORDINAL + time_us // _US_PER_DAY)
    if day.year < 1000:  # strftime's %Y does not pad these on every platform
        return from_us(time_us).strftime("%Y-%m-%d")
    return day.isoformat()


def usage_effects(index: RecordIndex) -> tuple[list[UsageIncrement], list[LastUse]]:
    """The counter increments and last-use updates one record causes."""
    if index.event_type != EventType.API_CALL.value:
        return [], []
    failed = 0 if index.outcome == Outcome.SUCCESS.value else 1
    day = day_of(index.event_time_us)
    key_arns = index.key_arns
    increments = [
        UsageIncrement(day, arn, index.event_name, 1, failed) for arn in key_arns or ("",)
    ]
    last_uses: list[LastUse] = []
    if not failed and index.event_name in LAST_USAGE_OPERATIONS:
        last_uses = [
            LastUse(arn, index.event_name, index.event_time_us, index.event_id, index.request_id)
            for arn in key_arns
        ]
    return increments, last_uses


def merge_increments(increments: list[UsageIncrement]) -> list[UsageIncrement]:
    """One increment per (day, key, operation): fewer upserts per group commit."""
    merged: dict[tuple[str, str, str], tuple[int, int]] = {}
    for item in increments:
        slot = (item.day, item.key_arn, item.operation)
        requests, failures = merged.get(slot, (0, 0))
        merged[slot] = (requests + item.requests, failures + item.failures)
    return [
        UsageIncrement(day, arn, operation, requests, failures)
        for (day, arn, operation), (requests, failures) in merged.items()
    ]


class UsageTally:
    """The usage effects of a group of records, counted as they are chained: one
    counter per (day, key, operation) without an increment object per record (the
    commit thread tallies every record; a batch call's hundred records of one key make
    one upsert). Equal to merging each record's :func:`usage_effects`."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], list[int]] = {}
        self.last_uses: list[LastUse] = []
        # Records of one day in a row: the day's text once, not per record.
        self._day_start_us = 0
        self._day_end_us = 0
        self._day = ""

    def add(self, index: RecordIndex) -> None:
        if index.event_type != _API_CALL:
            return
        failed = 0 if index.outcome == _SUCCESS else 1
        time_us = index.event_time_us
        if not self._day_start_us <= time_us < self._day_end_us:
            self._day = day_of(time_us)
            self._day_start_us = time_us - time_us % _US_PER_DAY
            self._day_end_us = self._day_start_us + _US_PER_DAY
        key_arns = index.key_arns
        counts = self._counts
        for arn in key_arns or ("",):
            slot = (self._day, arn, index.event_name)
            count = counts.get(slot)
            if count is None:
                counts[slot] = [1, failed]
            else:
                count[0] += 1
                count[1] += failed
        if not failed and index.event_name in LAST_USAGE_OPERATIONS:
            for arn in key_arns:
                self.last_uses.append(
                    LastUse(arn, index.event_name, time_us, index.event_id, index.request_id)
                )

    def increments(self) -> list[UsageIncrement]:
        return [
            UsageIncrement(day, arn, operation, requests, failures)
            for (day, arn, operation), (requests, failures) in self._counts.items()
        ]


_API_CALL = EventType.API_CALL.value
_SUCCESS = Outcome.SUCCESS.value
