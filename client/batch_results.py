"""Results of Meridian's batch operations (docs/batch-operations.md).

A batch answers every item: the single operation's typed result, or the typed
exception the single call would have raised (not raised: returned in its place, since
one item failing does not fail the others). ``BatchResult.items`` keeps the order of
the request's items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Required, TypedDict, TypeVar

import grpc

from meridian.client.errors import KmsError, error_class_for
from meridian.client.results import (
    DecryptResult,
    EncryptResult,
    GenerateDataKeyResult,
    decrypt_result,
    encrypt_result,
    generate_data_key_result,
)
from meridian.proto.kms.v1 import kms_pb2

ItemResultT = TypeVar("ItemResultT")

# At most this many items per batch call, and BatchEncrypt's plaintexts together at most
# this many bytes: the node's limits (server/api/batch_servicer.py), for callers that
# split their work. The node checks them (ValidationException); the client does not.
BATCH_ITEMS_MAX = 100
BATCH_PLAINTEXT_BYTES_MAX = 256 * 1024

# The gRPC code each AWS reason travels with when it is a call's status (DESIGN.md §2).
# An item's error is not a status, so its code is the one the single call would have had.
_CODE_BY_REASON = {
    "NotFoundException": grpc.StatusCode.NOT_FOUND,
    "AlreadyExistsException": grpc.StatusCode.ALREADY_EXISTS,
    "DisabledException": grpc.StatusCode.FAILED_PRECONDITION,
    "KMSInvalidStateException": grpc.StatusCode.FAILED_PRECONDITION,
    "AccessDeniedException": grpc.StatusCode.PERMISSION_DENIED,
    "LimitExceededException": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "ThrottlingException": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DependencyTimeoutException": grpc.StatusCode.UNAVAILABLE,
    "KMSInternalException": grpc.StatusCode.INTERNAL,
}


class EncryptItem(TypedDict, total=False):
    """One item of ``batch_encrypt``: the keyword arguments of ``encrypt``."""

    key_id: Required[str]
    plaintext: Required[bytes]
    encryption_context: dict[str, str]
    grant_tokens: list[str]
    encryption_algorithm: str


class DecryptItem(TypedDict, total=False):
    """One item of ``batch_decrypt``: the keyword arguments of ``decrypt``."""

    ciphertext_blob: Required[bytes]
    encryption_context: dict[str, str]
    grant_tokens: list[str]
    key_id: str
    encryption_algorithm: str


class GenerateDataKeyItem(TypedDict, total=False):
    """One item of ``batch_generate_data_key``: the keyword arguments of
    ``generate_data_key``."""

    key_id: Required[str]
    encryption_context: dict[str, str]
    number_of_bytes: int
    key_spec: str
    grant_tokens: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult(Generic[ItemResultT]):
    """Every item's outcome, in the request's order: its result or its error."""

    items: tuple[ItemResultT | KmsError, ...]
    request_ids: tuple[str, ...]  # each item's own request id (its audit record's)
    region: str

    @property
    def results(self) -> list[ItemResultT]:
        """The successful items' results (their positions are lost: see ``items``)."""
        return [item for item in self.items if not isinstance(item, KmsError)]

    @property
    def errors(self) -> list[tuple[int, KmsError]]:
        """(index, error) of every item that failed."""
        return [
            (index, item) for index, item in enumerate(self.items) if isinstance(item, KmsError)
        ]

    def raise_first_error(self) -> None:
        """Raise the first item's error, if any item failed (the all-or-nothing view)."""
        for _, error in self.errors[:1]:
            raise error


def _item_error(
    error: kms_pb2.BatchItemError, *, operation: str, region: str, request_id: str
) -> KmsError:
    code = _CODE_BY_REASON.get(error.reason, grpc.StatusCode.INVALID_ARGUMENT)
    error_class = error_class_for(code, error.reason)
    return error_class(
        error.message or error.reason,
        reason=error.reason,
        code=code,
        region=region,
        operation=operation,
        request_id=request_id or None,
    )


def _batch_result(
    results: Sequence[Any],
    region: str,
    *,
    operation: str,
    read: Callable[[Any, str], ItemResultT],
) -> BatchResult[ItemResultT]:
    items: list[ItemResultT | KmsError] = []
    for result in results:
        if result.WhichOneof("outcome") == "response":
            items.append(read(result.response, region))
        else:
            items.append(
                _item_error(
                    result.error, operation=operation, region=region, request_id=result.request_id
                )
            )
    return BatchResult(
        items=tuple(items),
        request_ids=tuple(result.request_id for result in results),
        region=region,
    )


def batch_encrypt_result(
    message: kms_pb2.BatchEncryptResponse, region: str
) -> BatchResult[EncryptResult]:
    return _batch_result(
        message.results, message.region or region, operation="Encrypt", read=encrypt_result
    )


def batch_decrypt_result(
    message: kms_pb2.BatchDecryptResponse, region: str
) -> BatchResult[DecryptResult]:
    return _batch_result(
        message.results, message.region or region, operation="Decrypt", read=decrypt_result
    )


def batch_generate_data_key_result(
    message: kms_pb2.BatchGenerateDataKeyResponse, region: str
) -> BatchResult[GenerateDataKeyResult]:
    return _batch_result(
        message.results,
        message.region or region,
        operation="GenerateDataKey",
        read=generate_data_key_result,
    )
