"""The receiving side's bookkeeping: which entries of an origin's log are new.

A receiver keeps, per origin region, the origin's log id and the highest sequence number
it applied, and stores that position in the same transaction as the entries. So after a
crash it resumes exactly where the durable state is: an entry is applied once, a duplicate
is acknowledged without being applied, and an entry that would skip ahead is refused until
the missing ones come.

The log id changes only if the origin's database was replaced (a new data directory): its
sequence numbers then start over, and so does the position kept for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InboundPosition:
    log_id: bytes
    applied_seq: int


@dataclass(frozen=True, slots=True)
class ApplyFrom:
    """Apply the entries with seq > ``skip_through``; the new position is the batch's last."""

    skip_through: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Every entry was applied before: acknowledge ``position`` and apply nothing."""

    position: int


@dataclass(frozen=True, slots=True)
class Gap:
    """The batch starts after ``position`` + 1: refuse it; the sender resumes from here."""

    position: int


EntriesPlan = ApplyFrom | Duplicate | Gap


def applied_seq(position: InboundPosition | None, log_id: bytes) -> int:
    if position is None or position.log_id != log_id:
        return 0
    return position.applied_seq


def plan_entries(
    position: InboundPosition | None, *, log_id: bytes, first_seq: int, last_seq: int
) -> EntriesPlan:
    if not 1 <= first_seq <= last_seq:
        raise ValueError("a batch covers 1 <= first_seq <= last_seq")
    current = applied_seq(position, log_id)
    if first_seq > current + 1:
        return Gap(current)
    if last_seq <= current:
        return Duplicate(current)
    return ApplyFrom(current)


def position_after_snapshot(
    position: InboundPosition | None, *, log_id: bytes, through_seq: int, last_chunk: bool
) -> int:
    """A snapshot's last chunk moves the position to its ``through_seq`` (never back)."""
    current = applied_seq(position, log_id)
    return max(current, through_seq) if last_chunk else current
