"""KmsClient's and AsyncKmsClient's batch methods (mixins, like _usage_methods).

Meridian's batch extensions (docs/batch-operations.md) send up to 100 Encrypt, Decrypt
or GenerateDataKey calls in one RPC. Each item takes the single method's keyword
arguments (a mapping) and comes back as the single method's result or the exception
the single call would have raised (``BatchResult``).

Retry table: none of the three changes state, so a batch is repeatable (resent after
an unknown outcome, like its single operations); it is not hedged (a second copy of a
large batch doubles the node's work). A batch acts in one region: the region of the
first item whose key id is an ARN, else the client's home region, as for a single call
naming no ARN. Items whose keys live elsewhere fail there with NotFoundException.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meridian.client._core import (
    AsyncInvoker,
    Invoker,
    Operation,
    RequestT,
    build_request,
)
from meridian.client.batch_results import (
    BatchResult,
    DecryptItem,
    EncryptItem,
    GenerateDataKeyItem,
    batch_decrypt_result,
    batch_encrypt_result,
    batch_generate_data_key_result,
)
from meridian.client.results import DecryptResult, EncryptResult, GenerateDataKeyResult
from meridian.proto.kms.v1 import kms_pb2


def _route_by_items(fields: Mapping[str, object]) -> Mapping[str, object]:
    """The batch's routing field: the first item key id that is an ARN, else the first."""
    items = fields.get("items")
    key_ids = [
        item.key_id
        for item in (items if isinstance(items, Sequence) else ())
        if isinstance(getattr(item, "key_id", None), str) and item.key_id
    ]
    arns = [key_id for key_id in key_ids if key_id.startswith("arn:")]
    return {"key_id": (arns or key_ids or [""])[0]}


BATCH_ENCRYPT = Operation(
    "BatchEncrypt",
    kms_pb2.BatchEncryptRequest,
    batch_encrypt_result,
    ("key_id",),
    route_fields=_route_by_items,
)
BATCH_DECRYPT = Operation(
    "BatchDecrypt",
    kms_pb2.BatchDecryptRequest,
    batch_decrypt_result,
    ("key_id",),
    route_fields=_route_by_items,
)
BATCH_GENERATE_DATA_KEY = Operation(
    "BatchGenerateDataKey",
    kms_pb2.BatchGenerateDataKeyRequest,
    batch_generate_data_key_result,
    ("key_id",),
    route_fields=_route_by_items,
)


def _items(request_type: type[RequestT], items: Sequence[Mapping[str, object]]) -> list[RequestT]:
    """Each item's request, built as the single method builds it (None = absent)."""
    if isinstance(items, Mapping):
        raise TypeError("items takes a list of mappings, not a single mapping")
    built: list[RequestT] = []
    for index, item in enumerate(items):
        unknown = sorted(set(item) - set(request_type.DESCRIPTOR.fields_by_name))
        if unknown:
            raise TypeError(f"item {index} has unknown fields: {', '.join(unknown)}")
        built.append(build_request(request_type, item))
    return built


class BatchMethods:
    def batch_encrypt(
        self: Invoker, *, items: Sequence[EncryptItem], timeout_s: float | None = None
    ) -> BatchResult[EncryptResult]:
        return self._invoke(BATCH_ENCRYPT, timeout_s, items=_items(kms_pb2.EncryptRequest, items))

    def batch_decrypt(
        self: Invoker, *, items: Sequence[DecryptItem], timeout_s: float | None = None
    ) -> BatchResult[DecryptResult]:
        return self._invoke(BATCH_DECRYPT, timeout_s, items=_items(kms_pb2.DecryptRequest, items))

    def batch_generate_data_key(
        self: Invoker, *, items: Sequence[GenerateDataKeyItem], timeout_s: float | None = None
    ) -> BatchResult[GenerateDataKeyResult]:
        return self._invoke(
            BATCH_GENERATE_DATA_KEY,
            timeout_s,
            items=_items(kms_pb2.GenerateDataKeyRequest, items),
        )


class AsyncBatchMethods:
    async def batch_encrypt(
        self: AsyncInvoker, *, items: Sequence[EncryptItem], timeout_s: float | None = None
    ) -> BatchResult[EncryptResult]:
        return await self._invoke(
            BATCH_ENCRYPT, timeout_s, items=_items(kms_pb2.EncryptRequest, items)
        )

    async def batch_decrypt(
        self: AsyncInvoker, *, items: Sequence[DecryptItem], timeout_s: float | None = None
    ) -> BatchResult[DecryptResult]:
        return await self._invoke(
            BATCH_DECRYPT, timeout_s, items=_items(kms_pb2.DecryptRequest, items)
        )

    async def batch_generate_data_key(
        self: AsyncInvoker,
        *,
        items: Sequence[GenerateDataKeyItem],
        timeout_s: float | None = None,
    ) -> BatchResult[GenerateDataKeyResult]:
        return await self._invoke(
            BATCH_GENERATE_DATA_KEY,
            timeout_s,
            items=_items(kms_pb2.GenerateDataKeyRequest, items),
        )
