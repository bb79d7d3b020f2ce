"""Cost estimates from usage counters and a price table (AWS's list prices by default).

The default table is AWS KMS's public pricing (reference/kms-semantics.md §1.11):
$1 per key-month (each multi-region primary and replica counts as one key; keys
pending deletion are free), $0.03 per 10,000 symmetric requests, about $0.15 per
10,000 asymmetric requests, and 20,000 free requests a month across regions.
Estimates, not a bill: key-months are pro-rated by days in the period, the free tier
by the period's share of a 30-day month, and failed requests are counted as billed.

A price table file (TOML or JSON) overrides any of:

```toml
currency = "USD"
key_month = 1.0
symmetric_per_10k = 0.03
asymmetric_per_10k = 0.15
free_requests_per_month = 20000
asymmetric_operations = ["Sign", "Verify", ...]
free_operations = []
```
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from meridian.server.audit.events import from_us
from meridian.server.audit.ports import KeyInventoryRow, LastUse, UsageRow

DAYS_PER_MONTH = 30
# Keys in these states are not billed (AWS: keys scheduled for deletion are free).
UNBILLED_STATES = frozenset({"PendingDeletion", "PendingReplicaDeletion"})
DATA_KEY_OPERATIONS = frozenset({"GenerateDataKey", "GenerateDataKeyWithoutPlaintext"})
ASYMMETRIC_OPERATIONS = frozenset(
    {
        "Sign",
        "Verify",
        "GetPublicKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "DeriveSharedSecret",
        "Encapsulate",
        "Decapsulate",
    }
)


@dataclass(frozen=True, slots=True)
class PriceTable:
    currency: str = "USD"
    key_month: float = 1.0
    symmetric_per_10k: float = 0.03
    asymmetric_per_10k: float = 0.15
    free_requests_per_month: int = 20_000
    asymmetric_operations: frozenset[str] = ASYMMETRIC_OPERATIONS
    free_operations: frozenset[str] = frozenset()

    def request_price(self, operation: str) -> float:
        if operation in self.free_operations:
            return 0.0
        per_10k = (
            self.asymmetric_per_10k
            if operation in self.asymmetric_operations
            else self.symmetric_per_10k
        )
        return per_10k / 10_000


def load_price_table(path: Path) -> PriceTable:
    """Read a TOML or JSON price table; raises ValueError naming the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read price table {path}: {error.strerror}") from None
    try:
        raw: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"price table {path} is not valid: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError("a price table is a table of prices")
    known = {item.name: item for item in fields(PriceTable)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise ValueError(f"price table: unknown entry {name!r}")
        if name.endswith("_operations"):
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"price table: {name} must be a list of operation names")
            values[name] = frozenset(value)
        elif name == "currency":
            if not isinstance(value, str):
                raise ValueError("price table: currency must be text")
            values[name] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"price table: {name} must be a number >= 0")
            values[name] = int(value) if name == "free_requests_per_month" else float(value)
    return PriceTable(**values)


@dataclass(frozen=True, slots=True)
class RegionUsage:
    region: str
    first_day: str
    last_day: str
    counts: Sequence[UsageRow]
    last_uses: Sequence[LastUse]
    keys: Sequence[KeyInventoryRow]
    tracking_start: datetime


@dataclass
class KeyCost:
    key_arn: str
    region: str
    state: str
    created: datetime | None
    requests: int = 0
    failures: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    request_cost: float = 0.0
    key_cost: float = 0.0
    last_use: LastUse | None = None

    @property
    def total(self) -> float:
        return self.request_cost + self.key_cost


@dataclass
class UsageReport:
    first_day: str
    last_day: str
    days: int
    prices: PriceTable
    keys: list[KeyCost]
    by_region_operation: dict[tuple[str, str], int]
    total_requests: int
    free_requests: int
    request_cost: float
    key_cost: float
    unused: list[KeyCost]
    data_key_requests: int
    data_key_reuse: int
    data_key_requests_with_cache: int
    data_key_saving: float

    @property
    def total_cost(self) -> float:
        return self.request_cost + self.key_cost


