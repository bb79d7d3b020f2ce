"""The encryption context: validation and its canonical byte encoding.

The canonical encoding is the one the AWS Encryption SDK uses, so that the authenticated
data of a ciphertext depends only on the set of pairs, never on the order a caller sent them.
Format and limits are documented in ``docs/ciphertext-format.md``.
"""

from __future__ import annotations

from collections.abc import Mapping

from meridian.server.domain.errors import ValidationException

# AWS does not publish a limit in its API model, so Meridian sets its own: the whole
# canonical encoding (count, lengths, keys and values) is at most this many bytes.
ENCRYPTION_CONTEXT_BYTES_MAX = 8192
ENCRYPTION_CONTEXT_PAIRS_MAX = 64

# A key is named in an error message only if it is this short and printable ASCII;
# otherwise the message names its position, so that messages stay short and safe to log.
_KEY_NAMED_IN_MESSAGE_CHARS_MAX = 64

# The encoding writes each count and length as an unsigned 16-bit big-endian integer.
_UINT16_BYTES = 2


def validate_encryption_context(encryption_context: Mapping[str, str]) -> None:
    """Raise ValidationException unless ``encryption_context`` is a valid context."""
    _encoded_pairs(encryption_context)


def canonical_encryption_context(encryption_context: Mapping[str, str]) -> bytes:
    """Return the canonical encoding of ``encryption_context``; validates it first.

    An empty context encodes as ``b""``. Otherwise: the number of pairs, then the pairs
    sorted by the UTF-8 bytes of their keys, each key and value as its length and its
    UTF-8 bytes; every count and length is an unsigned 16-bit big-endian integer.
    """
    pairs = _encoded_pairs(encryption_context)
    if not pairs:
        return b""
    # Keys of a mapping are distinct and UTF-8 is injective, so sorting never has to
    # compare values and the order is total.
    pairs.sort()
    parts = [len(pairs).to_bytes(_UINT16_BYTES, "big")]
    for key, value in pairs:
        parts.append(len(key).to_bytes(_UINT16_BYTES, "big"))
        parts.append(key)
        parts.append(len(value).to_bytes(_UINT16_BYTES, "big"))
        parts.append(value)
    return b"".join(parts)


def _encoded_pairs(encryption_context: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Validate the context and return its pairs as UTF-8 bytes, in input order.

    Validation and encoding happen in one pass because the size limit is a limit on the
    encoded bytes, and the hot path (seal and open) needs the encoding anyway.
    """
    if not isinstance(encryption_context, Mapping):
        raise ValidationException("Encryption context must be a map of strings to strings")
    if len(encryption_context) > ENCRYPTION_CONTEXT_PAIRS_MAX:
        raise ValidationException(
            f"Encryption context must have at most {ENCRYPTION_CONTEXT_PAIRS_MAX} pairs"
        )
    encoded_bytes = _UINT16_BYTES if encryption_context else 0
    pairs: list[tuple[bytes, bytes]] = []
    for index, (key, value) in enumerate(encryption_context.items()):
        label = _key_label(key, index)
        if not isinstance(key, str):
            raise ValidationException(f"Encryption context key {label} must be a string")
        if not isinstance(value, str):
            raise ValidationException(
                f"The value of encryption context key {label} must be a string"
            )
        if not key:
            raise ValidationException(f"Encryption context key {label} must not be empty")
        # A UTF-8 encoding has at least one byte per character, so an overlong string is
        # refused before the cost of encoding it is paid.
        if len(key) + len(value) > ENCRYPTION_CONTEXT_BYTES_MAX:
            raise _too_large()
        try:
            key_bytes = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationException(
                f"Encryption context key {label} must be valid UTF-8"
            ) from None
        try:
            value_bytes = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationException(
                f"The value of encryption context key {label} must be valid UTF-8"
            ) from None
        encoded_bytes += 2 * _UINT16_BYTES + len(key_bytes) + len(value_bytes)
        if encoded_bytes > ENCRYPTION_CONTEXT_BYTES_MAX:
            raise _too_large()
        pairs.append((key_bytes, value_bytes))
    return pairs


def _too_large() -> ValidationException:
    return ValidationException(
        f"Encryption context must encode to at most {ENCRYPTION_CONTEXT_BYTES_MAX} bytes"
    )


def _key_label(key: object, index: int) -> str:
    """Name a key in an error message: quoted if short and printable ASCII, else by position."""
    if (
        isinstance(key, str)
        and 0 < len(key) <= _KEY_NAMED_IN_MESSAGE_CHARS_MAX
        and key.isascii()
        and key.isprintable()
        and '"' not in key
    ):
        return f'"{key}"'
    return f"at position {index}"
