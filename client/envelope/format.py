"""The envelope message format, version 1: layout, limits, encoding and parsing.

docs/envelope-format.md is the specification; this module is its code, without any
cryptography (that is ``_recipe.py``). All integers are unsigned big-endian.

    message = header || frame* || final frame
    header  = "MENV" | version 0x01 | suite 0x01 | message id (32) | frame length (u32)
              | context length (u16) | canonical context
              | data key count (u8) | count x (arn length (u16) | arn | blob length (u16) | blob)
              | commitment (32) | header tag (16)
    frame   = 0x00 | ciphertext (frame length) | tag (16)
    final   = 0x01 | content length (u32) | ciphertext (content length) | tag (16)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from meridian.client.envelope.errors import InvalidMessageError

__all__ = [
    "MAGIC",
    "Header",
    "HeaderReader",
    "canonical_context",
    "decode_context",
]

MAGIC = b"MENV"
VERSION = 1
# Suite 1: AES-256-GCM frames, HKDF-SHA512 key derivation from the data key and the
# message id, a 32-byte key commitment.
SUITE_AES256_GCM_HKDF_SHA512_COMMIT = 1

MESSAGE_ID_BYTES = 32
DATA_KEY_BYTES = 32
COMMITMENT_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12

FRAME_REGULAR = 0x00
FRAME_FINAL = 0x01

# Limits (STYLE.md 11). A frame is what a reader holds in memory at once.
FRAME_LENGTH_MIN = 1
FRAME_LENGTH_MAX = 16 * 1024 * 1024
FRAME_LENGTH_DEFAULT = 64 * 1024
FRAMES_MAX = 2**32 - 1  # sequence numbers 1 .. 2^32-1; 0 is the header's nonce
DATA_KEYS_MAX = 16  # wrapped data keys per message (the ESDK's max encrypted data keys)
KEY_ARN_BYTES_MAX = 2048
WRAPPED_KEY_BYTES_MAX = 6144  # AWS's CiphertextBlob limit
CONTEXT_BYTES_MAX = 8192  # KMS's limit: the context is also sent to KMS with every key
CONTEXT_PAIRS_MAX = 64

_FIXED = struct.Struct(">4sBB32sI")  # magic, version, suite, message id, frame length
HEADER_BYTES_MAX = (
    _FIXED.size
    + 2
    + CONTEXT_BYTES_MAX
    + 1
    + DATA_KEYS_MAX * (2 + KEY_ARN_BYTES_MAX + 2 + WRAPPED_KEY_BYTES_MAX)
    + COMMITMENT_BYTES
    + TAG_BYTES
)


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """The data key as one KMS key sealed it: the key's ARN and KMS's ciphertext blob."""

    key_arn: str
    ciphertext_blob: bytes


@dataclass(frozen=True, slots=True)
class Header:
    message_id: bytes
    frame_length: int
    encryption_context: dict[str, str]
    canonical_context: bytes
    wrapped_keys: tuple[WrappedKey, ...]
    commitment: bytes
    # The bytes the header tag authenticates (everything before the tag), and the tag.
    authenticated: bytes
    tag: bytes

    @property
    def suite(self) -> int:
        return SUITE_AES256_GCM_HKDF_SHA512_COMMIT


def header_body(
    *,
    message_id: bytes,
    frame_length: int,
    canonical: bytes,
    wrapped_keys: tuple[WrappedKey, ...],
    commitment: bytes,
) -> bytes:
    """Every header byte before the header tag."""
    check_frame_length(frame_length)
    if len(message_id) != MESSAGE_ID_BYTES or len(commitment) != COMMITMENT_BYTES:
        raise ValueError("message id and commitment are 32 bytes each")
    if not 1 <= len(wrapped_keys) <= DATA_KEYS_MAX:
        raise ValueError(f"a message carries 1 to {DATA_KEYS_MAX} wrapped data keys")
    parts = [
        _FIXED.pack(MAGIC, VERSION, SUITE_AES256_GCM_HKDF_SHA512_COMMIT, message_id, frame_length),
        _u16(len(canonical)),
        canonical,
        bytes([len(wrapped_keys)]),
    ]
    for wrapped in wrapped_keys:
        arn = wrapped.key_arn.encode("utf-8")
        if not 1 <= len(arn) <= KEY_ARN_BYTES_MAX:
            raise ValueError(f"a key ARN is 1 to {KEY_ARN_BYTES_MAX} bytes")
        if not 1 <= len(wrapped.ciphertext_blob) <= WRAPPED_KEY_BYTES_MAX:
            raise ValueError(f"a wrapped data key is 1 to {WRAPPED_KEY_BYTES_MAX} bytes")
        parts += [_u16(len(arn)), arn, _u16(len(wrapped.ciphertext_blob)), wrapped.ciphertext_blob]
    parts.append(commitment)
    return b"".join(parts)


def check_frame_length(frame_length: int) -> None:
    if not FRAME_LENGTH_MIN <= frame_length <= FRAME_LENGTH_MAX:
        raise ValueError(
            f"frame_length must be between {FRAME_LENGTH_MIN} and {FRAME_LENGTH_MAX} bytes"
        )


class HeaderReader:
    """Collects a message's first bytes until its header is complete (bounded memory)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[Header, bytes] | None:
        """Add bytes; once the header is complete, return it and the bytes after it."""
        self._buffer += data
        parsed = _parse_header(bytes(self._buffer))
        if parsed is None:
            if len(self._buffer) > HEADER_BYTES_MAX:
                raise InvalidMessageError("The message header is larger than any valid header.")
            return None
        header, used = parsed
        rest = bytes(self._buffer[used:])
        self._buffer.clear()
        return header, rest

    def finish(self) -> NoReturn:
        """The input ended: raise, since a complete header would have been returned."""
        if not self._buffer:
            raise InvalidMessageError("The message is empty.")
        _parse_header(bytes(self._buffer), final=True)
        raise InvalidMessageError("The message ends inside its header.")


