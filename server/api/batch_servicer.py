"""Meridian's batch extensions: BatchEncrypt, BatchDecrypt, BatchGenerateDataKey.

Python gRPC costs far more per call than per byte, so a caller with many small
cryptographic operations sends them in one RPC (as vault transit's ``batch_input``).
The batch call itself is only an envelope: each item is run as a call of its own
through the node's :class:`CallPipeline` (authorization with the single operation's
row, an audit record with the single operation's eventName, metrics), by the single
operation's own servicer method. An item therefore succeeds or fails exactly as the
single call would, with the same AWS reason, and a failing item does not fail the
batch. docs/batch-operations.md is the user's description.

Speed comes from what the items share: one gRPC call, one principal lookup, the key and
its unwrapped material resolved by the first item of each key and found cached by the
others, and one audit group commit for all items' records (``CallPipeline.run_items``).

A mixin of ``KeyManagementServicer``, like the other servicer mixins.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.audit_documents import FACT_BATCH
from meridian.server.api.batch_memo import FACT_AUTHORIZATION_MEMO, AuthorizationMemo
from meridian.server.api.interceptor import CURRENT_CALL, CallInfo, CallPipeline, Context
from meridian.server.domain.errors import KmsError, ValidationException

# At most this many items per batch call (ValidationException above it, and for none).
BATCH_ITEMS_MAX = 100
# BatchEncrypt's plaintexts together: bounds the work and the response (each ciphertext
# adds about 120 bytes to its plaintext) well below the 1 MiB gRPC message limit.
BATCH_PLAINTEXT_BYTES_MAX = 256 * 1024

# The batch RPCs and the single operation each one's items are.
BATCH_ITEM_OPERATIONS: dict[str, str] = {
    "BatchEncrypt": "Encrypt",
    "BatchDecrypt": "Decrypt",
    "BatchGenerateDataKey": "GenerateDataKey",
}

# Facts of the batch call that describe how it arrived; each item's call carries them too,
# so the item's audit record names the same transport, access key and user agent.
_INHERITED_FACTS = ("user_agent", "transport", "access_key_id")

Behavior = Callable[[Any, Context], Awaitable[Any]]
Outcome = tuple[Any | None, KmsError | None]


class BatchServicer:
    """The three batch RPCs. ``batch_pipeline`` is the node's call pipeline (the one the
    gRPC interceptor and the AWS endpoint run every call through), set by the node."""

    batch_pipeline: CallPipeline | None = None
    _region: str

    async def BatchEncrypt(
        self, request: pb.BatchEncryptRequest, context: Context
    ) -> pb.BatchEncryptResponse:
        plaintext_bytes = sum(len(item.plaintext) for item in request.items)
        if plaintext_bytes > BATCH_PLAINTEXT_BYTES_MAX:
            raise ValidationException(
                f"The plaintexts of a BatchEncrypt request total {plaintext_bytes} bytes; "
                f"at most {BATCH_PLAINTEXT_BYTES_MAX} are allowed"
            )
        outcomes, request_ids = await self._run_items("BatchEncrypt", request.items, context)
        return pb.BatchEncryptResponse(
            results=[
                pb.BatchEncryptResult(error=_item_error(error), request_id=request_id)
                if error is not None
                else pb.BatchEncryptResult(response=response, request_id=request_id)
                for (response, error), request_id in zip(outcomes, request_ids, strict=True)
            ],
            region=self._region,
        )

    async def BatchDecrypt(
        self, request: pb.BatchDecryptRequest, context: Context
    ) -> pb.BatchDecryptResponse:
        outcomes, request_ids = await self._run_items("BatchDecrypt", request.items, context)
        return pb.BatchDecryptResponse(
            results=[
                pb.BatchDecryptResult(error=_item_error(error), request_id=request_id)
                if error is not None
                else pb.BatchDecryptResult(response=response, request_id=request_id)
                for (response, error), request_id in zip(outcomes, request_ids, strict=True)
            ],
            region=self._region,
        )

    async def BatchGenerateDataKey(
        self, request: pb.BatchGenerateDataKeyRequest, context: Context
    ) -> pb.BatchGenerateDataKeyResponse:
        outcomes, request_ids = await self._run_items(
            "BatchGenerateDataKey", request.items, context
        )
        return pb.BatchGenerateDataKeyResponse(
            results=[
                pb.BatchGenerateDataKeyResult(error=_item_error(error), request_id=request_id)
                if error is not None
                else pb.BatchGenerateDataKeyResult(response=response, request_id=request_id)
                for (response, error), request_id in zip(outcomes, request_ids, strict=True)
            ],
            region=self._region,
        )

    async def _run_items(
        self, batch_operation: str, items: Sequence[Any], context: Context
    ) -> tuple[list[Outcome], list[str]]:
        if not 1 <= len(items) <= BATCH_ITEMS_MAX:
            raise ValidationException(
                f"A {batch_operation} request takes 1 to {BATCH_ITEMS_MAX} items; "
                f"it has {len(items)}"
            )
        pipeline = self.batch_pipeline
        if pipeline is None:
            # Only a servicer built outside a node lacks it; refusing beats running the
            # items without authorization or audit.
            raise AssertionError("batch operations need the node's call pipeline")
        batch = CURRENT_CALL.get()
        operation = BATCH_ITEM_OPERATIONS[batch_operation]
        single = cast(Behavior, getattr(self, operation))
        method = _item_method(batch.method, operation)
        inherited = {name: batch.facts[name] for name in _INHERITED_FACTS if name in batch.facts}
        inherited[FACT_AUTHORIZATION_MEMO] = AuthorizationMemo()
        calls: list[tuple[CallInfo, Callable[[Any], Awaitable[Any]]]] = []
        for index, item in enumerate(items):
            facts = dict(inherited)
            facts[FACT_BATCH] = {"id": batch.request_id, "index": index}
            call = CallInfo(
                operation=operation,
                request=item,
                caller=batch.caller,
                # Derived, not random: it names the batch and the item's place in it, and
                # costs nothing per item.
                request_id=f"{batch.request_id}/{index}",
                source_address=batch.source_address,
                started=time.perf_counter(),
                method=method,
                facts=facts,
            )
            calls.append((call, _bound(single, context)))
        outcomes = await pipeline.run_items(calls)
        return outcomes, [call.request_id for call, _ in calls]


def _bound(single: Behavior, context: Context) -> Callable[[Any], Awaitable[Any]]:
    def invoke(message: Any) -> Awaitable[Any]:
        return single(message, context)

    return invoke


def _item_method(batch_method: str, operation: str) -> str:
    """``/pkg.Service/BatchEncrypt`` -> ``/pkg.Service/Encrypt``; "" stays "" (a call that
    did not come over gRPC)."""
    if not batch_method:
        return ""
    return batch_method.rsplit("/", 1)[0] + "/" + operation


def _item_error(error: KmsError) -> pb.BatchItemError:
    # The same reason and message the single call's status would carry (never a secret:
    # KmsError messages are written for callers).
    return pb.BatchItemError(reason=error.reason, message=error.message)
