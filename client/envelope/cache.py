"""A data-key cache bounded by age, messages and bytes (the AWS Encryption SDK's
caching materials manager), off unless an ``Envelope`` is given one.

Reusing a data key for many messages saves a GenerateDataKey (and an Encrypt per extra
wrapping key) per message, and a Decrypt per message when reading, at the price of a
larger blast radius: everything sealed under one cached data key falls with it. The
limits say how large that radius may get:

- ``max_age_s`` (required): an entry is not used after this many seconds;
- ``max_messages``: an encryption entry seals at most this many messages;
- ``max_bytes``: an encryption entry seals at most this many plaintext bytes;
- ``capacity``: entries kept; the least recently used go first.

An entry for encryption is keyed by the wrapping keys and the encryption context, so
messages share a data key only when they would be wrapped identically. A message is
counted against an entry before it is sealed, with its full length; a message whose
length is not known in advance (a stream) is never served from the cache. Decryption
entries are keyed by the message's wrapped keys and context and bounded by age and
capacity only. Each message still gets its own AES key from its random message id
(``_recipe.py``), so a cached data key never repeats a nonce.

Cached data keys are plaintext in this process's memory until they expire or
``clear()`` is called.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from meridian.client.clock import Clock, SystemClock
from meridian.client.envelope.format import WrappedKey
from meridian.client.errors import ClientConfigError

__all__ = ["CacheStats", "DataKeyCache"]

MESSAGES_MAX_DEFAULT = 2**32
BYTES_MAX_DEFAULT = 2**63 - 1
CAPACITY_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class EncryptionMaterials:
    data_key: bytes
    wrapped_keys: tuple[WrappedKey, ...]

    def __repr__(self) -> str:
        return f"EncryptionMaterials(data_key=<hidden>, wrapped_keys={len(self.wrapped_keys)})"


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int


@dataclass
class _Entry:
    created_at: float
    data_key: bytes
    wrapped_keys: tuple[WrappedKey, ...] = ()
    messages: int = 0
    bytes: int = 0


class DataKeyCache:
    def __init__(
        self,
        *,
        max_age_s: float,
        max_messages: int = MESSAGES_MAX_DEFAULT,
        max_bytes: int = BYTES_MAX_DEFAULT,
        capacity: int = 100,
        clock: Clock | None = None,
    ) -> None:
        if not (math.isfinite(max_age_s) and max_age_s > 0):
            raise ClientConfigError("max_age_s must be a positive number of seconds")
        if not 1 <= max_messages <= MESSAGES_MAX_DEFAULT:
            raise ClientConfigError(f"max_messages must be between 1 and {MESSAGES_MAX_DEFAULT}")
        if not 1 <= max_bytes <= BYTES_MAX_DEFAULT:
            raise ClientConfigError("max_bytes must be a positive number of bytes")
        if not 1 <= capacity <= CAPACITY_MAX:
            raise ClientConfigError(f"capacity must be between 1 and {CAPACITY_MAX}")
        self.max_age_s = max_age_s
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._capacity = capacity
        self._clock = clock or SystemClock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    # ---- encryption --------------------------------------------------------------------

    def materials_for_encrypt(
        self, key: bytes, plaintext_length: int | None
    ) -> EncryptionMaterials | None:
        """A cached data key that may seal one more message of ``plaintext_length``
        bytes (counted now), or None."""
        if plaintext_length is None or plaintext_length > self.max_bytes:
            return None
        with self._lock:
            entry = self._usable(key)
            if (
                entry is None
                or entry.messages + 1 > self.max_messages
                or entry.bytes + plaintext_length > self.max_bytes
            ):
                self._misses += 1
                return None
            entry.messages += 1
            entry.bytes += plaintext_length
            self._hits += 1
            if entry.messages >= self.max_messages or entry.bytes >= self.max_bytes:
                # Used up: nothing more may come from it.
                del self._entries[key]
            return EncryptionMaterials(entry.data_key, entry.wrapped_keys)

    def put_for_encrypt(
        self, key: bytes, materials: EncryptionMaterials, plaintext_length: int | None
    ) -> None:
        """Remember fresh materials that just sealed one message of that length."""
        if plaintext_length is None or plaintext_length > self.max_bytes:
            return
        if self.max_messages <= 1 or plaintext_length >= self.max_bytes:
            return  # the message that made it already used it up
        entry = _Entry(
            created_at=self._clock.monotonic(),
            data_key=materials.data_key,
            wrapped_keys=materials.wrapped_keys,
            messages=1,
            bytes=plaintext_length,
        )
        with self._lock:
            self._store(key, entry)

    # ---- decryption --------------------------------------------------------------------

    def data_key_for_decrypt(self, key: bytes) -> bytes | None:
        with self._lock:
            entry = self._usable(key)
            if entry is None:
                self._misses += 1
                return None
            self._hits += 1
            return entry.data_key

    def put_for_decrypt(self, key: bytes, data_key: bytes) -> None:
        with self._lock:
            self._store(key, _Entry(created_at=self._clock.monotonic(), data_key=data_key))

    # ---- housekeeping ----------------------------------------------------------------------

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(hits=self._hits, misses=self._misses, entries=len(self._entries))

    def _usable(self, key: bytes) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock.monotonic() - entry.created_at >= self.max_age_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _store(self, key: bytes, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


def encrypt_cache_key(
    partition: bytes, key_ids: Sequence[str], canonical_context: bytes, suite: int
) -> bytes:
    """Messages share a cached data key only with the same wrapping keys and context."""
    digest = hashlib.sha256(b"encrypt\0" + bytes([suite]) + _framed(partition))
    for key_id in key_ids:
        digest.update(_framed(key_id.encode("utf-8")))
    digest.update(_framed(canonical_context))
    return digest.digest()


def decrypt_cache_key(
    partition: bytes, wrapped_keys: Sequence[WrappedKey], canonical_context: bytes, suite: int
) -> bytes:
    """``partition`` names the keys the reader may use: a data key one ``Envelope``
    unwrapped is never handed to another that could not have unwrapped it."""
    digest = hashlib.sha256(b"decrypt\0" + bytes([suite]) + _framed(partition))
    for wrapped in sorted(wrapped_keys, key=lambda item: (item.key_arn, item.ciphertext_blob)):
        digest.update(_framed(wrapped.key_arn.encode("utf-8")))
        digest.update(_framed(wrapped.ciphertext_blob))
    digest.update(_framed(canonical_context))
    return digest.digest()


def _framed(part: bytes) -> bytes:
    return len(part).to_bytes(8, "big") + part
