"""Seal and open the symmetric ciphertext blob (format version 1).

The blob is public and self-describing: it names its key and key version, and carries a
per-message salt and nonce. ``docs/ciphertext-format.md`` specifies it byte by byte and
gives test vectors (``tests/vectors/ciphertext_v1.json``).

    offset  size  field
    0       1     format version = 0x01
    1       1     L = length of the key id in bytes (1..64)
    2       L     key id, printable ASCII
    2+L     32    key material id (the key version)
    34+L    32    salt
    66+L    12    nonce
    78+L    n+16  AES-256-GCM ciphertext || tag

Every failure to open a blob, whatever its cause, is one opaque InvalidCiphertextException.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meridian.server.domain.crypto.context import canonical_encryption_context
from meridian.server.domain.errors import InvalidCiphertextException, ValidationException

FORMAT_VERSION = 1
# AWS's limit on CiphertextBlob. A blob of the largest plaintext and longest key id is
# 4254 bytes, so the limit leaves room and is never reached by a blob Meridian made.
BLOB_BYTES_MAX = 6144
# AWS's limit on the plaintext of Encrypt; GenerateDataKey's keys are smaller.
PLAINTEXT_BYTES_MAX = 4096
KEY_ID_BYTES_MAX = 64
MATERIAL_BYTES = 32
KEY_MATERIAL_ID_BYTES = 32
SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
HKDF_INFO = b"meridian/kms/v1/symmetric-message-key"

# Version byte, key id length byte, key material id, salt and nonce: the header without
# the key id itself.
_HEADER_FIXED_BYTES = 1 + 1 + KEY_MATERIAL_ID_BYTES + SALT_BYTES + NONCE_BYTES
# Key ids are UUIDs or "mrk-" and hex today. The format admits any printable ASCII without
# spaces, so that a blob is parsed the same way whatever key id forms come later.
_KEY_ID_PATTERN = re.compile(rb"[\x21-\x7e]{1,%d}" % KEY_ID_BYTES_MAX)


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """What a blob says about itself: which key and which key version sealed it."""

    key_id: str
    key_material_id: bytes

    @property
    def key_material_id_hex(self) -> str:
        """The key version as AWS spells a KeyMaterialId: 64 lowercase hex digits."""
        return self.key_material_id.hex()


def blob_overhead_bytes(key_id: str) -> int:
    """The bytes a blob adds to its plaintext when sealed under ``key_id``."""
    return _HEADER_FIXED_BYTES + len(_key_id_bytes(key_id)) + TAG_BYTES


def parse_header(blob: bytes) -> BlobHeader:
    """Read the key id and key material id of ``blob``, without decrypting it.

    Raises InvalidCiphertextException if ``blob`` is not a well-formed version 1 blob.
    """
    header_bytes = _checked_header_bytes(blob)
    key_id_end = header_bytes - NONCE_BYTES - SALT_BYTES - KEY_MATERIAL_ID_BYTES
    return BlobHeader(
        key_id=blob[2:key_id_end].decode("ascii"),
        key_material_id=blob[key_id_end : key_id_end + KEY_MATERIAL_ID_BYTES],
    )


def seal(
    material: bytes,
    *,
    key_id: str,
    key_material_id: bytes,
    plaintext: bytes,
    encryption_context: Mapping[str, str],
    randbytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt ``plaintext`` under one key version's ``material`` and return the blob.

    ``randbytes`` is called once for the salt (32 bytes), then once for the nonce
    (12 bytes); tests inject it to reproduce the published vectors.

    Raises ValidationException for a bad encryption context or an overlong plaintext, and
    ValueError for arguments only a programming error can produce.
    """
    _require_bytes("material", material, MATERIAL_BYTES)
    _require_bytes("key_material_id", key_material_id, KEY_MATERIAL_ID_BYTES)
    key_id_bytes = _key_id_bytes(key_id)
    if len(plaintext) > PLAINTEXT_BYTES_MAX:
        raise ValidationException(f"Plaintext must be at most {PLAINTEXT_BYTES_MAX} bytes")
    context = canonical_encryption_context(encryption_context)
    salt = randbytes(SALT_BYTES)
    nonce = randbytes(NONCE_BYTES)
    _require_bytes("randbytes(32)", salt, SALT_BYTES)
    _require_bytes("randbytes(12)", nonce, NONCE_BYTES)
    header = b"".join(
        (bytes((FORMAT_VERSION, len(key_id_bytes))), key_id_bytes, key_material_id, salt, nonce)
    )
    sealed = AESGCM(_message_key(material, salt)).encrypt(nonce, plaintext, header + context)
    return header + sealed


def open_blob(
    material: bytes,
    blob: bytes,
    *,
    encryption_context: Mapping[str, str],
) -> bytes:
    """Verify and decrypt ``blob`` with one key version's ``material``; return the plaintext.

    The caller finds ``material`` through :func:`parse_header`. Raises the opaque
    InvalidCiphertextException on every failure: malformed blob, other key or key version,
    other encryption context, any change to any byte. An encryption context that is itself
    invalid is bad input, not a decryption failure, and raises ValidationException.
    """
    _require_bytes("material", material, MATERIAL_BYTES)
    context = canonical_encryption_context(encryption_context)
    header_bytes = _checked_header_bytes(blob)
    nonce_offset = header_bytes - NONCE_BYTES
    salt = blob[nonce_offset - SALT_BYTES : nonce_offset]
    # A view spares copying the ciphertext, the only part of the blob that can be large.
    view = memoryview(blob)
    try:
        return AESGCM(_message_key(material, salt)).decrypt(
            view[nonce_offset:header_bytes], view[header_bytes:], blob[:header_bytes] + context
        )
    except InvalidTag:
        # "from None" drops the cause, so that not even a traceback tells why it failed.
        raise InvalidCiphertextException() from None


def _message_key(material: bytes, salt: bytes) -> bytes:
    """Derive the message's AES-256 key; a fresh salt gives every message its own key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=HKDF_INFO).derive(material)


def _checked_header_bytes(blob: bytes) -> int:
    """Return the header length of ``blob`` once every structural check has passed."""
    blob_bytes = len(blob)
    if not _HEADER_FIXED_BYTES + 1 + TAG_BYTES <= blob_bytes <= BLOB_BYTES_MAX:
        raise InvalidCiphertextException()
    if blob[0] != FORMAT_VERSION:
        raise InvalidCiphertextException()
    key_id_bytes = blob[1]
    if not 1 <= key_id_bytes <= KEY_ID_BYTES_MAX:
        raise InvalidCiphertextException()
    header_bytes = _HEADER_FIXED_BYTES + key_id_bytes
    if blob_bytes < header_bytes + TAG_BYTES:
        raise InvalidCiphertextException()
    if _KEY_ID_PATTERN.fullmatch(blob, 2, 2 + key_id_bytes) is None:
        raise InvalidCiphertextException()
    return header_bytes


def _key_id_bytes(key_id: str) -> bytes:
    key_id_bytes = key_id.encode("ascii") if key_id.isascii() else b""
    if _KEY_ID_PATTERN.fullmatch(key_id_bytes) is None:
        raise ValueError(
            f"key_id must be 1 to {KEY_ID_BYTES_MAX} printable ASCII characters without spaces"
        )
    return key_id_bytes


def _require_bytes(name: str, value: bytes, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{name} must be {length} bytes")
