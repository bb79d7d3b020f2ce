"""The key service: every KMS operation of a region, with AWS's semantics and limits.

Servicers translate proto <-> these methods; storage sits behind the ``KeyStore``
port; crypto is delegated to the recipes in ``domain/crypto``. Each method validates
its input completely before it touches state, so bad input loses nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Generic, TypeVar

from meridian.server.domain import identifiers, validation
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto import blob as blob_recipe
from meridian.server.domain.crypto.context import validate_encryption_context
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.errors import (
    AlreadyExistsException,
    DisabledException,
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    KMSInvalidStateException,
    LimitExceededException,
    NotFoundException,
    TagException,
    UnsupportedOperationException,
    ValidationException,
)
from meridian.server.domain.key_material import KeyMaterialStore
from meridian.server.domain.key_specs import check_creatable, require_encryption_algorithm
from meridian.server.domain.material_cache import MaterialCache
from meridian.server.domain.model import (
    CRYPTO_USABLE_STATES,
    Alias,
    Caller,
    DataKeySpec,
    EncryptionAlgorithm,
    Key,
    KeySpec,
    KeyState,
    KeyUsage,
    KeyVersion,
    Origin,
    Tag,
)
from meridian.server.domain.pagination import make_marker, parse_marker
from meridian.server.domain.ports import KeyRepository, KeyStore, KeyWriter

if TYPE_CHECKING:
    from meridian.server.domain.multi_region_service import MultiRegionService

MATERIAL_BYTES = 32
SWEEP_BATCH_KEYS_MAX = 100


T = TypeVar("T")
E = TypeVar("E", KeySpec, KeyUsage, Origin, EncryptionAlgorithm, DataKeySpec)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_marker: str
    truncated: bool


@dataclass(frozen=True, slots=True)
class EncryptResult:
    ciphertext_blob: bytes
    key_arn: str
    key_material_id: str


@dataclass(frozen=True, slots=True)
class DecryptResult:
    plaintext: bytes
    key_arn: str
    key_material_id: str


@dataclass(frozen=True, slots=True)
class ReEncryptResult:
    ciphertext_blob: bytes
    source_key_arn: str
    key_arn: str
    source_key_material_id: str
    destination_key_material_id: str


@dataclass(frozen=True, slots=True)
class DataKeyResult:
    ciphertext_blob: bytes
    plaintext: bytes
    key_arn: str
    key_material_id: str


@dataclass(frozen=True, slots=True)
class CreateKeyRequest:
    description: str = ""
    key_usage: str = ""
    key_spec: str = ""
    customer_master_key_spec: str = ""
    origin: str = ""
    policy: str = ""
    tags: Sequence[Tag] = ()
    multi_region: bool = False


class KeyService:
    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        store: KeyStore,
        root_key: RootKeyProvider,
        clock: Clock,
        key_materials: KeyMaterialStore,
        randbytes: Callable[[int], bytes] = os.urandom,
        material_cache_entries_max: int = 100_000,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self._store = store
        self._root_key = root_key
        self._clock = clock
        self._randbytes = randbytes
        self._materials = MaterialCache(entries_max=material_cache_entries_max)
        # Every key spec beyond SYMMETRIC_DEFAULT, rotation and imported material. Imported
        # here, not at the top: those modules build on this one.
        from meridian.server.domain.key_types import KeyTypes

        self.key_types = KeyTypes(self, key_materials)
        # Multi-Region keys (server/domain/multi_region_service.py), set by the node's
        # composition root; None refuses them, as a node without replication must.
        self.multi_region: MultiRegionService | None = None

    # ---- key management ------------------------------------------------------------

    async def create_key(self, caller: Caller, request: CreateKeyRequest) -> Key:
        key_spec = _resolve_key_spec(request.key_spec, request.customer_master_key_spec)
        key_usage = _parse_enum(KeyUsage, request.key_usage or "ENCRYPT_DECRYPT", "KeyUsage")
        origin = _parse_enum(Origin, request.origin or "AWS_KMS", "Origin")
        validation.validate_description(request.description)
        validation.validate_tags(request.tags)
        validation.validate_tag_count(len(request.tags))
        if request.policy:
            validation.validate_policy_document(request.policy)
        check_creatable(key_spec, key_usage, origin)
        if request.multi_region:
            # Symmetric keys of Meridian-made material only, for now: the other creation
            # path (key_types) does not yet record the replication state (multi_region.py).
            if self.multi_region is None:
                raise UnsupportedOperationException(
                    "Multi-Region keys are not supported by this node (no replication)"
                )
            if key_spec is not KeySpec.SYMMETRIC_DEFAULT or origin is not Origin.AWS_KMS:
                raise UnsupportedOperationException(
                    "Multi-Region keys are supported for SYMMETRIC_DEFAULT keys with "
                    "origin AWS_KMS only"
                )
        if key_spec is not KeySpec.SYMMETRIC_DEFAULT or origin is not Origin.AWS_KMS:
            return await self.key_types.create_key(
                description=request.description,
                policy=request.policy,
                tags=request.tags,
                multi_region=request.multi_region,
                key_spec=key_spec,
                key_usage=key_usage,
                origin=origin,
            )

        key, version, material = await self.new_symmetric_key(
            description=request.description,
            policy=request.policy,
            multi_region=request.multi_region,
        )
        key_id, material_id = key.key_id, key.current_material_id
        async with self._store.write() as tx:
            await tx.insert_key(key, version)
            if request.tags:
                await tx.put_tags(key_id, request.tags)
            if key.multi_region and self.multi_region is not None:
                await self.multi_region.key_created(tx, key, version, material)
        self._materials.put(key_id, material_id, material)
        return key

    async def new_symmetric_key(
        self, *, description: str, policy: str = "", multi_region: bool = False
    ) -> tuple[Key, KeyVersion, bytes]:
        """A new Enabled SYMMETRIC_DEFAULT key, its wrapped first version and the material.

        Nothing is written: CreateKey stores the result in its transaction, and
        ``meridian node seed-keys`` (server/seeding.py) stores many in one, so both make
        exactly the same rows. The caller validated ``description`` and ``policy``.
        """
        now = self._clock.now()
        key_id = identifiers.new_key_id(multi_region=multi_region, randbytes=self._randbytes(16))
        material = self._randbytes(MATERIAL_BYTES)
        material_id = self._randbytes(32)
        version = KeyVersion(
            key_id=key_id,
            material_id=material_id,
            created_at=now,
            wrapped_material=await self._root_key.wrap(
                material, aad=_material_aad(key_id, material_id)
            ),
        )
        key = Key(
            key_id=key_id,
            arn=identifiers.key_arn(self.region, self.account_id, key_id),
            account_id=self.account_id,
            region=self.region,
            created_at=now,
            description=description,
            key_spec=KeySpec.SYMMETRIC_DEFAULT,
            key_usage=KeyUsage.ENCRYPT_DECRYPT,
            origin=Origin.AWS_KMS,
            state=KeyState.ENABLED,
            policy=policy or validation.default_key_policy(self.account_id),
            current_material_id=material_id,
            multi_region=multi_region,
        )
        key.check_invariants()
        return key, version, material

    async def describe_key(self, caller: Caller, key_id: str) -> Key:
        key = await self._resolve(self._store.reader, key_id)
        if key.multi_region and self.multi_region is not None:
            await self.multi_region.describe(self._store.reader, key)
        return key

    async def list_keys(self, caller: Caller, *, limit: int | None, marker: str) -> Page[Key]:
        page_size = validation.validate_limit(limit)
        after = parse_marker("keys", marker)
        keys = await self._store.reader.list_keys(after_key_id=after, limit=page_size + 1)
        return _page(keys, page_size, "keys", lambda key: key.key_id)

    async def update_key_description(self, caller: Caller, key_id: str, description: str) -> Key:
        validation.validate_description(description)
        async with self._store.write() as tx:
            key = await self._resolve(tx, key_id)
            _require_not_pending_deletion(key)
            key.description = description
            await tx.update_key(key)
        return key

    async def enable_key(self, caller: Caller, key_id: str) -> Key:
        async with self._store.write() as tx:
            key = await self._resolve(tx, key_id)
            _require_state(key, {KeyState.ENABLED, KeyState.DISABLED}, "enabled")
            if key.state is not KeyState.ENABLED:
                key.state = KeyState.ENABLED
                await tx.update_key(key)
                await self._multi_region_state_changed(tx, key)
        return key

    async def disable_key(self, caller: Caller, key_id: str) -> Key:
        async with self._store.write() as tx:
            key = await self._resolve(tx, key_id)
            _require_state(key, {KeyState.ENABLED, KeyState.DISABLED}, "disabled")
            if key.state is not KeyState.DISABLED:
                key.state = KeyState.DISABLED
                await tx.update_key(key)
                await self._multi_region_state_changed(tx, key)
        return key

    async def schedule_key_deletion(
        self, caller: Caller, key_id: str, pending_window_in_days: int | None
    ) -> Key:
        days = (
            validation.PENDING_WINDOW_DAYS_DEFAULT
            if pending_window_in_days is None
            else pending_window_in_days
        )
        if not validation.PENDING_WINDOW_DAYS_MIN <= days <= validation.PENDING_WINDOW_DAYS_MAX:
            raise ValidationException(
                f"PendingWindowInDays must be between {validation.PENDING_WINDOW_DAYS_MIN}"
                f" and {validation.PENDING_WINDOW_DAYS_MAX}"
            )
        async with self._store.write() as tx:
            key = await self._resolve(tx, key_id)
            # A key waiting for imported material may be deleted too (AWS).
            _require_state(
                key,
                {KeyState.ENABLED, KeyState.DISABLED, KeyState.PENDING_IMPORT},
                "scheduled for deletion",
            )
            key.state = KeyState.PENDING_DELETION
            key.deletion_date = self._clock.now() + timedelta(days=days)
            key.pending_window_days = days
            # A multi-Region primary with live replicas waits, without a date, until they
            # are gone (AWS's PendingReplicaDeletion).
            if (
                key.multi_region
                and self.multi_region is not None
                and await self.multi_region.deletion_state(tx, key)
                is KeyState.PENDING_REPLICA_DELETION
            ):
                key.state = KeyState.PENDING_REPLICA_DELETION
                key.deletion_date = None
            key.check_invariants()
            await tx.update_key(key)
            await self._multi_region_state_changed(tx, key)
        return key

    async def cancel_key_deletion(self, caller: Caller, key_id: str) -> Key:
        async with self._store.write() as tx:
            key = await self._resolve(tx, key_id)
            _require_state(
                key,
                {KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION},
                "cancelled from deletion",
            )
            # As in AWS, a key whose deletion is cancelled comes back disabled, or pending
            # import if it has imported material that is missing (key_import.py).
            key.state = (
                KeyState.PENDING_IMPORT
                if await self.key_types.imports.lacks_material(key)
                else KeyState.DISABLED
            )
            key.deletion_date = None
            key.pending_window_days = None
            key.check_invariants()
            await tx.update_key(key)
            await self._multi_region_state_changed(tx, key)
        return key

    async def delete_due_keys(self) -> list[str]:
        """Delete every key whose waiting period is over."""
        return [
            key_id
            for key_id in await self.keys_due_for_deletion()
            if await self.delete_if_due(key_id)
        ]

    async def keys_due_for_deletion(self) -> list[str]:
        """Keys whose waiting period is over (the sweeper deletes them one by one)."""
        now = self._clock.now()
        return await self._store.reader.keys_due_for_deletion(now, limit=SWEEP_BATCH_KEYS_MAX)

    async def delete_if_due(self, key_id: str) -> bool:
        """Delete ``key_id`` if it is still due; False if it is not (cancelled, gone)."""
        now = self._clock.now()
        async with self._store.write() as tx:
            key = await tx.get_key(key_id)
            # The key may have been cancelled between the scan and this transaction.
            if (
                key is None
                or key.state is not KeyState.PENDING_DELETION
                or key.deletion_date is None
                or key.deletion_date > now
            ):
                return False
            # A multi-Region primary with live replicas, or a region holding the only copy
            # of a key version, waits (server/domain/multi_region_service.py).
            if (
                key.multi_region
                and self.multi_region is not None
                and not await self.multi_region.before_delete(tx, key)
            ):
                return False
            await tx.delete_key(key_id)
        self._materials.forget_key(key_id)
        return True

    async def _multi_region_state_changed(self, tx: KeyWriter, key: Key) -> None:
        """A multi-Region key's own state changed: its peers learn it through the log."""
        if key.multi_region and self.multi_region is not None:
            await self.multi_region.key_state_changed(tx, key)

    # ---- cryptographic operations ---------------------------------------------------

    async def encrypt(
        self,
        caller: Caller,
        *,
        key_id: str,
        plaintext: bytes,
        encryption_context: Mapping[str, str],
        encryption_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> EncryptResult:
        _validate_plaintext(plaintext)
        validate_encryption_context(encryption_context)
        validation.validate_grant_tokens(grant_tokens)
        algorithm = _symmetric_algorithm(encryption_algorithm)
        key = await self._resolve(self._store.reader, key_id)
        self._require_usable_for_encryption(key, algorithm)
        if key.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
            rsa = await self.key_types.rsa.encrypt(
                key, plaintext=plaintext, encryption_context=encryption_context, algorithm=algorithm
            )
            return EncryptResult(rsa.data, rsa.key_arn, rsa.key_material_id)
        material = await self._material(key, key.current_material_id)
        blob = blob_recipe.seal(
            material,
            key_id=key.key_id,
            key_material_id=key.current_material_id,
            plaintext=plaintext,
            encryption_context=encryption_context,
            randbytes=self._randbytes,
        )
        return EncryptResult(blob, key.arn, key.current_material_id.hex())

    async def decrypt(
        self,
        caller: Caller,
        *,
        ciphertext_blob: bytes,
        encryption_context: Mapping[str, str],
        key_id: str,
        encryption_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> DecryptResult:
        validate_encryption_context(encryption_context)
        validation.validate_grant_tokens(grant_tokens)
        algorithm = _symmetric_algorithm(encryption_algorithm)
        if algorithm is not EncryptionAlgorithm.SYMMETRIC_DEFAULT:
            # Asymmetric ciphertext names no key; the caller names it (rsa_encryption.py).
            if not 1 <= len(ciphertext_blob) <= blob_recipe.BLOB_BYTES_MAX:
                raise ValidationException(
                    f"CiphertextBlob must be 1 to {blob_recipe.BLOB_BYTES_MAX} bytes"
                )
            rsa = await self.key_types.rsa.decrypt(
                key_id,
                ciphertext_blob=ciphertext_blob,
                encryption_context=encryption_context,
                algorithm=algorithm,
            )
            return DecryptResult(rsa.data, rsa.key_arn, rsa.key_material_id)
        key, material_id, material = await self._key_for_ciphertext(ciphertext_blob, key_id)
        self._require_usable_for_encryption(key, algorithm)
        plaintext = blob_recipe.open_blob(
            material, ciphertext_blob, encryption_context=encryption_context
        )
        return DecryptResult(plaintext, key.arn, material_id.hex())

    async def re_encrypt(
        self,
        caller: Caller,
        *,
        ciphertext_blob: bytes,
        source_encryption_context: Mapping[str, str],
        source_key_id: str,
        destination_key_id: str,
        destination_encryption_context: Mapping[str, str],
        source_encryption_algorithm: str,
        destination_encryption_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> ReEncryptResult:
        if not destination_key_id:
            raise ValidationException("DestinationKeyId is required")
        validate_encryption_context(destination_encryption_context)
        destination_algorithm = _symmetric_algorithm(destination_encryption_algorithm)
        destination = await self._resolve(self._store.reader, destination_key_id)
        self._require_usable_for_encryption(destination, destination_algorithm)
        source = await self.decrypt(
            caller,
            ciphertext_blob=ciphertext_blob,
            encryption_context=source_encryption_context,
            key_id=source_key_id,
            encryption_algorithm=source_encryption_algorithm,
            grant_tokens=grant_tokens,
        )
        encrypted = await self.encrypt(
            caller,
            key_id=destination.key_id,
            plaintext=source.plaintext,
            encryption_context=destination_encryption_context,
            encryption_algorithm=destination_algorithm.value,
        )
        return ReEncryptResult(
            ciphertext_blob=encrypted.ciphertext_blob,
            source_key_arn=source.key_arn,
            key_arn=encrypted.key_arn,
            source_key_material_id=source.key_material_id,
            destination_key_material_id=encrypted.key_material_id,
        )

    async def generate_data_key(
        self,
        caller: Caller,
        *,
        key_id: str,
        encryption_context: Mapping[str, str],
        number_of_bytes: int | None,
        key_spec: str,
        grant_tokens: Sequence[str] = (),
    ) -> DataKeyResult:
        size = _data_key_bytes(number_of_bytes, key_spec)
        data_key = self._randbytes(size)
        encrypted = await self.encrypt(
            caller,
            key_id=key_id,
            plaintext=data_key,
            encryption_context=encryption_context,
            encryption_algorithm="",
            grant_tokens=grant_tokens,
        )
        return DataKeyResult(
            ciphertext_blob=encrypted.ciphertext_blob,
            plaintext=data_key,
            key_arn=encrypted.key_arn,
            key_material_id=encrypted.key_material_id,
        )

    def generate_random(self, caller: Caller, number_of_bytes: int | None) -> bytes:
        if number_of_bytes is None:
            raise ValidationException("NumberOfBytes is required")
        if not 1 <= number_of_bytes <= validation.DATA_KEY_BYTES_MAX:
            raise ValidationException(
                f"NumberOfBytes must be between 1 and {validation.DATA_KEY_BYTES_MAX}"
            )
        return self._randbytes(number_of_bytes)

    # ---- aliases ----------------------------------------------------------------------

    async def create_alias(self, caller: Caller, alias_name: str, target_key_id: str) -> Alias:
        identifiers.validate_new_alias_name(alias_name)
        target = self._target_key_id(target_key_id)
        now = self._clock.now()
        alias = Alias(alias_name=alias_name, target_key_id=target, created_at=now, updated_at=now)
        async with self._store.write() as tx:
            key = await self._key_by_id(tx, target)
            _require_not_pending_deletion(key)
            if await tx.get_alias(alias_name) is not None:
                raise AlreadyExistsException(f"An alias with the name {alias_name} already exists")
            if await tx.count_aliases(target) >= validation.ALIASES_PER_KEY_MAX:
                raise LimitExceededException(
                    f"A key can have at most {validation.ALIASES_PER_KEY_MAX} aliases"
                )
            await tx.insert_alias(alias)
        return alias

    async def update_alias(self, caller: Caller, alias_name: str, target_key_id: str) -> Alias:
        identifiers.validate_new_alias_name(alias_name)
        target = self._target_key_id(target_key_id)
        async with self._store.write() as tx:
            alias = await tx.get_alias(alias_name)
            if alias is None:
                raise NotFoundException(f"Alias {alias_name} does not exist")
            new_key = await self._key_by_id(tx, target)
            _require_not_pending_deletion(new_key)
            old_key = await tx.get_key(alias.target_key_id)
            # AWS: the new target must be the same type of key (spec and usage).
            if old_key is not None and (
                old_key.key_spec is not new_key.key_spec
                or old_key.key_usage is not new_key.key_usage
            ):
                raise ValidationException(
                    "The new target key must have the same KeySpec and KeyUsage as the current one"
                )
            if await tx.count_aliases(target) >= validation.ALIASES_PER_KEY_MAX:
                raise LimitExceededException(
                    f"A key can have at most {validation.ALIASES_PER_KEY_MAX} aliases"
                )
            alias = replace(alias, target_key_id=target, updated_at=self._clock.now())
            await tx.update_alias(alias)
        return alias

    async def delete_alias(self, caller: Caller, alias_name: str) -> None:
        identifiers.validate_alias_name(alias_name)
        async with self._store.write() as tx:
            if await tx.get_alias(alias_name) is None:
                raise NotFoundException(f"Alias {alias_name} does not exist")
            await tx.delete_alias(alias_name)

    async def list_aliases(
        self, caller: Caller, *, key_id: str, limit: int | None, marker: str
    ) -> Page[Alias]:
        page_size = validation.validate_limit(limit)
        after = parse_marker("aliases", marker)
        target: str | None = None
        if key_id:
            target = (await self._resolve(self._store.reader, key_id)).key_id
        aliases = await self._store.reader.list_aliases(
            key_id=target, after_alias_name=after, limit=page_size + 1
        )
        return _page(aliases, page_size, "aliases", lambda alias: alias.alias_name)

    def alias_arn(self, alias_name: str) -> str:
        return identifiers.alias_arn(self.region, self.account_id, alias_name)

    # ---- tags -------------------------------------------------------------------------

    async def tag_resource(self, caller: Caller, key_id: str, tags: Sequence[Tag]) -> None:
        if not tags:
            raise ValidationException("Tags must not be empty")
        validation.validate_tags(tags)
        async with self._store.write() as tx:
            key = await self._resolve_for_tags(tx, key_id)
            existing = {tag.tag_key for tag in await tx.get_tags(key.key_id)}
            validation.validate_tag_count(len(existing | {tag.tag_key for tag in tags}))
            await tx.put_tags(key.key_id, tags)

    async def untag_resource(self, caller: Caller, key_id: str, tag_keys: Sequence[str]) -> None:
        if not tag_keys:
            raise ValidationException("TagKeys must not be empty")
        for tag_key in tag_keys:
            if not 1 <= len(tag_key) <= validation.TAG_KEY_CHARS_MAX:
                raise TagException(
                    f"Each tag key must be 1 to {validation.TAG_KEY_CHARS_MAX} characters long"
                )
        async with self._store.write() as tx:
            key = await self._resolve_for_tags(tx, key_id)
            await tx.delete_tags(key.key_id, tag_keys)

    async def list_resource_tags(
        self, caller: Caller, key_id: str, *, limit: int | None, marker: str
    ) -> Page[Tag]:
        page_size = validation.validate_limit(limit)
        after = parse_marker("tags", marker)
        key = await self._resolve_key_only(self._store.reader, key_id)
        tags = sorted(await self._store.reader.get_tags(key.key_id), key=lambda t: t.tag_key)
        if after is not None:
            tags = [tag for tag in tags if tag.tag_key > after]
        return _page(tags[: page_size + 1], page_size, "tags", lambda tag: tag.tag_key)

    # ---- helpers shared with the modules that extend the service (key_types.py) ------

    @property
    def store(self) -> KeyStore:
        return self._store

    @property
    def root_key(self) -> RootKeyProvider:
        return self._root_key

    @property
    def clock(self) -> Clock:
        return self._clock

    def randbytes(self, count: int) -> bytes:
        return self._randbytes(count)

    async def resolve_key(self, repository: KeyRepository, key_id: str) -> Key:
        """The key a KeyId parameter names: key id, key ARN, alias name or alias ARN."""
        return await self._resolve(repository, key_id)

    async def key_material(self, key: Key, material_id: bytes) -> bytes:
        """One version's unwrapped material, through the cache."""
        return await self._material(key, material_id)

    def remember_material(self, key_id: str, material_id: bytes, material: bytes) -> None:
        self._materials.put(key_id, material_id, material)

    def forget_materials(self, key_id: str) -> None:
        """Drop a key's cached material (its material was deleted or expired)."""
        self._materials.forget_key(key_id)

    def forget_all_materials(self) -> None:
        """Drop all cached material: another worker process committed, and it may have
        deleted material this process still holds (server/workers.py)."""
        self._materials.clear()

    def require_usable(self, key: Key) -> None:
        """The key's state must allow cryptographic operations (AWS's key-state table)."""
        if key.state is KeyState.DISABLED:
            raise DisabledException(f"{key.arn} is disabled.")
        if key.state not in CRYPTO_USABLE_STATES:
            raise KMSInvalidStateException(f"{key.arn} is {_state_phrase(key.state)}.")

    # ---- helpers ----------------------------------------------------------------------

    async def _resolve(self, repository: KeyRepository, key_id: str) -> Key:
        reference = identifiers.parse_key_reference(
            key_id, region=self.region, account_id=self.account_id
        )
        if reference.alias_name is not None:
            alias = await repository.get_alias(reference.alias_name)
            if alias is None:
                raise NotFoundException(f"Alias {reference.alias_name} is not found")
            return await self._key_by_id(repository, alias.target_key_id)
        assert reference.key_id is not None
        return await self._key_by_id(repository, reference.key_id)

    async def _resolve_key_only(self, repository: KeyRepository, key_id: str) -> Key:
        """Tag operations take a key id or key ARN; AWS refuses aliases there."""
        reference = identifiers.parse_key_reference(
            key_id, region=self.region, account_id=self.account_id
        )
        if reference.key_id is None:
            raise ValidationException("KeyId must be a key ID or key ARN for tag operations")
        return await self._key_by_id(repository, reference.key_id)

    async def _resolve_for_tags(self, tx: KeyWriter, key_id: str) -> Key:
        key = await self._resolve_key_only(tx, key_id)
        _require_not_pending_deletion(key)
        return key

    async def _key_by_id(self, repository: KeyRepository, key_id: str) -> Key:
        key = await repository.get_key(key_id)
        if key is None:
            raise NotFoundException(
                f"Key '{identifiers.key_arn(self.region, self.account_id, key_id)}' does not exist"
            )
        key.check_invariants()
        return key

    def _target_key_id(self, target_key_id: str) -> str:
        if not target_key_id:
            raise ValidationException("TargetKeyId is required")
        return identifiers.parse_target_key_id(
            target_key_id, region=self.region, account_id=self.account_id
        )

    async def _key_for_ciphertext(
        self, ciphertext_blob: bytes, key_id: str
    ) -> tuple[Key, bytes, bytes]:
        """The key, material id and material a blob was sealed under.

        Everything that goes wrong with the blob itself (malformed, foreign, unknown
        key or version) is one opaque InvalidCiphertextException. A caller who names a
        different key than the blob's gets IncorrectKeyException, as in AWS.
        """
        if not ciphertext_blob:
            raise ValidationException("CiphertextBlob is required")
        if len(ciphertext_blob) > blob_recipe.BLOB_BYTES_MAX:
            raise ValidationException(
                f"CiphertextBlob must be at most {blob_recipe.BLOB_BYTES_MAX} bytes"
            )
        header = blob_recipe.parse_header(ciphertext_blob)
        if key_id:
            named = await self._resolve(self._store.reader, key_id)
            if named.key_id != header.key_id:
                raise IncorrectKeyException(
                    "The key ID in the request does not identify the key that encrypted "
                    "the ciphertext"
                )
        if not identifiers.is_key_id(header.key_id):
            raise InvalidCiphertextException()
        key = await self._store.reader.get_key(header.key_id)
        if key is None:
            raise InvalidCiphertextException()
        key.check_invariants()
        # A key whose imported material is gone says so before the version is looked up.
        self.require_usable(key)
        material = await self._material(key, header.key_material_id)
        return key, header.key_material_id, material

    async def _material(self, key: Key, material_id: bytes) -> bytes:
        cached = self._materials.get(key.key_id, material_id)
        if cached is not None:
            return cached
        version = await self._store.reader.get_version(key.key_id, material_id)
        if version is None:
            raise InvalidCiphertextException()
        material = await self._root_key.unwrap(
            version.wrapped_material, aad=_material_aad(key.key_id, material_id)
        )
        self._materials.put(key.key_id, material_id, material)
        return material

    def _require_usable_for_encryption(self, key: Key, algorithm: EncryptionAlgorithm) -> None:
        if key.state is KeyState.DISABLED:
            raise DisabledException(f"{key.arn} is disabled.")
        if key.state not in CRYPTO_USABLE_STATES:
            raise KMSInvalidStateException(f"{key.arn} is {_state_phrase(key.state)}.")
        if key.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
            raise InvalidKeyUsageException(
                f"{key.arn} key usage is {key.key_usage.value} which is not valid for this "
                "operation"
            )
        # SYMMETRIC_DEFAULT keys take SYMMETRIC_DEFAULT only, RSA keys RSAES_OAEP_* only.
        require_encryption_algorithm(key, algorithm)


def _material_aad(key_id: str, material_id: bytes) -> bytes:
    """Binds wrapped material to its key and version, so rows cannot be swapped."""
    return b"meridian/key-material/v1\x00" + key_id.encode("ascii") + b"\x00" + material_id


def _resolve_key_spec(key_spec: str, customer_master_key_spec: str) -> KeySpec:
    if key_spec and customer_master_key_spec and key_spec != customer_master_key_spec:
        raise ValidationException("KeySpec and CustomerMasterKeySpec disagree; use KeySpec only")
    return _parse_enum(
        KeySpec, key_spec or customer_master_key_spec or "SYMMETRIC_DEFAULT", "KeySpec"
    )


def _parse_enum(enum: type[E], value: str, field: str) -> E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValidationException(
            f"Value at '{field}' failed to satisfy constraint: Member must satisfy enum value "
            f"set: [{allowed}]"
        ) from None


def _symmetric_algorithm(value: str) -> EncryptionAlgorithm:
    return _parse_enum(EncryptionAlgorithm, value or "SYMMETRIC_DEFAULT", "EncryptionAlgorithm")


def _validate_plaintext(plaintext: bytes) -> None:
    if not 1 <= len(plaintext) <= validation.PLAINTEXT_BYTES_MAX:
        raise ValidationException(
            f"Plaintext must be between 1 and {validation.PLAINTEXT_BYTES_MAX} bytes"
        )


def _data_key_bytes(number_of_bytes: int | None, key_spec: str) -> int:
    if number_of_bytes is not None and key_spec:
        raise ValidationException("Specify either KeySpec or NumberOfBytes, not both")
    if number_of_bytes is None and not key_spec:
        raise ValidationException("Specify either KeySpec or NumberOfBytes")
    if number_of_bytes is not None:
        if not 1 <= number_of_bytes <= validation.DATA_KEY_BYTES_MAX:
            raise ValidationException(
                f"NumberOfBytes must be between 1 and {validation.DATA_KEY_BYTES_MAX}"
            )
        return number_of_bytes
    spec = _parse_enum(DataKeySpec, key_spec, "KeySpec")
    return 32 if spec is DataKeySpec.AES_256 else 16


def _require_state(key: Key, allowed: set[KeyState], action: str) -> None:
    if key.state not in allowed:
        raise KMSInvalidStateException(
            f"{key.arn} is {_state_phrase(key.state)} and cannot be {action}."
        )


def _require_not_pending_deletion(key: Key) -> None:
    if key.state in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
        raise KMSInvalidStateException(f"{key.arn} is {_state_phrase(key.state)}.")


def _state_phrase(state: KeyState) -> str:
    return {
        KeyState.PENDING_DELETION: "pending deletion",
        KeyState.PENDING_REPLICA_DELETION: "pending replica deletion",
        KeyState.PENDING_IMPORT: "pending import",
        KeyState.CREATING: "creating",
        KeyState.UPDATING: "updating",
        KeyState.UNAVAILABLE: "unavailable",
        KeyState.DISABLED: "disabled",
        KeyState.ENABLED: "enabled",
    }[state]


def _page(items: list[T], page_size: int, list_name: str, name_of: Callable[[T], str]) -> Page[T]:
    if len(items) > page_size:
        page = items[:page_size]
        return Page(page, make_marker(list_name, name_of(page[-1])), True)
    return Page(items, "", False)


# Public names of helpers the modules that extend the service share (key_types.py).
material_aad = _material_aad
require_state = _require_state
state_phrase = _state_phrase
page = _page
