"""What the key-type modules share: the service port they use, and helpers over it.

``ServiceCore`` is the part of ``KeyService`` that signing, MACs, key agreement, data
key pairs, RSA encryption, rotation and import build on: resolving key references,
unwrapping material through the cache, state checks, the clock, randomness and the root
key. ``KeyContext`` adds the helpers they have in common: creating keys of every spec,
wrapping new versions, and reading a key's public key and private material.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meridian.server.domain import identifiers, validation
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto import key_pairs
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.errors import ValidationException
from meridian.server.domain.key_material import (
    ExpirationModel,
    KeyMaterial,
    KeyMaterialStore,
    current_material,
)
from meridian.server.domain.key_specs import spec_info
from meridian.server.domain.model import (
    Caller,
    Key,
    KeySpec,
    KeyState,
    KeyUsage,
    KeyVersion,
    Origin,
    Tag,
)
from meridian.server.domain.ports import KeyRepository, KeyStore
from meridian.server.domain.service import material_aad

MATERIAL_ID_BYTES = 32
PUBLIC_KEYS_CACHED_MAX = 10_000


class Sealed(Protocol):
    """What Encrypt returns, as the key-type modules read it."""

    @property
    def ciphertext_blob(self) -> bytes: ...

    @property
    def key_arn(self) -> str: ...

    @property
    def key_material_id(self) -> str: ...


class ServiceCore(Protocol):
    """The part of ``KeyService`` the key-type modules use (KeyService implements it)."""

    region: str
    account_id: str

    @property
    def store(self) -> KeyStore: ...

    @property
    def root_key(self) -> RootKeyProvider: ...

    @property
    def clock(self) -> Clock: ...

    def randbytes(self, count: int) -> bytes: ...

    async def resolve_key(self, repository: KeyRepository, key_id: str) -> Key: ...

    async def key_material(self, key: Key, material_id: bytes) -> bytes: ...

    def remember_material(self, key_id: str, material_id: bytes, material: bytes) -> None: ...

    def forget_materials(self, key_id: str) -> None: ...

    def require_usable(self, key: Key) -> None: ...

    async def encrypt(
        self,
        caller: Caller,
        *,
        key_id: str,
        plaintext: bytes,
        encryption_context: Mapping[str, str],
        encryption_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> Sealed: ...


@dataclass(frozen=True, slots=True)
class NewMaterial:
    """Freshly generated material of one version: the secret the root key wraps (a
    symmetric or HMAC key, or a PKCS#8 private key) and, for key pairs, the public key."""

    secret: bytes
    public_key: bytes | None

    def __repr__(self) -> str:
        return "NewMaterial(secret hidden)"


@dataclass(frozen=True, slots=True)
class ImportExpiry:
    """What DescribeKey shows of a key's imported material: ExpirationModel and ValidTo."""

    expiration_model: ExpirationModel | None
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    """The CreateKey fields that do not depend on the key type."""

    description: str
    policy: str
    tags: Sequence[Tag]
    multi_region: bool


class KeyContext:
    def __init__(
        self,
        service: ServiceCore,
        materials: KeyMaterialStore,
        *,
        public_keys_cached_max: int = PUBLIC_KEYS_CACHED_MAX,
    ) -> None:
        self.service = service
        self.materials = materials
        # A version's public key never changes, and is not secret: Verify, Encapsulate and
        # RSA Encrypt read it from here instead of the database. A deleted key is refused
        # before its entry could be used, so entries need no invalidation, only a bound.
        self._public_keys: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._public_keys_cached_max = public_keys_cached_max

    # ---- creating keys and versions ----------------------------------------------------

    async def new_material(self, spec: KeySpec) -> NewMaterial:
        """Generate the material of one version of a key of ``spec``."""
        info = spec_info(spec)
        if not info.asymmetric:
            return NewMaterial(secret=self.service.randbytes(info.secret_bytes), public_key=None)
        # RSA generation takes up to a second and releases the GIL: keep the loop serving.
        pair = await asyncio.to_thread(key_pairs.generate, spec)
        return NewMaterial(secret=pair.private_pkcs8, public_key=pair.public_spki)

    async def wrap_version(
        self, key_id: str, material_id: bytes, secret: bytes, now: datetime
    ) -> KeyVersion:
        """One version's secret wrapped by the root key, bound to its key and version."""
        return KeyVersion(
            key_id=key_id,
            material_id=material_id,
            created_at=now,
            wrapped_material=await self.service.root_key.wrap(
                secret, aad=material_aad(key_id, material_id)
            ),
        )

    async def create_key(
        self, new: NewKey, *, key_spec: KeySpec, key_usage: KeyUsage, origin: Origin
    ) -> Key:
        """CreateKey for every spec but AWS_KMS SYMMETRIC_DEFAULT (which KeyService makes).

        An EXTERNAL key is created without material, in PendingImport, as AWS does.
        """
        service = self.service
        now = service.clock.now()
        key_id = identifiers.new_key_id(
            multi_region=new.multi_region, randbytes=service.randbytes(16)
        )
        version: KeyVersion | None = None
        record: KeyMaterial | None = None
        secret = b""
        material_id = b""
        if origin is Origin.AWS_KMS:
            material = await self.new_material(key_spec)
            secret = material.secret
            material_id = service.randbytes(MATERIAL_ID_BYTES)
            version = await self.wrap_version(key_id, material_id, secret, now)
            record = KeyMaterial(
                key_id=key_id,
                material_id=material_id,
                created_at=now,
                public_key=material.public_key,
            )
        key = Key(
            key_id=key_id,
            arn=identifiers.key_arn(service.region, service.account_id, key_id),
            account_id=service.account_id,
            region=service.region,
            created_at=now,
            description=new.description,
            key_spec=key_spec,
            key_usage=key_usage,
            origin=origin,
            state=KeyState.ENABLED if origin is Origin.AWS_KMS else KeyState.PENDING_IMPORT,
            policy=new.policy or validation.default_key_policy(service.account_id),
            current_material_id=material_id,
            multi_region=new.multi_region,
        )
        key.check_invariants()
        async with self.materials.write() as tx:
            await tx.keys.insert_key(key, version)
            if record is not None:
                await tx.materials.put_material(record)
            if new.tags:
                await tx.keys.put_tags(key_id, new.tags)
        if version is not None:
            service.remember_material(key_id, material_id, secret)
        return key

    # ---- reading keys ------------------------------------------------------------------

    async def resolve_key_only(self, repository: KeyRepository, key_id: str) -> Key:
        """Rotation and import operations take a key ID or key ARN, not an alias (AWS)."""
        service = self.service
        reference = identifiers.parse_key_reference(
            key_id, region=service.region, account_id=service.account_id
        )
        if reference.key_id is None:
            raise ValidationException("KeyId must be a key ID or key ARN for this operation")
        return await service.resolve_key(repository, key_id)

    async def usable_key(self, key_id: str) -> Key:
        """The key ``key_id`` names, in a state that allows cryptographic operations."""
        key = await self.service.resolve_key(self.service.store.reader, key_id)
        self.service.require_usable(key)
        return key

    async def private_material(self, key: Key) -> bytes:
        """The current version's secret: a PKCS#8 private key, or an HMAC key."""
        return await self.service.key_material(key, key.current_material_id)

    async def public_key(self, key: Key) -> bytes:
        """The current version's DER SubjectPublicKeyInfo."""
        entry = (key.key_id, key.current_material_id)
        cached = self._public_keys.get(entry)
        if cached is not None:
            self._public_keys.move_to_end(entry)
            return cached
        record = await self.materials.reader.get_material(key.key_id, key.current_material_id)
        if record is not None and record.public_key is not None:
            public_key = record.public_key
        else:
            # A version stored without its record (e.g. by another writer): derive it.
            public_key = key_pairs.public_spki_of(key.key_spec, await self.private_material(key))
        self._public_keys[entry] = public_key
        while len(self._public_keys) > self._public_keys_cached_max:
            self._public_keys.popitem(last=False)
        return public_key

    async def import_expiry(self, key: Key) -> ImportExpiry | None:
        """ExpirationModel and ValidTo of an EXTERNAL key's current material."""
        if key.origin is not Origin.EXTERNAL or not key.current_material_id:
            return None
        material = current_material(await self.materials.reader.list_materials(key.key_id), key)
        if material is None:
            return None
        return ImportExpiry(expiration_model=material.expiration_model, valid_to=material.valid_to)
