"""GetKeyLastUsage: a key's last successful cryptographic use, as AWS reports it.

Tracking starts when the region's audit trail was created (``TrackingStartDate``):
an empty answer for a key created after that means "never used", for an older key
"not used since tracking began" (AWS's documented reading).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meridian.server.audit.events import from_us
from meridian.server.audit.ports import AuditStorage, LastUse


@dataclass(frozen=True, slots=True)
class KeyLastUsageReport:
    key_arn: str
    last_use: LastUse | None
    tracking_start: datetime


class KeyLastUsage:
    def __init__(self, storage: AuditStorage, *, tracking_start_us: int) -> None:
        self._storage = storage
        self._tracking_start = from_us(tracking_start_us)

    async def for_key(self, key_arn: str) -> KeyLastUsageReport:
        return KeyLastUsageReport(
            key_arn=key_arn,
            last_use=await self._storage.last_use(key_arn),
            tracking_start=self._tracking_start,
        )
