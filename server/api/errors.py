"""The one table from error reasons to gRPC status codes (DESIGN.md §2).

The interceptor is the only place that turns a domain error into a gRPC status; the
SDK holds the inverse table. Reasons travel in a ``google.rpc.ErrorInfo`` detail so
clients never match on message text.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from meridian.server.domain import errors

ERROR_DOMAIN = "meridian.kms"

GRPC_CODE_BY_REASON: dict[str, grpc.StatusCode] = {
    "NotFoundException": grpc.StatusCode.NOT_FOUND,
    "AlreadyExistsException": grpc.StatusCode.ALREADY_EXISTS,
    "ValidationException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidCiphertextException": grpc.StatusCode.INVALID_ARGUMENT,
    "IncorrectKeyException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidKeyUsageException": grpc.StatusCode.INVALID_ARGUMENT,
    "KMSInvalidSignatureException": grpc.StatusCode.INVALID_ARGUMENT,
    "KMSInvalidMacException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidImportTokenException": grpc.StatusCode.INVALID_ARGUMENT,
    "ExpiredImportTokenException": grpc.StatusCode.INVALID_ARGUMENT,
    "IncorrectKeyMaterialException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidAliasNameException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidArnException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidMarkerException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidGrantTokenException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidGrantIdException": grpc.StatusCode.INVALID_ARGUMENT,
    "TagException": grpc.StatusCode.INVALID_ARGUMENT,
    "MalformedPolicyDocumentException": grpc.StatusCode.INVALID_ARGUMENT,
    "UnsupportedOperationException": grpc.StatusCode.INVALID_ARGUMENT,
    "DisabledException": grpc.StatusCode.FAILED_PRECONDITION,
    "KMSInvalidStateException": grpc.StatusCode.FAILED_PRECONDITION,
    "ConflictException": grpc.StatusCode.FAILED_PRECONDITION,
    "AccessDeniedException": grpc.StatusCode.PERMISSION_DENIED,
    "LimitExceededException": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "ThrottlingException": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DependencyTimeoutException": grpc.StatusCode.UNAVAILABLE,
    "KMSInternalException": grpc.StatusCode.INTERNAL,
}


def status_for(error: errors.KmsError) -> tuple[grpc.StatusCode, str, bytes]:
    """(code, message, serialized google.rpc.Status) for a domain error."""
    code = GRPC_CODE_BY_REASON.get(error.reason, grpc.StatusCode.INTERNAL)
    return code, error.message, _status_bytes(code, error.message, error.reason)


def _status_bytes(code: grpc.StatusCode, message: str, reason: str) -> bytes:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    serialized: bytes = status.SerializeToString()
    return serialized
