"""The PKCS#11 root key provider: material is wrapped and unwrapped inside an HSM.

The root key is a non-extractable AES-256 key in a PKCS#11 token (generated there, or found
there by its label). Every wrap and unwrap is a call into the token; the key's bytes never
enter this process. Two mechanisms, because tokens differ in what they offer; the one used
is recorded in each wrapped blob, so a blob is always unwrapped the way it was wrapped.

Wrapped material, provider 0x02:

    offset  size  field
    0       1     wrapped format version = 0x01
    1       1     provider = 0x02 (PKCS#11 root key)
    2       1     mechanism: 0x01 AES-256-GCM (CKM_AES_GCM), 0x02 AES key wrap with
                  padding RFC 5649 (CKM_AES_KEY_WRAP_KWP), 0x03 the same under its older
                  name CKM_AES_KEY_WRAP_PAD
    mechanism 0x01:
    3       12    nonce (random, from this process)
    15      n+16  ciphertext || tag; authenticated data = bytes 0-2 || the caller's aad
    mechanism 0x02 and 0x03:
    3       m     RFC 5649 wrapping of: SHA-256(bytes 0-2 || aad) (32) || n (4, big-endian)
                  || material (n)

Key wrap authenticates its plaintext but takes no associated data, so the digest of the
header and aad inside the wrapped plaintext binds the blob to its key and version exactly
as GCM's associated data does. The explicit length tolerates tokens (SoftHSM2 among them)
that return RFC 5649's zero padding with the unwrapped value.

Every token call runs on one worker thread owned by the provider (a PKCS#11 session is not
safe for concurrent use) and is awaited with a timeout. A token that stops answering makes
calls fail with DependencyTimeoutException after ``timeout_s``; at most
``pending_calls_max`` calls wait for it, the rest fail at once; nothing is written, so
nothing is lost, and calls succeed again as soon as the token answers. Unwrapped material
is cached by the caller (``material_cache.py``), so a running node calls the token only to
create a key version or to read one for the first time after a start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import os
import queue
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from meridian.server.domain.crypto.pkcs11_token import (
    GCM_NONCE_BYTES,
    TokenDataError,
    TokenInfo,
    TokenSession,
    TokenSetupError,
    TokenUnavailable,
    WrapMechanism,
)
from meridian.server.domain.crypto.rootkey import WRAPPED_MATERIAL_BYTES_MAX, RootKeyError
from meridian.server.domain.errors import DependencyTimeoutException

log = structlog.get_logger("meridian.hsm")

PROVIDER_PKCS11 = 0x02
TIMEOUT_S_DEFAULT = 5.0
PENDING_CALLS_MAX_DEFAULT = 256
MECHANISM_CHOICES = ("auto", "aes-gcm", "aes-key-wrap-pad")

_WRAPPED_VERSION = 0x01
_HEADER_BYTES = 3
_TAG_BYTES = 16
_DIGEST_BYTES = 32
_LENGTH_BYTES = 4
# RFC 5649 pads to a multiple of 8 bytes and adds an 8-byte integrity block.
_KWP_BLOCK_BYTES = 8
_SELF_TEST_AAD = b"meridian/root-key/pkcs11/self-test"
_SELF_TEST_MATERIAL_BYTES = 32

_UNWRAP_FAILED = "stored key material failed to unwrap with the region root key"
_UNAVAILABLE = "The HSM that holds this region's root key did not answer in time; retry the request"

_T = TypeVar("_T")


class Pkcs11RootKeyProvider:
    """Wraps material inside a PKCS#11 token. Build it with :meth:`open`."""

    def __init__(
        self,
        token: TokenSession,
        info: TokenInfo,
        mechanism: WrapMechanism,
        worker: TokenWorker,
        *,
        timeout_s: float,
        randbytes: Callable[[int], bytes],
    ) -> None:
        self._token = token
        self._info = info
        self._mechanism = mechanism
        self._worker = worker
        self._timeout_s = timeout_s
        self._randbytes = randbytes

    @classmethod
    async def open(
        cls,
        token: TokenSession,
        *,
        mechanism: str = "auto",
        timeout_s: float = TIMEOUT_S_DEFAULT,
        pending_calls_max: int = PENDING_CALLS_MAX_DEFAULT,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> Pkcs11RootKeyProvider:
        """Connect to the token, pick the mechanism and prove it with a round trip.

        Raises RootKeyError with an operator's message if anything is wrong.
        """
        if mechanism not in MECHANISM_CHOICES:
            raise ValueError(f"mechanism must be one of {', '.join(MECHANISM_CHOICES)}")
        if not 0 < timeout_s <= 600:
            raise ValueError("timeout_s must be more than 0 and at most 600")
        worker = TokenWorker(pending_calls_max=pending_calls_max)
        try:
            info = await _connect(worker, token, timeout_s)
            provider = None
            failures: list[str] = []
            for candidate in _candidates(mechanism, info.mechanisms):
                provider = cls(
                    token, info, candidate, worker, timeout_s=timeout_s, randbytes=randbytes
                )
                try:
                    await provider._self_test()
                    break
                except (RootKeyError, DependencyTimeoutException) as error:
                    failures.append(f"{candidate.config_name}: {error}")
                    provider = None
            if provider is None:
                offered = ", ".join(sorted(m.config_name for m in info.mechanisms)) or "none"
                tried = "; ".join(failures) or "the token offers neither"
                raise RootKeyError(
                    f"token {info.token_label!r} cannot wrap with mechanism {mechanism!r} "
                    f"(it offers: {offered}; {tried})"
                )
        except BaseException:
            await _close(worker, token, timeout_s)
            raise
        log.info(
            "hsm root key ready",
            module=info.module,
            token=info.token_label,
            token_serial=info.token_serial,
            key_label=info.key_label,
            key_id=info.key_id,
            key_created=info.key_created,
            mechanism=provider.mechanism.config_name,
        )
        return provider

    @property
    def name(self) -> str:
        return "pkcs11"

    @property
    def mechanism(self) -> WrapMechanism:
        return self._mechanism

    @property
    def info(self) -> TokenInfo:
        return self._info

    def __repr__(self) -> str:
        info = self._info
        return (
            f"Pkcs11RootKeyProvider(token={info.token_label!r}, key={info.key_label!r}, "
            f"mechanism={self._mechanism.config_name!r})"
        )

    async def wrap(self, material: bytes, *, aad: bytes) -> bytes:
        if not 1 <= len(material) <= WRAPPED_MATERIAL_BYTES_MAX:
            raise ValueError(f"material must be 1 to {WRAPPED_MATERIAL_BYTES_MAX} bytes")
        mechanism = self._mechanism
        header = bytes((_WRAPPED_VERSION, PROVIDER_PKCS11, mechanism.value))
        if mechanism is WrapMechanism.AES_GCM:
            nonce = self._randbytes(GCM_NONCE_BYTES)
            if len(nonce) != GCM_NONCE_BYTES:
                raise ValueError(f"randbytes({GCM_NONCE_BYTES}) returned {len(nonce)} bytes")
            sealed = await self._call(
                lambda: self._token.encrypt_gcm(nonce, material, header + aad), "wrap"
            )
            if len(sealed) != len(material) + _TAG_BYTES:
                raise RootKeyError("the HSM returned a GCM ciphertext of the wrong length")
            return header + nonce + sealed
        inner = _binding(header, aad) + struct.pack(">I", len(material)) + material
        return header + await self._call(lambda: self._token.wrap_pad(mechanism, inner), "wrap")

    async def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        header, mechanism = _parse_header(wrapped)
        body = wrapped[_HEADER_BYTES:]
        if mechanism not in self._info.mechanisms:
            raise RootKeyError(
                f"stored key material was wrapped with {mechanism.name}, which token "
                f"{self._info.token_label!r} does not offer"
            )
        try:
            if mechanism is WrapMechanism.AES_GCM:
                material_bytes = len(body) - GCM_NONCE_BYTES - _TAG_BYTES
                if not 1 <= material_bytes <= WRAPPED_MATERIAL_BYTES_MAX:
                    raise RootKeyError(_UNWRAP_FAILED)
                nonce, sealed = body[:GCM_NONCE_BYTES], body[GCM_NONCE_BYTES:]
                return await self._call(
                    lambda: self._token.decrypt_gcm(nonce, sealed, header + aad), "unwrap"
                )
            inner_bytes_max = _DIGEST_BYTES + _LENGTH_BYTES + WRAPPED_MATERIAL_BYTES_MAX
            if not 2 * _KWP_BLOCK_BYTES <= len(body) <= inner_bytes_max + 2 * _KWP_BLOCK_BYTES:
                raise RootKeyError(_UNWRAP_FAILED)
            inner = await self._call(lambda: self._token.unwrap_pad(mechanism, body), "unwrap")
        except TokenDataError:
            raise RootKeyError(_UNWRAP_FAILED) from None
        return _open_inner(inner, _binding(header, aad))

    async def aclose(self) -> None:
        """Close the session and stop the worker; waits at most one timeout for the token."""
        await _close(self._worker, self._token, self._timeout_s)

    async def _self_test(self) -> None:
        material = self._randbytes(_SELF_TEST_MATERIAL_BYTES)
        wrapped = await self.wrap(material, aad=_SELF_TEST_AAD)
        if not hmac.compare_digest(await self.unwrap(wrapped, aad=_SELF_TEST_AAD), material):
            raise RootKeyError("a wrap/unwrap round trip through the HSM changed the material")

    async def _call(self, operation: Callable[[], _T], what: str) -> _T:
        try:
            return await _await(self._worker, operation, self._timeout_s)
        except TokenUnavailable as error:
            log.warning("hsm call failed", operation=what, error=str(error))
            raise DependencyTimeoutException(_UNAVAILABLE) from None
        except TimeoutError:
            log.warning(
                "hsm call timed out",
                operation=what,
                timeout_s=self._timeout_s,
                pending_calls=self._worker.pending,
            )
            raise DependencyTimeoutException(_UNAVAILABLE) from None
        except TokenBusy:
            log.warning("hsm call refused: too many calls wait for the HSM", operation=what)
            raise DependencyTimeoutException(_UNAVAILABLE) from None


class TokenBusy(Exception):
    """Too many calls are already waiting for the token."""


class TokenWorker:
    """One daemon thread that runs the token's calls in order.

    A daemon thread, because a call stuck in an HSM that no longer answers can never be
    interrupted, and it must not keep the process from exiting. Calls cancelled while they
    wait in the queue (their caller timed out) are skipped, not run.
    """

    def __init__(self, *, pending_calls_max: int) -> None:
        if pending_calls_max < 1:
            raise ValueError("pending_calls_max must be at least 1")
        self._pending_calls_max = pending_calls_max
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="meridian-hsm", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, operation: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise TokenBusy("the HSM worker is closed")
            if self._pending >= self._pending_calls_max:
                raise TokenBusy(f"{self._pending} calls already wait for the HSM")
            self._pending += 1
        self._queue.put((operation, future))
        return future

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._queue.put(None)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            operation, future = item
            if not future.set_running_or_notify_cancel():
                self._finished()
                continue
            # The count drops before the caller is told, so a caller that has its answer
            # never sees its own call still counted as pending.
            try:
                result = operation()
            except BaseException as error:
                self._finished()
                future.set_exception(error)
            else:
                self._finished()
                future.set_result(result)

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1


async def _await(worker: TokenWorker, operation: Callable[[], _T], timeout_s: float) -> _T:
    """Run ``operation`` on the worker; TimeoutError if it takes more than ``timeout_s``."""
    future = worker.submit(operation)
    return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)