def build_report(
    regions: Iterable[RegionUsage],
    prices: PriceTable,
    *,
    today: date,
    unused_days: int = 90,
    data_key_reuse: int = 1,
) -> UsageReport:
    regions = list(regions)
    if not regions:
        raise ValueError("no region answered")
    first_day = min(region.first_day for region in regions)
    last_day = max(region.last_day for region in regions)
    days = (date.fromisoformat(last_day) - date.fromisoformat(first_day)).days + 1
    keys: dict[str, KeyCost] = {}
    for region in regions:
        for key in region.keys:
            keys[key.key_arn] = KeyCost(
                key.key_arn, region.region, key.key_state, from_us(key.created_at_us)
            )
        for use in region.last_uses:
            if use.key_arn in keys:
                keys[use.key_arn].last_use = use
    by_region_operation: dict[tuple[str, str], int] = defaultdict(int)
    cost_before_free = 0.0
    total_requests = 0
    symmetric_requests = 0
    data_key_requests = 0
    for region in regions:
        for row in region.counts:
            by_region_operation[(region.region, row.operation)] += row.requests
            total_requests += row.requests
            cost = row.requests * prices.request_price(row.operation)
            cost_before_free += cost
            if row.operation not in prices.asymmetric_operations:
                symmetric_requests += row.requests
            if row.operation in DATA_KEY_OPERATIONS:
                data_key_requests += row.requests
            if row.key_arn:
                entry = keys.setdefault(
                    row.key_arn, KeyCost(row.key_arn, region.region, "Deleted", None)
                )
                entry.requests += row.requests
                entry.failures += row.failures
                entry.by_operation[row.operation] = (
                    entry.by_operation.get(row.operation, 0) + row.requests
                )
                entry.request_cost += cost
    free_requests = min(
        symmetric_requests, math.floor(prices.free_requests_per_month * days / DAYS_PER_MONTH)
    )
    request_cost = max(0.0, cost_before_free - free_requests * prices.symmetric_per_10k / 10_000)
    period_end = date.fromisoformat(last_day)
    for entry in keys.values():
        if entry.state in UNBILLED_STATES or entry.state == "Deleted":
            continue
        created = entry.created.date() if entry.created else date.fromisoformat(first_day)
        billed_days = max(
            0, min(days, (period_end - max(created, date.fromisoformat(first_day))).days + 1)
        )
        entry.key_cost = prices.key_month * billed_days / DAYS_PER_MONTH
    key_cost = sum(entry.key_cost for entry in keys.values())
    unused = [
        entry
        for entry in keys.values()
        if entry.state not in UNBILLED_STATES
        and entry.state != "Deleted"
        and _unused_for(entry, today) >= unused_days
    ]
    reuse = max(1, data_key_reuse)
    with_cache = math.ceil(data_key_requests / reuse)
    saving = (data_key_requests - with_cache) * prices.symmetric_per_10k / 10_000
    return UsageReport(
        first_day=first_day,
        last_day=last_day,
        days=days,
        prices=prices,
        keys=sorted(keys.values(), key=lambda entry: (-entry.requests, entry.key_arn)),
        by_region_operation=dict(by_region_operation),
        total_requests=total_requests,
        free_requests=free_requests,
        request_cost=request_cost,
        key_cost=key_cost,
        unused=sorted(unused, key=lambda entry: entry.key_arn),
        data_key_requests=data_key_requests,
        data_key_reuse=reuse,
        data_key_requests_with_cache=with_cache,
        data_key_saving=saving,
    )


def _unused_for(entry: KeyCost, today: date) -> int:
    """Days since the key was last used successfully (or created, if never)."""
    since = entry.last_use and from_us(entry.last_use.used_at_us).date()
    since = since or (entry.created.date() if entry.created else today)
    return (today - since).days
