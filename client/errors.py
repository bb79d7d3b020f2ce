"""Typed errors of the Meridian client.

A failed call is rebuilt from what the region sent on the wire: the gRPC status
code and the ``reason`` of the ``google.rpc.ErrorInfo`` detail, which is the AWS
exception name (docs/contributors/shared-contracts.md). The message text is never
parsed, so servers may reword messages freely. A reason this client does not know
(a newer server) or a status without ErrorInfo (a proxy, a dead connection) falls
back to a generic class chosen by the status code alone.

Errors the client raises itself, before anything reaches the wire, are not
``KmsError``: they are ordinary ``ValueError``/``RuntimeError`` subclasses, so
"the service said no" and "this program is wrong" are caught separately.

    Exception
    ├── KmsError                           a region answered with an error
    │   ├── NotFoundException                  NOT_FOUND
    │   ├── AlreadyExistsException             ALREADY_EXISTS
    │   ├── ValidationException                INVALID_ARGUMENT
    │   ├── InvalidCiphertextException         INVALID_ARGUMENT (opaque by design)
    │   ├── IncorrectKeyException              INVALID_ARGUMENT
    │   ├── InvalidKeyUsageException           INVALID_ARGUMENT
    │   ├── InvalidAliasNameException          INVALID_ARGUMENT
    │   ├── InvalidArnException                INVALID_ARGUMENT
    │   ├── InvalidMarkerException             INVALID_ARGUMENT
    │   ├── InvalidGrantTokenException         INVALID_ARGUMENT
    │   ├── InvalidGrantIdException            INVALID_ARGUMENT
    │   ├── TagException                       INVALID_ARGUMENT
    │   ├── MalformedPolicyDocumentException   INVALID_ARGUMENT
    │   ├── UnsupportedOperationException      INVALID_ARGUMENT
    │   ├── KMSInvalidSignatureException       INVALID_ARGUMENT
    │   ├── KMSInvalidMacException             INVALID_ARGUMENT
    │   ├── InvalidImportTokenException        INVALID_ARGUMENT
    │   ├── ExpiredImportTokenException        INVALID_ARGUMENT
    │   ├── IncorrectKeyMaterialException      INVALID_ARGUMENT
    │   ├── DisabledException                  FAILED_PRECONDITION
    │   ├── KMSInvalidStateException           FAILED_PRECONDITION
    │   ├── ConflictException                  FAILED_PRECONDITION (a rotation in progress)
    │   ├── AccessDeniedException              PERMISSION_DENIED or UNAUTHENTICATED
    │   ├── LimitExceededException             RESOURCE_EXHAUSTED
    │   ├── ThrottlingException                RESOURCE_EXHAUSTED
    │   ├── DependencyTimeoutException         UNAVAILABLE
    │   ├── KMSInternalException               INTERNAL
    │   ├── ServiceUnavailableError            UNAVAILABLE / DEADLINE_EXCEEDED, no known reason;
    │   │                                      also raised unsent when no region can take a call
    │   │                                      (every candidate's circuit breaker open)
    │   └── UnauthenticatedError               UNAUTHENTICATED, no known reason
    │   (any other code without a known reason: KmsError itself)
    ├── ClientClosedError (RuntimeError)   a call on a client after close()
    ├── ProtocolError (RuntimeError)       a response that breaks the API contract
    └── ClientConfigError (ValueError)     the client cannot be built or cannot place a call
        ├── UnknownRegionError                 a region the client has no endpoint for
        └── ClusterFileError                   cluster.json missing, unreadable or malformed
"""

from __future__ import annotations

import grpc

__all__ = [
    "AccessDeniedException",
    "AlreadyExistsException",
    "ClientClosedError",
    "ClientConfigError",
    "ClusterFileError",
    "ConflictException",
    "DependencyTimeoutException",
    "DisabledException",
    "ExpiredImportTokenException",
    "IncorrectKeyException",
    "IncorrectKeyMaterialException",
    "InvalidAliasNameException",
    "InvalidArnException",
    "InvalidCiphertextException",
    "InvalidGrantIdException",
    "InvalidGrantTokenException",
    "InvalidImportTokenException",
    "InvalidKeyUsageException",
    "InvalidMarkerException",
    "KMSInternalException",
    "KMSInvalidMacException",
    "KMSInvalidSignatureException",
    "KMSInvalidStateException",
    "KmsError",
    "LimitExceededException",
    "MalformedPolicyDocumentException",
    "NotFoundException",
    "ProtocolError",
    "ServiceUnavailableError",
    "TagException",
    "ThrottlingException",
    "UnauthenticatedError",
    "UnknownRegionError",
    "UnsupportedOperationException",
    "ValidationException",
    "error_class_for",
]