async def _connect(worker: TokenWorker, token: TokenSession, timeout_s: float) -> TokenInfo:
    """Connect, turning every failure into a RootKeyError that tells the operator why."""
    try:
        return await _await(worker, token.connect, timeout_s)
    except TokenSetupError as error:
        raise RootKeyError(str(error)) from None
    except TokenUnavailable as error:
        raise RootKeyError(f"the HSM failed while connecting: {error}") from None
    except TimeoutError:
        raise RootKeyError(f"the HSM did not answer within {timeout_s:g} s") from None


async def _close(worker: TokenWorker, token: TokenSession, timeout_s: float) -> None:
    try:
        await _await(worker, token.close, timeout_s)
    except (TokenBusy, TimeoutError, TokenUnavailable) as error:
        log.warning("hsm session not closed cleanly", error=str(error) or type(error).__name__)
    finally:
        worker.close()


def _candidates(mechanism: str, offered: frozenset[WrapMechanism]) -> list[WrapMechanism]:
    """The mechanisms to try, best first: GCM (one call, no temporary objects), then KWP."""
    key_wrap: list[WrapMechanism] = [
        m for m in (WrapMechanism.AES_KEY_WRAP_KWP, WrapMechanism.AES_KEY_WRAP_PAD) if m in offered
    ]
    gcm = [WrapMechanism.AES_GCM] if WrapMechanism.AES_GCM in offered else []
    if mechanism == "aes-gcm":
        return gcm
    if mechanism == "aes-key-wrap-pad":
        return key_wrap
    return gcm + key_wrap


