"""The usage-tracking rows of test_client_requests' table: SDK method, arguments, request."""

from __future__ import annotations

from typing import Any

from meridian.proto.kms.v1 import kms_pb2 as pb

USAGE_CALLS: list[tuple[str, dict[str, Any], str, Any]] = [
    (
        "get_key_last_usage",
        {"key_id": "alias/payroll"},
        "GetKeyLastUsage",
        pb.GetKeyLastUsageRequest(key_id="alias/payroll"),
    ),
]
