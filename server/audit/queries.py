"""Read side of the trail for the audit API: filters, pages, usage windows.

Validates what a caller asks (limits, outcomes, dates) with AWS-style errors, and
turns the names a person types (a key id, an alias, a principal name) into the ARNs
the records are indexed by.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from meridian.server.audit.chain import StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.events import Outcome, to_us
from meridian.server.audit.ports import (
    AuditStorage,
    KeyInventoryRow,
    LastUse,
    RecordQuery,
    UsageRow,
)
from meridian.server.domain import identifiers
from meridian.server.domain.errors import ValidationException

PAGE_ITEMS_MAX = 1000
USAGE_DAYS_MAX = 3660
AliasLookup = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class RecordFilter:
    after_seq: int = 0
    limit: int | None = None
    key_id: str = ""
    principal: str = ""
    event_name: str = ""
    outcome: str = ""
    error_code: str = ""
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: list[StoredRecord]
    truncated: bool

    @property
    def next_after_seq(self) -> int:
        return self.records[-1].seq if self.records else 0


@dataclass(frozen=True, slots=True)
class UsageWindow:
    first_day: str
    last_day: str
    counts: list[UsageRow]
    last_uses: list[LastUse]
    keys: list[KeyInventoryRow]


class AuditQueries:
    def __init__(
        self,
        storage: AuditStorage,
        *,
        region: str,
        account_id: str,
        alias_lookup: AliasLookup,
        own_public_keys: Callable[[], Mapping[str, bytes]],
    ) -> None:
        self._storage = storage
        self._own_public_keys = own_public_keys
        self._region = region
        self._account_id = account_id
        self._alias_lookup = alias_lookup

    async def records(self, wanted: RecordFilter) -> RecordPage:
        limit = page_limit(wanted.limit)
        if wanted.after_seq < 0:
            raise ValidationException("AfterSeq must not be negative")
        outcomes = {outcome.value for outcome in Outcome}
        if wanted.outcome and wanted.outcome not in outcomes:
            raise ValidationException(f"Outcome must be one of {', '.join(sorted(outcomes))}")
        query = RecordQuery(
            after_seq=wanted.after_seq,
            limit=limit + 1,
            key_arn=await self._key_arn(wanted.key_id) if wanted.key_id else "",
            principal_arn=self._principal_arn(wanted.principal),
            event_name=wanted.event_name,
            outcome=wanted.outcome,
            error_code=wanted.error_code,
            start_us=to_us(wanted.start) if wanted.start else None,
            end_us=to_us(wanted.end) if wanted.end else None,
        )
        records = await self._storage.records(query)
        return RecordPage(records[:limit], len(records) > limit)

    async def digests(
        self, origin_region: str, *, after_number: int, limit: int | None
    ) -> tuple[list[SignedDigest], list[tuple[str, bytes]], bool]:
        """Digests of ``origin_region`` held here, the keys trusted for them, truncated."""
        size = page_limit(limit)
        if after_number < 0:
            raise ValidationException("AfterNumber must not be negative")
        if origin_region and not identifiers.is_valid_region(origin_region):
            raise ValidationException(f"{origin_region!r} is not a region name")
        if not origin_region or origin_region == self._region:
            found = await self._storage.digests(after_number=after_number, limit=size + 1)
            keys = list(self._own_public_keys().items())
        else:
            found = await self._storage.peer_digests(
                origin_region, after_number=after_number, limit=size + 1
            )
            keys = await self._storage.peer_keys(origin_region)
        return found[:size], keys, len(found) > size

    async def usage(self, first_day: str, last_day: str, *, today: date) -> UsageWindow:
        last = _day(last_day, "LastDay") if last_day else today
        first = _day(first_day, "FirstDay") if first_day else last - timedelta(days=29)
        if first > last:
            raise ValidationException("FirstDay must not be after LastDay")
        if (last - first).days >= USAGE_DAYS_MAX:
            raise ValidationException(f"A usage report covers at most {USAGE_DAYS_MAX} days")
        counts = await self._storage.usage_rows(
            first_day=first.isoformat(), last_day=last.isoformat()
        )
        return UsageWindow(
            first_day=first.isoformat(),
            last_day=last.isoformat(),
            counts=counts,
            last_uses=await self._storage.last_uses(),
            keys=await self._storage.key_inventory(),
        )

    async def _key_arn(self, key_id: str) -> str:
        if key_id.startswith("arn:"):
            arn = identifiers.parse_arn(key_id)
            if arn.resource.startswith("key/"):
                return key_id
            key_id = arn.resource
        if key_id.startswith("alias/"):
            target = await self._alias_lookup(key_id)
            if target is None:
                raise ValidationException(f"Alias {key_id} does not exist in {self._region}")
            return identifiers.key_arn(self._region, self._account_id, target)
        if not identifiers.is_key_id(key_id):
            raise ValidationException(f"{key_id!r} is not a key id, key ARN or alias")
        return identifiers.key_arn(self._region, self._account_id, key_id)

    def _principal_arn(self, principal: str) -> str:
        if not principal or principal.startswith("arn:"):
            return principal
        return f"arn:meridian:iam::{self._account_id}:user/{principal}"


def page_limit(limit: int | None) -> int:
    if limit is None:
        return PAGE_ITEMS_MAX
    if not 1 <= limit <= PAGE_ITEMS_MAX:
        raise ValidationException(f"Limit must be between 1 and {PAGE_ITEMS_MAX}")
    return limit


def _day(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationException(f"{field} must be a date like 2026-01-31") from None
