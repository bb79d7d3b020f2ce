"""The envelope format's cryptography: the only module in meridian.client that imports
``cryptography.hazmat`` (STYLE.md 2, DESIGN.md §3).

Per message, from the 32-byte data key and the random 32-byte message id:

    encryption key = HKDF-SHA512(IKM = data key, salt = message id,
                                 info = "meridian/envelope/v1/encryption-key" || suite, L = 32)
    commitment     = HKDF-SHA512(IKM = data key, salt = message id,
                                 info = "meridian/envelope/v1/commitment" || suite, L = 32)

Every message has its own AES-256-GCM key, even when a cached data key seals many
messages, so nonces can be the sequence number: 0 for the header tag, 1, 2, ... for the
frames. The commitment, stored in the header and compared (in constant time) before
anything is decrypted, binds the message to one data key: no message can be made that
opens to different plaintexts under the data keys its different wrapped keys hold.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meridian.client.envelope.errors import InvalidMessageError
from meridian.client.envelope.format import (
    COMMITMENT_BYTES,
    DATA_KEY_BYTES,
    MESSAGE_ID_BYTES,
    NONCE_BYTES,
)

__all__ = ["MessageKeys", "frame_aad"]

_ENCRYPTION_KEY_INFO = b"meridian/envelope/v1/encryption-key"
_COMMITMENT_INFO = b"meridian/envelope/v1/commitment"
_FRAME_AAD = struct.Struct(">BQI")  # frame type, sequence number, content length

# What AES-GCM reads from without a copy: frames are sealed and opened in place.
Buffer = bytes | bytearray | memoryview


def frame_aad(frame_type: int, sequence: int, content_length: int) -> bytes:
    """What each frame authenticates besides its ciphertext: its type (regular or final),
    its place in the message and its length, so frames cannot be reordered, dropped,
    repeated or passed off as the last one."""
    return _FRAME_AAD.pack(frame_type, sequence, content_length)


class MessageKeys:
    def __init__(self, data_key: bytes, message_id: bytes, suite: int) -> None:
        if len(data_key) != DATA_KEY_BYTES or len(message_id) != MESSAGE_ID_BYTES:
            raise ValueError("a data key and a message id are 32 bytes each")
        suite_byte = bytes([suite])
        encryption_key = _hkdf(data_key, message_id, _ENCRYPTION_KEY_INFO + suite_byte)
        self.commitment = _hkdf(data_key, message_id, _COMMITMENT_INFO + suite_byte)
        self._aead = AESGCM(encryption_key)

    def check_commitment(self, commitment: bytes) -> None:
        if not hmac.compare_digest(self.commitment, commitment):
            raise InvalidMessageError()

    def seal(self, sequence: int, plaintext: Buffer, aad: bytes) -> bytes:
        """Ciphertext || 16-byte tag."""
        return self._aead.encrypt(_nonce(sequence), plaintext, aad)

    def open(self, sequence: int, sealed: Buffer, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(_nonce(sequence), sealed, aad)
        except InvalidTag:
            raise InvalidMessageError() from None

    def seal_into(self, sequence: int, plaintext: Buffer, aad: bytes, target: memoryview) -> None:
        """Write ciphertext || tag into ``target`` (exactly 16 bytes longer than plaintext)."""
        self._aead.encrypt_into(_nonce(sequence), plaintext, aad, target)

    def open_into(self, sequence: int, sealed: Buffer, aad: bytes, target: memoryview) -> None:
        """Authenticate ``sealed`` and write its plaintext into ``target``. On failure
        ``target`` may hold unauthenticated bytes: the caller discards it."""
        try:
            self._aead.decrypt_into(_nonce(sequence), sealed, aad, target)
        except InvalidTag:
            raise InvalidMessageError() from None


def _hkdf(data_key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA512(), length=COMMITMENT_BYTES, salt=salt, info=info).derive(
        data_key
    )


def _nonce(sequence: int) -> bytes:
    return sequence.to_bytes(NONCE_BYTES, "big")