def _parse_header(data: bytes, *, final: bool = False) -> tuple[Header, int] | None:
    """(header, bytes used), or None if ``data`` is a valid but incomplete header."""
    reader = _Reader(data)
    fixed = reader.take(_FIXED.size)
    if fixed is None:
        _check_prefix(data)
        return None
    magic, version, suite, message_id, frame_length = _FIXED.unpack(fixed)
    _check_prefix(data)
    if not FRAME_LENGTH_MIN <= frame_length <= FRAME_LENGTH_MAX:
        raise InvalidMessageError("The message names an invalid frame length.")
    context_length = reader.u16()
    if context_length is None:
        return None
    if context_length > CONTEXT_BYTES_MAX:
        raise InvalidMessageError("The message's encryption context is too large.")
    canonical = reader.take(context_length)
    count = reader.u8()
    if canonical is None or count is None:
        return None
    encryption_context = decode_context(canonical)
    if not 1 <= count <= DATA_KEYS_MAX:
        raise InvalidMessageError(
            f"The message carries {count} wrapped data keys; at most {DATA_KEYS_MAX} are allowed."
        )
    wrapped_keys = []
    for _ in range(count):
        arn_length = reader.u16()
        if arn_length is None:
            return None
        arn = reader.take(arn_length)
        blob_length = reader.u16()
        if arn is None or blob_length is None:
            return None
        blob = reader.take(blob_length)
        if blob is None:
            return None
        if not arn or not blob or arn_length > KEY_ARN_BYTES_MAX:
            raise InvalidMessageError("The message holds a malformed wrapped data key.")
        try:
            key_arn = arn.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessageError("The message holds a malformed wrapped data key.") from None
        wrapped_keys.append(WrappedKey(key_arn, blob))
    commitment = reader.take(COMMITMENT_BYTES)
    if commitment is None:
        return None
    authenticated_end = reader.offset
    tag = reader.take(TAG_BYTES)
    if tag is None:
        return None
    del version, suite, magic
    header = Header(
        message_id=message_id,
        frame_length=frame_length,
        encryption_context=encryption_context,
        canonical_context=canonical,
        wrapped_keys=tuple(wrapped_keys),
        commitment=commitment,
        authenticated=data[:authenticated_end],
        tag=tag,
    )
    return header, reader.offset


def _check_prefix(data: bytes) -> None:
    """Refuse early what is not a version-1 message, even from a few bytes."""
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise InvalidMessageError("The input is not a Meridian envelope message.")
    if len(data) > 4 and data[4] != VERSION:
        raise InvalidMessageError(
            f"The message has format version {data[4]}; this client reads version {VERSION}."
        )
    if len(data) > 5 and data[5] != SUITE_AES256_GCM_HKDF_SHA512_COMMIT:
        raise InvalidMessageError(f"The message uses unknown algorithm suite {data[5]}.")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    def take(self, size: int) -> bytes | None:
        if self.offset + size > len(self._data):
            return None
        chunk = self._data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u8(self) -> int | None:
        raw = self.take(1)
        return None if raw is None else raw[0]

    def u16(self) -> int | None:
        raw = self.take(2)
        return None if raw is None else int.from_bytes(raw, "big")


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


# ---- the encryption context ------------------------------------------------------------


def canonical_context(encryption_context: Mapping[str, str]) -> bytes:
    """The AWS Encryption SDK's encoding, as in docs/ciphertext-format.md: empty for no
    pairs, else the pair count and the pairs sorted by their keys' UTF-8 bytes, each key
    and value as a u16 length and UTF-8 bytes."""
    if len(encryption_context) > CONTEXT_PAIRS_MAX:
        raise ValueError(f"an encryption context has at most {CONTEXT_PAIRS_MAX} pairs")
    pairs = []
    for key, value in encryption_context.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ValueError("an encryption context maps non-empty strings to strings")
        pairs.append((key.encode("utf-8"), value.encode("utf-8")))
    if not pairs:
        return b""
    pairs.sort()
    parts = [_u16(len(pairs))]
    for key_bytes, value_bytes in pairs:
        parts += [_u16(len(key_bytes)), key_bytes, _u16(len(value_bytes)), value_bytes]
    encoded = b"".join(parts)
    if len(encoded) > CONTEXT_BYTES_MAX:
        raise ValueError(f"the encryption context encodes to more than {CONTEXT_BYTES_MAX} bytes")
    return encoded


def decode_context(canonical: bytes) -> dict[str, str]:
    """Parse a canonical context; refuse any encoding ``canonical_context`` would not make."""
    if not canonical:
        return {}
    reader = _Reader(canonical)
    count = reader.u16()
    context: dict[str, str] = {}
    previous = b""
    for index in range(count or 0):
        key_length = reader.u16()
        key = reader.take(key_length or 0) if key_length is not None else None
        value_length = reader.u16()
        value = reader.take(value_length or 0) if value_length is not None else None
        if key is None or value is None or not key or (index and key <= previous):
            raise InvalidMessageError("The message's encryption context is malformed.")
        previous = key
        try:
            context[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessageError("The message's encryption context is malformed.") from None
    if not count or reader.offset != len(canonical):
        raise InvalidMessageError("The message's encryption context is malformed.")
    return context
