"""Digests shipped to the other regions, so one region's history is witnessed elsewhere.

Each region pushes its sealed digests, with its audit public keys, to every peer
(:class:`DigestShipper`); each peer checks and keeps them (:class:`DigestInbox`).
A region's administrator who deletes or rewrites history then disagrees with the
copies the other regions hold, which ``meridian audit verify`` compares.

The transport is a small protocol (:class:`DigestTransport`): the node uses its own
gRPC implementation (``meridian.audit.v1.AuditExchange``, authenticated by the
origin's node certificate); tests use an in-memory one. The replication log could
carry digests instead by implementing the same protocol.

A receiving region refuses a digest that does not verify, does not follow the digest
before it, or differs from one it already holds for the same number: that last case
is evidence that history was rewritten, and is logged as such and never overwritten.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from meridian.server.audit.digests import ZERO_HASH, SignedDigest, digest_hash
from meridian.server.audit.events import AuditFormatError, to_us
from meridian.server.audit.ports import AuditStorage
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto import audit_signing

log = structlog.get_logger("meridian.audit.shipping")

BATCH_DIGESTS_MAX = 64
PUSH_TIMEOUT_S = 10.0
RETRY_S_MIN = 0.5
RETRY_S_MAX = 60.0
PUBLIC_KEYS_MAX = 16


@dataclass(frozen=True, slots=True)
class DigestBatch:
    origin_region: str
    public_keys: tuple[tuple[str, bytes], ...]
    digests: tuple[SignedDigest, ...]


class DigestRejected(Exception):
    """A pushed batch is invalid; nothing after the first bad digest was kept."""


class DigestTransport(Protocol):
    async def push_digests(self, peer_region: str, batch: DigestBatch) -> int:
        """Deliver ``batch`` to ``peer_region``; returns the number the peer holds through."""
        ...


class InMemoryDigestTransport:
    """Delivers straight to other regions' inboxes in this process (tests, simulations)."""

    def __init__(self) -> None:
        self.inboxes: dict[str, DigestInbox] = {}
        self.unreachable: set[str] = set()

    async def push_digests(self, peer_region: str, batch: DigestBatch) -> int:
        inbox = self.inboxes.get(peer_region)
        if inbox is None or peer_region in self.unreachable:
            raise ConnectionError(f"region {peer_region} is unreachable")
        return await inbox.receive(batch)


class DigestInbox:
    """Keeps other regions' digests after checking them."""

    def __init__(self, storage: AuditStorage, clock: Clock, *, own_region: str) -> None:
        self._storage = storage
        self._clock = clock
        self._own_region = own_region
        self._lock = asyncio.Lock()

    async def receive(self, batch: DigestBatch) -> int:
        """Check and keep ``batch``; returns the highest number held with all before it."""
        origin = batch.origin_region
        if origin == self._own_region:
            raise DigestRejected("a region does not push digests to itself")
        if len(batch.public_keys) > PUBLIC_KEYS_MAX or len(batch.digests) > BATCH_DIGESTS_MAX:
            raise DigestRejected("the batch is too large")
        async with self._lock:
            held_keys = dict(await self._storage.peer_keys(origin))
            offered = self._checked_keys(batch.public_keys)
            new_keys = [(key_id, key) for key_id, key in offered.items() if key_id not in held_keys]
            for key_id, _ in new_keys:
                log.info("audit key of a peer region learned", origin=origin, key_id=key_id)
            keys = {**offered, **held_keys}  # a key already held for an id is never replaced
            held = await self._held_through(origin)
            previous = await self._digest(origin, held)
            accepted: list[SignedDigest] = []
            for digest in sorted(batch.digests, key=lambda item: item.number):
                if digest.number <= held:
                    await self._same_as_held(origin, digest)
                    continue
                if digest.number != held + 1:
                    break  # a gap: keep what is contiguous, the origin resends the rest
                self._check(origin, digest, keys, previous)
                accepted.append(digest)
                previous, held = digest, digest.number
            if accepted or new_keys:
                await self._storage.store_peer_digests(
                    origin, new_keys, accepted, to_us(self._clock.now())
                )
            return held

    def _checked_keys(self, offered: Sequence[tuple[str, bytes]]) -> dict[str, bytes]:
        keys: dict[str, bytes] = {}
        for key_id, public_key in offered:
            try:
                raw = audit_signing.load_public_key(public_key)
            except audit_signing.AuditSignatureError as error:
                raise DigestRejected(f"public key {key_id}: {error}") from None
            if audit_signing.key_id_of(raw) != key_id:
                raise DigestRejected(f"public key {key_id} does not have that id")
            keys[key_id] = raw
        return keys

    def _check(
        self,
        origin: str,
        digest: SignedDigest,
        keys: Mapping[str, bytes],
        previous: SignedDigest | None,
    ) -> None:
        try:
            content = digest.content
        except AuditFormatError as error:
            raise DigestRejected(f"digest {digest.number}: {error}") from None
        if content.region != origin or content.number != digest.number:
            raise DigestRejected(f"digest {digest.number} is not {origin}'s digest of that number")
        public_key = keys.get(digest.key_id)
        if public_key is None or content.signing_key_id != digest.key_id:
            raise DigestRejected(f"digest {digest.number} is signed by an unknown key")
        try:
            audit_signing.verify(public_key, digest.body.encode("utf-8"), digest.signature)
        except audit_signing.AuditSignatureError:
            raise DigestRejected(f"digest {digest.number}: the signature does not verify") from None
        expected = digest_hash(previous.body) if previous is not None else ZERO_HASH
        if digest.number > 1 and previous is None:
            raise DigestRejected(f"digest {digest.number - 1} is missing")
        if content.previous_digest_hash != expected:
            raise DigestRejected(
                f"digest {digest.number} does not follow digest {digest.number - 1} held here"
            )

    async def _same_as_held(self, origin: str, digest: SignedDigest) -> None:
        held = await self._digest(origin, digest.number)
        if held is not None and (held.body, held.signature) != (digest.body, digest.signature):
            log.error(
                "a peer region pushed a different digest for a number already held: "
                "its audit history was rewritten",
                origin=origin,
                number=digest.number,
            )
            raise DigestRejected(
                f"digest {digest.number} of {origin} differs from the copy held here"
            )

    async def _held_through(self, origin: str) -> int:
        held = 0
        while True:
            page = await self._storage.peer_digests(origin, after_number=held, limit=1000)
            for digest in page:
                if digest.number != held + 1:
                    return held
                held = digest.number
            if len(page) < 1000:
                return held

    async def _digest(self, origin: str, number: int) -> SignedDigest | None:
        if number < 1:
            return None
        page = await self._storage.peer_digests(origin, after_number=number - 1, limit=1)
        return page[0] if page and page[0].number == number else None


