"""The node's replication identity: an ML-DSA-65 signing key and a hybrid X25519 + ML-KEM-768
wrapping key, made on the node's first start and pinned by peers on first contact.

The 128 bytes of seeds (32 ML-DSA, 32 X25519, 64 ML-KEM) are kept in the node's database
(table ``replication_identity``, in the data directory) wrapped by the region root key with
the associated data ``IDENTITY_AAD``, like all secrets at rest: under an HSM root key they
never touch the disk in the clear, and ``meridian node rewrap-root`` moves them with the
rest (``server/rewrap.py``). Peers learn the public keys in ``Hello`` over mTLS (the cluster
CA vouches for the region's node certificate) and pin them: a changed identity is refused
until an operator forgets the old pin (replication/DESIGN.md, "Trust").
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.server.domain.crypto import signing
from meridian.server.domain.crypto.peer_wrap import (
    MLKEM_SEED_BYTES,
    X25519_SEED_BYTES,
    PeerKeyPair,
    PeerPublicKey,
    PeerWrapError,
)
from meridian.server.domain.crypto.rootkey import RootKeyError, RootKeyProvider
from meridian.server.storage.replication_repository import SqliteReplicationWriter
from meridian.server.storage.store import SqliteStore

IDENTITY_AAD = b"meridian/replication-identity/v1"
SEEDS_BYTES = signing.SEED_BYTES + X25519_SEED_BYTES + MLKEM_SEED_BYTES
IDENTITY_CONTEXT = b"meridian/replication/v1/identity"


class IdentityError(Exception):
    """The identity file is unusable, or a peer's identity does not verify."""


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    region: str
    signing_public_key: bytes
    wrap_key: PeerPublicKey

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.signing_public_key).hexdigest()


class NodeIdentity:
    def __init__(self, region: str, seeds: bytes) -> None:
        if len(seeds) != SEEDS_BYTES:
            raise IdentityError("bad identity seeds")
        x25519_end = signing.SEED_BYTES + X25519_SEED_BYTES
        self.region = region
        self.signer = signing.NodeSigner(seeds[: signing.SEED_BYTES])
        self.wrap_keys = PeerKeyPair(
            x25519_seed=seeds[signing.SEED_BYTES : x25519_end], mlkem_seed=seeds[x25519_end:]
        )
        self.public = PublicIdentity(region, self.signer.public_key, self.wrap_keys.public_key)

    def __repr__(self) -> str:
        return f"NodeIdentity(region={self.region!r}, fingerprint={self.public.fingerprint[:16]})"

    def to_proto(self) -> pb.NodeIdentity:
        public = self.public
        return pb.NodeIdentity(
            region=public.region,
            signing_public_key=public.signing_public_key,
            wrap_x25519_public_key=public.wrap_key.x25519,
            wrap_mlkem_public_key=public.wrap_key.mlkem,
            signature=self.signer.sign(_identity_bytes(public), context=IDENTITY_CONTEXT),
        )


def verify_identity(message: pb.NodeIdentity) -> PublicIdentity:
    """The public identity in ``message`` if its self-signature verifies; else IdentityError."""
    try:
        public = PublicIdentity(
            region=message.region,
            signing_public_key=bytes(message.signing_public_key),
            wrap_key=PeerPublicKey(
                x25519=bytes(message.wrap_x25519_public_key),
                mlkem=bytes(message.wrap_mlkem_public_key),
            ),
        )
        signing.verify(
            public.signing_public_key,
            bytes(message.signature),
            _identity_bytes(public),
            context=IDENTITY_CONTEXT,
        )
    except (PeerWrapError, signing.SignatureError):
        raise IdentityError("the node identity does not verify") from None
    return public


def _identity_bytes(public: PublicIdentity) -> bytes:
    region = public.region.encode("ascii", "replace")
    return b"\x00".join(
        (
            b"meridian-node-identity-v1",
            len(region).to_bytes(2, "big") + region,
            public.signing_public_key,
            public.wrap_key.x25519,
            public.wrap_key.mlkem,
        )
    )


async def load_or_create(
    store: SqliteStore,
    region: str,
    root_key: RootKeyProvider,
    *,
    now_us: int,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> NodeIdentity:
    """The node's identity from its database, made (and stored wrapped) on first start."""
    async with store.write() as tx:
        writer = SqliteReplicationWriter(tx.connection)
        wrapped = await writer.identity_seeds()
        if wrapped is None:
            seeds = randbytes(SEEDS_BYTES)
            await writer.insert_identity_seeds(
                await root_key.wrap(seeds, aad=IDENTITY_AAD), now_us=now_us
            )
            return NodeIdentity(region, seeds)
    try:
        seeds = await root_key.unwrap(wrapped, aad=IDENTITY_AAD)
    except RootKeyError:
        raise IdentityError("the replication identity does not unwrap with the root key") from None
    return NodeIdentity(region, seeds)


class LazyIdentity:
    """The identity, unwrapped (or made) on first use rather than at start, as the audit
    trail does with its signing key: a node whose root key cannot unwrap it (an HSM that is
    down, a root key moved without this secret) still starts and serves its own region;
    replication fails, loudly, until the identity is available."""

    def __init__(
        self,
        store: SqliteStore,
        region: str,
        root_key: RootKeyProvider,
        *,
        now_us: Callable[[], int],
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.region = region
        self._store = store
        self._root_key = root_key
        self._now_us = now_us
        self._randbytes = randbytes
        self._identity: NodeIdentity | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> NodeIdentity | None:
        return self._identity

    async def get(self) -> NodeIdentity:
        """The identity; IdentityError if it cannot be unwrapped (retried on the next call)."""
        if self._identity is not None:
            return self._identity
        async with self._lock:
            if self._identity is None:
                self._identity = await load_or_create(
                    self._store,
                    self.region,
                    self._root_key,
                    now_us=self._now_us(),
                    randbytes=self._randbytes,
                )
        return self._identity