class KmsError(Exception):
    """A region answered a call with an error.

    ``reason`` is the AWS exception name the server sent in ErrorInfo ("" when it
    sent none), ``code`` the gRPC status code, ``region`` the region the call went
    to, ``operation`` the API operation (e.g. "Encrypt"), and ``request_id`` the
    server's ``x-request-id`` when it sent one (quote it when reporting a problem).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        region: str | None = None,
        operation: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code
        self.region = region
        self.operation = operation
        self.request_id = request_id

    @property
    def error_name(self) -> str:
        """The name to show a person: the AWS reason, else this class's name."""
        return self.reason or type(self).__name__


class NotFoundException(KmsError):
    pass


class AlreadyExistsException(KmsError):
    pass


class ValidationException(KmsError):
    pass


class InvalidCiphertextException(KmsError):
    """Every decryption failure; the server never says why, so neither do we."""


class IncorrectKeyException(KmsError):
    pass


class InvalidKeyUsageException(KmsError):
    pass


class InvalidAliasNameException(KmsError):
    pass


class InvalidArnException(KmsError):
    pass


class InvalidMarkerException(KmsError):
    pass


class InvalidGrantTokenException(KmsError):
    pass


class InvalidGrantIdException(KmsError):
    pass


class TagException(KmsError):
    pass


class MalformedPolicyDocumentException(KmsError):
    pass


class UnsupportedOperationException(KmsError):
    pass


class KMSInvalidSignatureException(KmsError):
    pass


class KMSInvalidMacException(KmsError):
    pass


class InvalidImportTokenException(KmsError):
    pass


class ExpiredImportTokenException(KmsError):
    pass


class IncorrectKeyMaterialException(KmsError):
    pass


class DisabledException(KmsError):
    pass


class KMSInvalidStateException(KmsError):
    pass


class ConflictException(KmsError):
    pass


class AccessDeniedException(KmsError):
    pass


class LimitExceededException(KmsError):
    pass


class ThrottlingException(KmsError):
    pass


class DependencyTimeoutException(KmsError):
    pass


class KMSInternalException(KmsError):
    pass


class ServiceUnavailableError(KmsError):
    """The region could not be reached or did not answer in time.

    Raised for UNAVAILABLE and DEADLINE_EXCEEDED without a known reason: the
    call may or may not have taken effect. The client raises it only after its
    retries and failover (``RoutingOptions``) found no region to answer within
    the call's deadline; ``region`` is the last region tried (for a call not
    sent at all, because every candidate's circuit breaker was open: its one
    candidate region, or None if it had several).
    """


class UnauthenticatedError(KmsError):
    """The region did not accept the client's identity (UNAUTHENTICATED)."""


class ClientClosedError(RuntimeError):
    """A call was made on a client after close()."""


class ProtocolError(RuntimeError):
    """A response broke the API contract (e.g. a pagination marker that repeats)."""


class ClientConfigError(ValueError):
    """The client cannot be built as asked, or cannot place a call."""


class UnknownRegionError(ClientConfigError):
    """A region (given by name or inside an ARN) that the client has no endpoint for."""


class ClusterFileError(ClientConfigError):
    """A cluster file that is missing, unreadable or malformed."""


# The class name is the AWS reason, so the table is built from the classes
# themselves and cannot drift from them.
_BY_REASON: dict[str, type[KmsError]] = {
    cls.__name__: cls
    for cls in (
        NotFoundException,
        AlreadyExistsException,
        ValidationException,
        InvalidCiphertextException,
        IncorrectKeyException,
        InvalidKeyUsageException,
        InvalidAliasNameException,
        InvalidArnException,
        InvalidMarkerException,
        InvalidGrantTokenException,
        InvalidGrantIdException,
        TagException,
        MalformedPolicyDocumentException,
        UnsupportedOperationException,
        KMSInvalidSignatureException,
        KMSInvalidMacException,
        InvalidImportTokenException,
        ExpiredImportTokenException,
        IncorrectKeyMaterialException,
        DisabledException,
        KMSInvalidStateException,
        ConflictException,
        AccessDeniedException,
        LimitExceededException,
        ThrottlingException,
        DependencyTimeoutException,
        KMSInternalException,
    )
}

# Without a known reason only the code is left; these codes still say something a
# caller acts on (retry elsewhere; fix credentials). Everything else is KmsError.
_BY_CODE: dict[grpc.StatusCode, type[KmsError]] = {
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServiceUnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


def error_class_for(code: grpc.StatusCode, reason: str) -> type[KmsError]:
    """The class for a failed call: by AWS reason when known, else by status code."""
    by_reason = _BY_REASON.get(reason)
    if by_reason is not None:
        return by_reason
    return _BY_CODE.get(code, KmsError)
