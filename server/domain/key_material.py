"""Key material beyond the wrapped bytes: what each version is, how it came, when it ends.

A key's versions (``KeyVersion`` rows: the material wrapped by the root key) are joined
here by a ``KeyMaterial`` record each: the public key of a key pair, how and when the
version became the encrypting one (rotation), and for imported material its import
state and expiry. Rotation settings are one ``RotationSettings`` row per key.

The storage for both is declared here as ports and implemented by
``server/storage/key_material_repository.py``; a ``KeyMaterialTransaction`` sees the key
tables and these in one durable transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from meridian.server.domain.model import Key, KeyVersion
from meridian.server.domain.ports import KeyWriter


class RotationType(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


class KeyMaterialState(StrEnum):
    CURRENT = "CURRENT"
    NON_CURRENT = "NON_CURRENT"
    PENDING_ROTATION = "PENDING_ROTATION"
    # Multi-Region imported material waiting for every replica; the replication work's.
    PENDING_MULTI_REGION_IMPORT_AND_ROTATION = "PENDING_MULTI_REGION_IMPORT_AND_ROTATION"


class ImportState(StrEnum):
    IMPORTED = "IMPORTED"
    PENDING_IMPORT = "PENDING_IMPORT"


class ExpirationModel(StrEnum):
    KEY_MATERIAL_EXPIRES = "KEY_MATERIAL_EXPIRES"
    KEY_MATERIAL_DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"


class ImportType(StrEnum):
    NEW_KEY_MATERIAL = "NEW_KEY_MATERIAL"
    EXISTING_KEY_MATERIAL = "EXISTING_KEY_MATERIAL"


class IncludeKeyMaterial(StrEnum):
    ALL_KEY_MATERIAL = "ALL_KEY_MATERIAL"
    ROTATIONS_ONLY = "ROTATIONS_ONLY"


class WrappingAlgorithm(StrEnum):
    """AWS's AlgorithmSpec: how imported material is wrapped for transport."""

    RSAES_PKCS1_V1_5 = "RSAES_PKCS1_V1_5"
    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    RSA_AES_KEY_WRAP_SHA_1 = "RSA_AES_KEY_WRAP_SHA_1"
    RSA_AES_KEY_WRAP_SHA_256 = "RSA_AES_KEY_WRAP_SHA_256"
    SM2PKE = "SM2PKE"


class WrappingKeySpec(StrEnum):
    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    SM2 = "SM2"


@dataclass(slots=True)
class KeyMaterial:
    """One version of a key, as ListKeyRotations and the crypto operations see it.

    ``present`` says whether the wrapped material is held: imported material that was
    deleted or expired keeps its record (so the same material can be imported again and
    old ciphertexts come back) but not its bytes.
    """

    key_id: str
    material_id: bytes
    created_at: datetime
    public_key: bytes | None = None
    # How and when this version became the encrypting one; None for the first material.
    rotation_type: RotationType | None = None
    rotation_date: datetime | None = None
    # 1 for the first rotation of the key, 2 for the next...: the order rotations happened
    # in, even when the clock did not move between them.
    rotation_serial: int | None = None
    # Imported as NEW_KEY_MATERIAL and waiting for RotateKeyOnDemand.
    pending_rotation: bool = False
    imported: bool = False
    import_state: ImportState | None = None
    expiration_model: ExpirationModel | None = None
    valid_to: datetime | None = None
    description: str = ""
    present: bool = True

    def state(self, key: Key) -> KeyMaterialState:
        if self.pending_rotation:
            return KeyMaterialState.PENDING_ROTATION
        if self.material_id == key.current_material_id:
            return KeyMaterialState.CURRENT
        return KeyMaterialState.NON_CURRENT

    def check_invariants(self) -> None:
        if len(self.material_id) != 32:
            raise AssertionError(f"key {self.key_id}: bad key material id")
        if self.imported != (self.import_state is not None):
            raise AssertionError(f"key {self.key_id}: import state of non-imported material")
        # Generated material is held until its key is deleted; imported material is held
        # exactly while it is IMPORTED.
        held = self.import_state is ImportState.IMPORTED if self.imported else True
        if held != self.present:
            raise AssertionError(f"key {self.key_id}: import state and material disagree")
        if (self.rotation_type is None) != (self.rotation_serial is None):
            raise AssertionError(f"key {self.key_id}: rotation type and serial disagree")
        if (self.expiration_model is ExpirationModel.KEY_MATERIAL_EXPIRES) != (
            self.valid_to is not None
        ):
            raise AssertionError(f"key {self.key_id}: expiration model and ValidTo disagree")


@dataclass(slots=True)
class RotationSettings:
    key_id: str
    enabled: bool
    period_days: int
    # The next automatic rotation; None while automatic rotation is off.
    next_rotation: datetime | None
    on_demand_rotations: int = 0

    def check_invariants(self) -> None:
        if self.enabled != (self.next_rotation is not None):
            raise AssertionError(f"key {self.key_id}: rotation flag and date disagree")


class KeyMaterialRepository(Protocol):
    async def list_materials(self, key_id: str) -> list[KeyMaterial]:
        """Every version of the key, oldest first; versions stored without a record (older
        databases, other writers) appear as generated, non-rotated material."""
        ...

    async def get_material(self, key_id: str, material_id: bytes) -> KeyMaterial | None: ...

    async def get_rotation(self, key_id: str) -> RotationSettings | None: ...

    async def keys_due_for_rotation(self, now: datetime, *, limit: int) -> list[str]:
        """Enabled keys whose automatic rotation is due, earliest first."""
        ...

    async def materials_due_to_expire(
        self, now: datetime, *, limit: int
    ) -> list[tuple[str, bytes]]:
        """(key id, material id) of imported material whose ValidTo has passed."""
        ...


class KeyMaterialWriter(KeyMaterialRepository, Protocol):
    async def put_material(self, material: KeyMaterial) -> None:
        """Insert or replace the record of one version."""
        ...

    async def delete_material(self, key_id: str, material_id: bytes) -> None:
        """Forget a version entirely: its record and its wrapped bytes."""
        ...

    async def insert_version(self, version: KeyVersion) -> None:
        """Store a version's wrapped material (a rotation, an import)."""
        ...

    async def delete_version(self, key_id: str, material_id: bytes) -> None:
        """Drop a version's wrapped material but keep its record (imported material)."""
        ...

    async def put_rotation(self, settings: RotationSettings) -> None: ...


@dataclass(frozen=True, slots=True)
class KeyMaterialTransaction:
    """One durable transaction seen through the key port and the material port."""

    keys: KeyWriter
    materials: KeyMaterialWriter


class KeyMaterialStore(Protocol):
    @property
    def reader(self) -> KeyMaterialRepository: ...

    def write(self) -> AbstractAsyncContextManager[KeyMaterialTransaction]: ...


def current_material(materials: Sequence[KeyMaterial], key: Key) -> KeyMaterial | None:
    for material in materials:
        if material.material_id == key.current_material_id:
            return material
    return None
