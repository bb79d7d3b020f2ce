"""Node signatures: ML-DSA-65 over replication messages.

Each node holds one ML-DSA-65 signing key (FIPS 204), made from a 32-byte seed that the
node keeps in its data directory wrapped under the region root key. Peers pin the public
key on first contact (``replication/DESIGN.md``). Every signature carries a context
string, so a signature made for one kind of message can never be passed off as another.

This module is the only importer of ``cryptography.hazmat`` for signatures.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 1952
SIGNATURE_BYTES = 3309
# ML-DSA admits a context of at most 255 bytes.
CONTEXT_BYTES_MAX = 255


class SignatureError(Exception):
    """A signature does not verify, or a public key or signature is malformed.

    Deliberately carries no detail: the caller logs which message failed, not why.
    """

    def __init__(self) -> None:
        super().__init__("signature verification failed")


class NodeSigner:
    """An ML-DSA-65 private key. Never printed: ``repr`` shows only the public key's prefix."""

    __slots__ = ("_private", "_public_bytes")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes")
        self._private = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
        self._public_bytes = self._private.public_key().public_bytes_raw()

    @property
    def public_key(self) -> bytes:
        return self._public_bytes

    def sign(self, message: bytes, *, context: bytes) -> bytes:
        _check_context(context)
        return self._private.sign(message, context)

    def __repr__(self) -> str:
        return f"NodeSigner(public_key={self._public_bytes[:8].hex()}...)"


def verify(public_key: bytes, signature: bytes, message: bytes, *, context: bytes) -> None:
    """Return if ``signature`` is ``public_key``'s over ``message``; else raise SignatureError."""
    _check_context(context)
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise SignatureError()
    try:
        mldsa.MLDSA65PublicKey.from_public_bytes(public_key).verify(signature, message, context)
    except (InvalidSignature, ValueError):
        raise SignatureError() from None


def check_public_key(public_key: bytes) -> None:
    """Raise SignatureError unless ``public_key`` is a well-formed ML-DSA-65 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise SignatureError()
    try:
        mldsa.MLDSA65PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise SignatureError() from None


def _check_context(context: bytes) -> None:
    if not 1 <= len(context) <= CONTEXT_BYTES_MAX:
        raise ValueError(f"context must be 1 to {CONTEXT_BYTES_MAX} bytes")
