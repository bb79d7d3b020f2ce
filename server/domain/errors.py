"""The error taxonomy of Meridian, named after AWS KMS's exceptions.

Every error a caller can see is a subclass of :class:`KmsError` whose class
name is the AWS exception name (its ``reason``). The API layer maps reasons to
gRPC status codes in exactly one table (``meridian.server.api.errors``); the SDK
rebuilds the same classes from ``(code, reason)``.

    KmsError
    ├── NotFoundException
    ├── AlreadyExistsException
    ├── ValidationException
    │   (and the other INVALID_ARGUMENT reasons below)
    ├── InvalidCiphertextException      opaque: never says why
    ├── IncorrectKeyException
    ├── InvalidKeyUsageException
    ├── InvalidAliasNameException
    ├── InvalidArnException
    ├── InvalidMarkerException
    ├── InvalidGrantTokenException
    ├── InvalidGrantIdException
    ├── TagException
    ├── MalformedPolicyDocumentException
    ├── UnsupportedOperationException
    ├── KMSInvalidSignatureException / KMSInvalidMacException
    ├── InvalidImportTokenException / ExpiredImportTokenException
    ├── IncorrectKeyMaterialException   imported material that does not fit the key
    ├── DisabledException
    ├── KMSInvalidStateException
    ├── ConflictException               a rotation of the key is already in progress
    ├── AccessDeniedException
    ├── LimitExceededException / ThrottlingException
    ├── DependencyTimeoutException
    └── KMSInternalException            never the answer to bad input

Messages of user errors are precise and safe to show; they never contain key
material or plaintext.
"""

from __future__ import annotations

from typing import ClassVar


class KmsError(Exception):
    """Base of every error a caller can see. ``reason`` is the AWS exception name."""

    reason: ClassVar[str] = "KMSInternalException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundException(KmsError):
    reason = "NotFoundException"


class AlreadyExistsException(KmsError):
    reason = "AlreadyExistsException"


class ValidationException(KmsError):
    reason = "ValidationException"


class InvalidCiphertextException(KmsError):
    reason = "InvalidCiphertextException"

    # One opaque message for every decryption failure: no detail that helps an attacker.
    OPAQUE_MESSAGE: ClassVar[str] = "The ciphertext is invalid or does not match the request."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.OPAQUE_MESSAGE)


class IncorrectKeyException(KmsError):
    reason = "IncorrectKeyException"


class InvalidKeyUsageException(KmsError):
    reason = "InvalidKeyUsageException"


class InvalidAliasNameException(KmsError):
    reason = "InvalidAliasNameException"


class InvalidArnException(KmsError):
    reason = "InvalidArnException"


class InvalidMarkerException(KmsError):
    reason = "InvalidMarkerException"


class InvalidGrantTokenException(KmsError):
    reason = "InvalidGrantTokenException"


class InvalidGrantIdException(KmsError):
    reason = "InvalidGrantIdException"


class TagException(KmsError):
    reason = "TagException"


class MalformedPolicyDocumentException(KmsError):
    reason = "MalformedPolicyDocumentException"


class UnsupportedOperationException(KmsError):
    reason = "UnsupportedOperationException"


class KMSInvalidSignatureException(KmsError):
    reason = "KMSInvalidSignatureException"


class KMSInvalidMacException(KmsError):
    reason = "KMSInvalidMacException"


class InvalidImportTokenException(KmsError):
    reason = "InvalidImportTokenException"


class ExpiredImportTokenException(KmsError):
    reason = "ExpiredImportTokenException"


class IncorrectKeyMaterialException(KmsError):
    reason = "IncorrectKeyMaterialException"


class DisabledException(KmsError):
    reason = "DisabledException"


class KMSInvalidStateException(KmsError):
    reason = "KMSInvalidStateException"


class ConflictException(KmsError):
    """AWS's answer to RotateKeyOnDemand while a rotation of the key is in progress (a
    multi-Region rotation waiting for every replica region to hold the new version)."""

    reason = "ConflictException"


class AccessDeniedException(KmsError):
    reason = "AccessDeniedException"


class LimitExceededException(KmsError):
    reason = "LimitExceededException"


class ThrottlingException(KmsError):
    reason = "ThrottlingException"


class DependencyTimeoutException(KmsError):
    reason = "DependencyTimeoutException"


class KMSInternalException(KmsError):
    reason = "KMSInternalException"

    def __init__(self, message: str = "Internal error") -> None:
        super().__init__(message)


def all_error_classes() -> tuple[type[KmsError], ...]:
    """Every concrete error class, for the mapping tables and their tests."""
    return tuple(KmsError.__subclasses__())
