"""Errors of envelope encryption (``meridian.client.envelope``).

    EnvelopeError (Exception)
    ├── InvalidMessageError          not a valid message, or changed, truncated, reordered
    ├── NoDecryptableKeyError        no wrapped data key could be unwrapped by the caller
    └── EncryptionContextMismatchError   the message's context lacks an expected pair

An authentication failure (a changed byte, frames swapped, the wrong data key) never
says which check failed: like KMS's InvalidCiphertextException, the detail would only
help someone probing the format. Structural problems a user can act on (this is not a
Meridian envelope at all, a newer format version, the stream ended early) say so.
"""

from __future__ import annotations

__all__ = [
    "EncryptionContextMismatchError",
    "EnvelopeError",
    "InvalidMessageError",
    "NoDecryptableKeyError",
]


class EnvelopeError(Exception):
    """Something went wrong encrypting or decrypting an envelope message."""


class InvalidMessageError(EnvelopeError):
    """The input is not a valid envelope message, or it was changed or cut short."""

    AUTHENTICATION_FAILED = "The message is invalid or was changed."

    def __init__(self, message: str = AUTHENTICATION_FAILED) -> None:
        super().__init__(message)


class NoDecryptableKeyError(EnvelopeError):
    """None of the message's wrapped data keys could be unwrapped.

    ``attempts`` lists, per key tried, the key ARN and the error name KMS answered
    (e.g. ``("arn:...:key/...", "AccessDeniedException")``); keys the caller did not
    allow are not tried and not listed.
    """

    def __init__(self, message: str, attempts: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message)
        self.attempts = attempts


class EncryptionContextMismatchError(EnvelopeError):
    """The message's encryption context does not hold every pair the caller expected."""