class DigestShipper:
    """Pushes this region's digests to every peer, resuming from each peer's position."""

    def __init__(
        self,
        storage: AuditStorage,
        transport: DigestTransport,
        clock: Clock,
        *,
        own_region: str,
        peers: Sequence[str],
        public_keys: Callable[[], Mapping[str, bytes]],
        jitter: random.Random | None = None,
        idle_interval_s: float = 60.0,
    ) -> None:
        self._storage = storage
        self._transport = transport
        self._clock = clock
        self._own_region = own_region
        self._peers = tuple(peers)
        self._public_keys = public_keys
        self._jitter = jitter or random.Random()  # noqa: S311 (backoff jitter, not crypto)
        self._idle_interval_s = idle_interval_s
        self._wakeup = asyncio.Event()
        self.positions: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        retry_at: dict[str, float] = {}
        backoff: dict[str, float] = {}
        for peer in self._peers:
            self.positions[peer] = await self._storage.peer_position(peer)
        while True:
            now = self._clock.now().timestamp()
            for peer in self._peers:
                if retry_at.get(peer, 0.0) > now:
                    continue
                try:
                    await self.ship(peer)
                except Exception as error:
                    self.failures[peer] = self.failures.get(peer, 0) + 1
                    delay = min(RETRY_S_MAX, backoff.get(peer, RETRY_S_MIN) * 2)
                    backoff[peer] = delay
                    retry_at[peer] = now + delay * (0.5 + self._jitter.random() / 2)
                    log.warning("digest push failed", peer=peer, error=str(error), retry_s=delay)
                else:
                    backoff.pop(peer, None)
                    retry_at.pop(peer, None)
            waits = [at - now for at in retry_at.values()]
            await self._sleep(min([self._idle_interval_s, *waits]))

    async def ship(self, peer: str) -> int:
        """Push everything the peer lacks; returns the peer's position."""
        position = self.positions.get(peer, 0)
        while True:
            digests = await self._storage.digests(after_number=position, limit=BATCH_DIGESTS_MAX)
            if not digests:
                return position
            batch = DigestBatch(
                origin_region=self._own_region,
                public_keys=tuple(self._public_keys().items()),
                digests=tuple(digests),
            )
            held = await asyncio.wait_for(self._transport.push_digests(peer, batch), PUSH_TIMEOUT_S)
            progressed = held > position
            if held != position:
                position = held
                self.positions[peer] = held
                await self._storage.set_peer_position(peer, held, to_us(self._clock.now()))
            if not progressed:
                return position

    async def _sleep(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(max(seconds, 0.01)))
        woken = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, woken):
                task.cancel()
            await asyncio.gather(sleeper, woken, return_exceptions=True)
            self._wakeup.clear()
