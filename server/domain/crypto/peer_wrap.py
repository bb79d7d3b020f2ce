"""Wrap key material for another region: hybrid X25519 + ML-KEM-768, HKDF-SHA256, AES-256-GCM.

Material leaves a node only inside a *bundle* addressed to one recipient region. A bundle
has one KEM header and any number of sealed items:

    header, format version 1 (1121 bytes)
    offset  size  field
    0       1     version = 0x01
    1       32    sender's ephemeral X25519 public key
    33      1088  ML-KEM-768 ciphertext to the recipient's ML-KEM-768 public key

    item i: AES-256-GCM(key, nonce = i as 12 big-endian bytes, item, aad_i) -> ciphertext || tag

    key = HKDF-SHA256(
        ikm  = ML-KEM shared secret || X25519 shared secret,
        salt = SHA-256(header || recipient X25519 public key || recipient ML-KEM public key),
        info = b"meridian/peer-wrap/v1" || context)

Why hybrid: the bundle stays secret if *either* X25519 or ML-KEM-768 holds, so recorded
replication traffic does not become readable once a quantum computer breaks X25519, and
a flaw in the young ML-KEM implementation alone reveals nothing either. The salt binds the
key to both public keys and both ciphertexts; ``context`` binds it to the sender, the
recipient and the message it travels in. A fresh key per bundle lets the nonce be the item
index, and the index in the nonce stops items from being reordered.

``material_commitment`` is a one-way check value of a material (an HMAC of a fixed label
under the material), shipped in the signed metadata so that a receiver can tell that the
material it unwrapped is the one the metadata names.

This module is the only importer of ``cryptography.hazmat`` for peer wrapping.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = 1
X25519_SEED_BYTES = 32
MLKEM_SEED_BYTES = 64
X25519_PUBLIC_BYTES = 32
MLKEM_PUBLIC_BYTES = 1184
MLKEM_CIPHERTEXT_BYTES = 1088
HEADER_BYTES = 1 + X25519_PUBLIC_BYTES + MLKEM_CIPHERTEXT_BYTES
TAG_BYTES = 16
COMMITMENT_BYTES = 32
# One bundle holds at most this many items: the nonce is the index, and a batch of
# replication entries never carries more materials than this.
ITEMS_MAX = 1 << 20
# Large enough for any private key Meridian stores (see rootkey.WRAPPED_MATERIAL_BYTES_MAX).
ITEM_BYTES_MAX = 65536

_HKDF_INFO = b"meridian/peer-wrap/v1"
_COMMITMENT_LABEL = b"meridian/material-commitment/v1"


class PeerWrapError(Exception):
    """A bundle does not open: malformed, tampered, or not addressed to this key pair."""

    def __init__(self) -> None:
        super().__init__("peer-wrapped material failed to open")


@dataclass(frozen=True, slots=True)
class PeerPublicKey:
    """A region's public wrapping key: what peers pin and wrap material to."""

    x25519: bytes
    mlkem: bytes

    def __post_init__(self) -> None:
        if len(self.x25519) != X25519_PUBLIC_BYTES or len(self.mlkem) != MLKEM_PUBLIC_BYTES:
            raise PeerWrapError()
        try:
            x25519.X25519PublicKey.from_public_bytes(self.x25519)
            mlkem.MLKEM768PublicKey.from_public_bytes(self.mlkem)
        except ValueError:
            raise PeerWrapError() from None