def _parse_header(wrapped: bytes) -> tuple[bytes, WrapMechanism]:
    if len(wrapped) <= _HEADER_BYTES or wrapped[0] != _WRAPPED_VERSION:
        raise RootKeyError(_UNWRAP_FAILED)
    if wrapped[1] != PROVIDER_PKCS11:
        raise RootKeyError(_UNWRAP_FAILED)
    try:
        mechanism = WrapMechanism(wrapped[2])
    except ValueError:
        raise RootKeyError(_UNWRAP_FAILED) from None
    return wrapped[:_HEADER_BYTES], mechanism


def _binding(header: bytes, aad: bytes) -> bytes:
    return hashlib.sha256(header + aad).digest()


def _open_inner(inner: bytes, binding: bytes) -> bytes:
    """Check the digest and length that key wrap carried; return the material."""
    prefix_bytes = _DIGEST_BYTES + _LENGTH_BYTES
    if len(inner) < prefix_bytes + 1:
        raise RootKeyError(_UNWRAP_FAILED)
    if not hmac.compare_digest(inner[:_DIGEST_BYTES], binding):
        raise RootKeyError(_UNWRAP_FAILED)
    (length,) = struct.unpack(">I", inner[_DIGEST_BYTES:prefix_bytes])
    rest = inner[prefix_bytes:]
    padding = rest[length:]
    if not 1 <= length <= len(rest) or len(padding) >= _KWP_BLOCK_BYTES or any(padding):
        raise RootKeyError(_UNWRAP_FAILED)
    return rest[:length]
