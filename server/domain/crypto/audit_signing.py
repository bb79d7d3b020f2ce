"""The audit signing recipe: ML-DSA-65 signatures over sealed audit digests.

The only module of the audit trail that touches ``cryptography.hazmat``. A region's
audit signing key is an ML-DSA-65 key (FIPS 204) kept as its 32-byte seed, wrapped at
rest by the region's root key like any key material. Signatures use the FIPS 204
context string ``meridian/audit-digest/v1``, so a signature over a digest can never be
replayed as a signature over anything else made with the same key.

Public keys travel raw (1952 bytes) or as PEM SubjectPublicKeyInfo, which is what the
``meridian audit public-key`` command publishes. A key's id is the first 16 bytes of
SHA-256 over the raw public key, in hex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 1952
SIGNATURE_BYTES = 3309
SIGNATURE_CONTEXT = b"meridian/audit-digest/v1"
ALGORITHM = "ML-DSA-65"
_KEY_ID_BYTES = 16
# A PEM public key is about 2.7 KB; anything far larger is not one.
_PEM_BYTES_MAX = 16 * 1024


class AuditSignatureError(Exception):
    """A digest signature does not verify, or a public key cannot be read."""


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).digest()[:_KEY_ID_BYTES].hex()


class AuditSigner:
    """Signs digests with one region's audit key. Holds the seed only in memory."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an ML-DSA-65 seed is {SEED_BYTES} bytes")
        self._private_key = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
        self.public_key = self._private_key.public_key().public_bytes_raw()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes]) -> tuple[AuditSigner, bytes]:
        """A new signer and its seed (for the caller to wrap and store)."""
        seed = randbytes(SEED_BYTES)
        return cls(seed), seed

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message, SIGNATURE_CONTEXT)

    def __repr__(self) -> str:
        return f"AuditSigner(key_id={self.key_id!r})"


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise AuditSignatureError unless ``signature`` is the key's signature of ``message``."""
    if len(signature) != SIGNATURE_BYTES:
        raise AuditSignatureError("the signature has the wrong length for ML-DSA-65")
    try:
        key = mldsa.MLDSA65PublicKey.from_public_bytes(public_key)
        key.verify(signature, message, SIGNATURE_CONTEXT)
    except (InvalidSignature, ValueError):
        raise AuditSignatureError("the signature does not verify") from None


def public_key_pem(public_key: bytes) -> bytes:
    key = mldsa.MLDSA65PublicKey.from_public_bytes(public_key)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes) -> bytes:
    """The raw public key from PEM SubjectPublicKeyInfo or from raw bytes."""
    if len(data) > _PEM_BYTES_MAX:
        raise AuditSignatureError("the public key file is too large to be an ML-DSA-65 key")
    if len(data) == PUBLIC_KEY_BYTES:
        raw = data
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise AuditSignatureError("not a PEM public key") from None
        if not isinstance(key, mldsa.MLDSA65PublicKey):
            raise AuditSignatureError("the public key is not an ML-DSA-65 key")
        raw = key.public_bytes_raw()
    try:
        mldsa.MLDSA65PublicKey.from_public_bytes(raw)
    except ValueError:
        raise AuditSignatureError("not an ML-DSA-65 public key") from None
    return raw