class PeerKeyPair:
    """A region's private wrapping key, made from seeds the node keeps wrapped at rest."""

    __slots__ = ("_mlkem", "_public", "_x25519")

    def __init__(self, *, x25519_seed: bytes, mlkem_seed: bytes) -> None:
        if len(x25519_seed) != X25519_SEED_BYTES or len(mlkem_seed) != MLKEM_SEED_BYTES:
            raise ValueError("bad seed length")
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(x25519_seed)
        self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
        self._public = PeerPublicKey(
            x25519=self._x25519.public_key().public_bytes_raw(),
            mlkem=self._mlkem.public_key().public_bytes_raw(),
        )

    @property
    def public_key(self) -> PeerPublicKey:
        return self._public

    def __repr__(self) -> str:
        return f"PeerKeyPair(x25519={self._public.x25519[:8].hex()}...)"

    def open_bundle(
        self, header: bytes, items: Sequence[tuple[bytes, bytes]], *, context: bytes
    ) -> list[bytes]:
        """Open every ``(aad, sealed)`` item of a bundle; raise PeerWrapError on any failure."""
        if len(header) != HEADER_BYTES or header[0] != FORMAT_VERSION:
            raise PeerWrapError()
        if len(items) > ITEMS_MAX:
            raise PeerWrapError()
        ephemeral = header[1 : 1 + X25519_PUBLIC_BYTES]
        kem_ciphertext = header[1 + X25519_PUBLIC_BYTES :]
        try:
            x25519_secret = self._x25519.exchange(
                x25519.X25519PublicKey.from_public_bytes(ephemeral)
            )
            mlkem_secret = self._mlkem.decapsulate(kem_ciphertext)
        except ValueError:
            raise PeerWrapError() from None
        aead = AESGCM(_bundle_key(mlkem_secret, x25519_secret, header, self._public, context))
        opened: list[bytes] = []
        for index, (aad, sealed) in enumerate(items):
            if not TAG_BYTES < len(sealed) <= ITEM_BYTES_MAX + TAG_BYTES:
                raise PeerWrapError()
            try:
                opened.append(aead.decrypt(_nonce(index), sealed, aad))
            except InvalidTag:
                raise PeerWrapError() from None
        return opened


def seal_bundle(
    recipient: PeerPublicKey,
    items: Sequence[tuple[bytes, bytes]],
    *,
    context: bytes,
    ephemeral_seed: bytes,
) -> tuple[bytes, list[bytes]]:
    """Seal every ``(aad, plaintext)`` item to ``recipient``; returns (header, sealed items).

    ``ephemeral_seed`` (32 random bytes) makes the X25519 ephemeral key; the ML-KEM
    encapsulation draws on the library's own randomness.
    """
    if len(items) > ITEMS_MAX:
        raise ValueError(f"a bundle holds at most {ITEMS_MAX} items")
    ephemeral = x25519.X25519PrivateKey.from_private_bytes(ephemeral_seed)
    x25519_secret = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(recipient.x25519))
    mlkem_secret, kem_ciphertext = mlkem.MLKEM768PublicKey.from_public_bytes(
        recipient.mlkem
    ).encapsulate()
    header = bytes((FORMAT_VERSION,)) + ephemeral.public_key().public_bytes_raw() + kem_ciphertext
    aead = AESGCM(_bundle_key(mlkem_secret, x25519_secret, header, recipient, context))
    sealed = []
    for index, (aad, plaintext) in enumerate(items):
        if not 1 <= len(plaintext) <= ITEM_BYTES_MAX:
            raise ValueError(f"each item must be 1 to {ITEM_BYTES_MAX} bytes")
        sealed.append(aead.encrypt(_nonce(index), plaintext, aad))
    return header, sealed


def material_commitment(material: bytes, *, key_id: str, material_id: bytes) -> bytes:
    """A 32-byte check value of ``material``; reveals nothing about it (HMAC-SHA256)."""
    message = _COMMITMENT_LABEL + b"\x00" + key_id.encode("ascii") + b"\x00" + material_id
    # The one-shot HMAC (OpenSSL in one call): the same value as ``hmac.new(...).digest()``
    # without building an HMAC object per material, which a catch-up does per entry.
    return hmac.digest(material, message, "sha256")


def check_commitment(
    material: bytes, commitment: bytes, *, key_id: str, material_id: bytes
) -> None:
    """Raise PeerWrapError unless ``commitment`` is ``material``'s (constant-time)."""
    expected = material_commitment(material, key_id=key_id, material_id=material_id)
    if not hmac.compare_digest(expected, commitment):
        raise PeerWrapError()


def _bundle_key(
    mlkem_secret: bytes,
    x25519_secret: bytes,
    header: bytes,
    recipient: PeerPublicKey,
    context: bytes,
) -> bytes:
    transcript = hashlib.sha256(header + recipient.x25519 + recipient.mlkem).digest()
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=transcript, info=_HKDF_INFO + context
    ).derive(mlkem_secret + x25519_secret)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")
