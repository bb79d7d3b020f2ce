"""What ``Envelope`` and ``AsyncEnvelope`` share: configuration, the choice of wrapping
and unwrapping keys, cache keys and results. No I/O and no KMS calls happen here.

Wrapping: the first key of ``key_ids`` generates the data key (GenerateDataKey); each
further key wraps the same data key (Encrypt). Every key must succeed, so a message
can be opened by any one of them later. The encryption context is passed to KMS with
every wrap and unwrap, so KMS binds each wrapped key to it too.

Unwrapping tries the message's wrapped keys one at a time until one opens:

- which: with ``key_ids`` (strict, the default), only wrapped keys whose key is one of
  them — an MRK matches its replica in any region, as the AWS Encryption SDK's
  MRK-aware keyrings do; an alias in ``key_ids`` is handed to KMS, which checks that
  it names the key that wrapped the data key. With ``discovery=True``, every wrapped
  key, as far as KMS lets the caller use it.
- in which order: MRKs first (any healthy region can serve them), then keys in
  regions the client sees healthy, nearest first, then the rest in message order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meridian.client.breaker import BreakerState
from meridian.client.envelope.cache import DataKeyCache, decrypt_cache_key, encrypt_cache_key
from meridian.client.envelope.errors import EncryptionContextMismatchError, NoDecryptableKeyError
from meridian.client.envelope.format import (
    DATA_KEY_BYTES,
    DATA_KEYS_MAX,
    SUITE_AES256_GCM_HKDF_SHA512_COMMIT,
    Header,
    WrappedKey,
    canonical_context,
    check_frame_length,
)
from meridian.client.errors import ClientConfigError, ProtocolError
from meridian.client.regions import ClientStats
from meridian.client.routing import KeyRef

__all__ = ["DecryptedMessage", "EnvelopeSettings", "MessageInfo", "Unwrap"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageInfo:
    """What a message says about itself, and who served it."""

    encryption_context: dict[str, str]
    wrapped_key_arns: tuple[str, ...]  # every key that can unwrap the data key
    plaintext_bytes: int
    message_bytes: int
    # Decrypt: the key that unwrapped the data key, and the region whose KMS did it.
    # Encrypt: the key that generated it. None when the data key came from the cache.
    key_arn: str | None
    region: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedMessage:
    plaintext: bytes = field(repr=False)
    info: MessageInfo


@dataclass(frozen=True, slots=True)
class Unwrap:
    """One attempt to unwrap the data key: a wrapped key, and the key id to name."""

    wrapped: WrappedKey
    key_id: str


class EnvelopeSettings:
    def __init__(
        self,
        key_ids: Sequence[str],
        *,
        discovery: bool,
        cache: DataKeyCache | None,
        frame_length: int,
    ) -> None:
        if isinstance(key_ids, str):
            raise TypeError("key_ids takes a list of key ids, not a single string")
        self.key_ids = tuple(key_ids)
        if len(self.key_ids) > DATA_KEYS_MAX:
            raise ClientConfigError(f"a message can be wrapped under at most {DATA_KEYS_MAX} keys")
        if not self.key_ids and not discovery:
            raise ClientConfigError("give key_ids, or discovery=True to decrypt with any key")
        try:
            check_frame_length(frame_length)
        except ValueError as error:
            raise ClientConfigError(str(error)) from None
        self.discovery = discovery
        self.cache = cache
        self.frame_length = frame_length
        # Cache entries are shared only between envelopes configured alike.
        self.partition = repr((self.key_ids, discovery)).encode()

    # ---- encrypting ------------------------------------------------------------------------

    def wrapping_keys(self) -> tuple[str, tuple[str, ...]]:
        """(the key that generates the data key, the keys that wrap it as well)."""
        if not self.key_ids:
            raise ClientConfigError("an envelope needs key_ids to encrypt")
        return self.key_ids[0], self.key_ids[1:]

    def encrypt_cache_key(self, canonical: bytes) -> bytes:
        return encrypt_cache_key(
            self.partition, self.key_ids, canonical, SUITE_AES256_GCM_HKDF_SHA512_COMMIT
        )

    # ---- decrypting ----------------------------------------------------------------------

    def unwraps(self, header: Header, stats: ClientStats) -> list[Unwrap]:
        wrapped_keys = sorted(header.wrapped_keys, key=lambda wrapped: _rank(wrapped, stats))
        if self.discovery:
            return [Unwrap(wrapped, wrapped.key_arn) for wrapped in wrapped_keys]
        attempts: list[Unwrap] = []
        for wrapped in wrapped_keys:
            for key_id in self.key_ids:
                if KeyRef.parse(key_id).key_id is None:
                    attempts.append(Unwrap(wrapped, key_id))  # an alias: KMS checks it
                elif _matches(key_id, wrapped.key_arn):
                    attempts.append(Unwrap(wrapped, wrapped.key_arn))
                    break
        return attempts

    def decrypt_cache_key(self, header: Header) -> bytes:
        return decrypt_cache_key(
            self.partition, header.wrapped_keys, header.canonical_context, header.suite
        )


def context_bytes(encryption_context: Mapping[str, str] | None) -> tuple[dict[str, str], bytes]:
    context = dict(encryption_context or {})
    try:
        return context, canonical_context(context)
    except ValueError as error:
        raise ClientConfigError(str(error)) from None


def check_expected_context(header: Header, expected: Mapping[str, str] | None) -> None:
    """Every expected pair must be in the message's context (it may hold more)."""
    for key, value in (expected or {}).items():
        if header.encryption_context.get(key) != value:
            raise EncryptionContextMismatchError(
                f"The message's encryption context does not have the expected value for {key!r}"
            )


def checked_data_key(plaintext: bytes, operation: str) -> bytes:
    if len(plaintext) != DATA_KEY_BYTES:
        raise ProtocolError(f"{operation} returned a {len(plaintext)}-byte data key, not 32")
    return plaintext


def wrapped_from(key_arn: str, ciphertext_blob: bytes, operation: str) -> WrappedKey:
    if not key_arn or not ciphertext_blob:
        raise ProtocolError(f"{operation} returned no key ARN or no ciphertext blob")
    return WrappedKey(key_arn, ciphertext_blob)


def no_key_error(attempts: list[tuple[str, str]], header: Header) -> NoDecryptableKeyError:
    if not attempts:
        arns = ", ".join(wrapped.key_arn for wrapped in header.wrapped_keys)
        return NoDecryptableKeyError(
            f"none of the message's keys is among key_ids (the message names: {arns})", ()
        )
    tried = "; ".join(f"{arn}: {error}" for arn, error in attempts)
    return NoDecryptableKeyError(
        f"no wrapped data key could be unwrapped ({tried})", tuple(attempts)
    )


def _matches(configured: str, key_arn: str) -> bool:
    wanted, actual = KeyRef.parse(configured), KeyRef.parse(key_arn)
    if wanted.key_id is None or wanted.key_id != actual.key_id:
        return False
    if wanted.arn_region is None or wanted.arn_region == actual.arn_region:
        return True
    # An MRK names the same key in every region; a single-region key only its own.
    return wanted.is_mrk


def _rank(wrapped: WrappedKey, stats: ClientStats) -> tuple[int, float]:
    ref = KeyRef.parse(wrapped.key_arn)
    if ref.is_mrk:
        return (0, 0.0)
    region = stats.regions.get(ref.arn_region or "")
    if region is None:
        return (3, math.inf)
    doubtful = region.breaker is not BreakerState.CLOSED or region.healthy is False
    return (1 + int(doubtful), region.rtt_ms if region.rtt_ms is not None else math.inf)
