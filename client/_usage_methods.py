"""KmsClient's and AsyncKmsClient's usage-tracking method (mixins, like _key_types_*).

Usage is tracked per region (each region's replica of a multi-region key has its own
last use, as in AWS), so the call goes to one definite region: the one in the ARN,
else the client's home region.
"""

from __future__ import annotations

from meridian.client._core import AsyncInvoker, Invoker, Operation
from meridian.client.usage_results import GetKeyLastUsageResult, get_key_last_usage_result
from meridian.proto.kms.v1 import kms_pb2

GET_KEY_LAST_USAGE = Operation(
    "GetKeyLastUsage",
    kms_pb2.GetKeyLastUsageRequest,
    get_key_last_usage_result,
    ("key_id",),
)


class UsageMethods:
    def get_key_last_usage(
        self: Invoker, *, key_id: str, timeout_s: float | None = None
    ) -> GetKeyLastUsageResult:
        return self._invoke(GET_KEY_LAST_USAGE, timeout_s, key_id=key_id)


class AsyncUsageMethods:
    async def get_key_last_usage(
        self: AsyncInvoker, *, key_id: str, timeout_s: float | None = None
    ) -> GetKeyLastUsageResult:
        return await self._invoke(GET_KEY_LAST_USAGE, timeout_s, key_id=key_id)
