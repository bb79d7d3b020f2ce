"""The errors only the AWS endpoint can raise, and the one table of HTTP statuses.

AWS answers problems with the request's authentication and encoding with a few
"common errors" that are not part of KMS's own model (``MissingAuthenticationToken``,
``InvalidSignatureException``, ``SerializationException``, ...). They are
:class:`KmsError` subclasses here so that they travel through the call hooks like any
other refusal: an audit hook records a badly signed call with its real reason.

Statuses follow AWS's API reference: client errors are 400, except the conflicts of
key state (409) and the server faults of KMS's model (500).
"""

from __future__ import annotations

from meridian.server.domain.errors import KmsError


class MissingAuthenticationTokenException(KmsError):
    """The request is not signed at all."""

    reason = "MissingAuthenticationTokenException"

    def __init__(self) -> None:
        super().__init__("Missing Authentication Token")


class IncompleteSignatureException(KmsError):
    """The Authorization header is there but lacks a part or is malformed."""

    reason = "IncompleteSignatureException"


class InvalidSignatureException(KmsError):
    """The signature does not verify, is out of its time window or has the wrong scope."""

    reason = "InvalidSignatureException"


class UnrecognizedClientException(KmsError):
    """The access key id is unknown or revoked (AWS's words for both)."""

    reason = "UnrecognizedClientException"

    def __init__(self) -> None:
        super().__init__("The security token included in the request is invalid.")


class SerializationException(KmsError):
    """The body is not JSON, or a member has the wrong JSON type for its shape."""

    reason = "SerializationException"


class UnknownOperationException(KmsError):
    """X-Amz-Target names no operation that this node serves."""

    reason = "UnknownOperationException"


class RequestEntityTooLargeException(KmsError):
    """The body is larger than the gateway accepts; no legal KMS request is that large."""

    reason = "RequestEntityTooLargeException"


class RequestTimeoutException(KmsError):
    """The body did not arrive in time; SDKs retry this error."""

    reason = "RequestTimeoutException"


# Everything not listed is a client error, 400, as most of KMS's errors are.
HTTP_STATUS_BY_REASON: dict[str, int] = {
    "DisabledException": 409,
    "KMSInvalidStateException": 409,
    "ConflictException": 409,
    "RequestTimeoutException": 408,
    "DryRunOperationException": 412,
    "RequestEntityTooLargeException": 413,
    "KMSInternalException": 500,
    "DependencyTimeoutException": 500,
    "KeyUnavailableException": 500,
}
HTTP_STATUS_DEFAULT = 400


def http_status_for(reason: str) -> int:
    return HTTP_STATUS_BY_REASON.get(reason, HTTP_STATUS_DEFAULT)
