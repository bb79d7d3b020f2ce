"""Results of the usage-tracking operation (GetKeyLastUsage), AWS's shapes in snake_case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from meridian.proto.kms.v1 import kms_pb2

__all__ = ["GetKeyLastUsageResult", "KeyLastUsage", "get_key_last_usage_result"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLastUsage:
    """The key's last successful cryptographic use (AWS's KeyLastUsageData)."""

    operation: str
    timestamp: datetime
    cloud_trail_event_id: str  # the audit record's eventID
    kms_request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetKeyLastUsageResult:
    key_id: str  # key ARN
    key_last_usage: KeyLastUsage | None  # None: no successful use since tracking began
    tracking_start_date: datetime
    key_creation_date: datetime
    region: str


def get_key_last_usage_result(
    message: kms_pb2.GetKeyLastUsageResponse, region: str
) -> GetKeyLastUsageResult:
    usage = None
    if message.HasField("key_last_usage"):
        data = message.key_last_usage
        usage = KeyLastUsage(
            operation=data.operation,
            timestamp=data.timestamp.ToDatetime(tzinfo=UTC),
            cloud_trail_event_id=data.cloud_trail_event_id,
            kms_request_id=data.kms_request_id,
        )
    return GetKeyLastUsageResult(
        key_id=message.key_id,
        key_last_usage=usage,
        tracking_start_date=message.tracking_start_date.ToDatetime(tzinfo=UTC),
        key_creation_date=message.key_creation_date.ToDatetime(tzinfo=UTC),
        region=message.region or region,
    )
