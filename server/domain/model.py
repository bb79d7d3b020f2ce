"""Keys, key versions, aliases and tags: the nouns of the domain and their rules.

Enums are ``StrEnum`` whose values are AWS's strings, so they cross the wire as
an AWS user knows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class KeyState(StrEnum):
    CREATING = "Creating"
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
    PENDING_IMPORT = "PendingImport"
    UNAVAILABLE = "Unavailable"
    UPDATING = "Updating"


class KeySpec(StrEnum):
    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1"
    ECC_NIST_EDWARDS25519 = "ECC_NIST_EDWARDS25519"
    HMAC_224 = "HMAC_224"
    HMAC_256 = "HMAC_256"
    HMAC_384 = "HMAC_384"
    HMAC_512 = "HMAC_512"
    ML_DSA_44 = "ML_DSA_44"
    ML_DSA_65 = "ML_DSA_65"
    ML_DSA_87 = "ML_DSA_87"
    ML_KEM_512 = "ML_KEM_512"
    ML_KEM_768 = "ML_KEM_768"
    ML_KEM_1024 = "ML_KEM_1024"
    SM2 = "SM2"


class KeyUsage(StrEnum):
    ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
    SIGN_VERIFY = "SIGN_VERIFY"
    GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
    KEY_AGREEMENT = "KEY_AGREEMENT"
    ENCAPSULATE_DECAPSULATE = "ENCAPSULATE_DECAPSULATE"


class Origin(StrEnum):
    AWS_KMS = "AWS_KMS"
    EXTERNAL = "EXTERNAL"
    AWS_CLOUDHSM = "AWS_CLOUDHSM"
    EXTERNAL_KEY_STORE = "EXTERNAL_KEY_STORE"


class EncryptionAlgorithm(StrEnum):
    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    SM2PKE = "SM2PKE"


class DataKeySpec(StrEnum):
    AES_256 = "AES_256"
    AES_128 = "AES_128"


# States in which a key may be used for cryptographic operations (AWS's key-state table):
# Updating keys keep working during a primary move.
CRYPTO_USABLE_STATES = frozenset({KeyState.ENABLED, KeyState.UPDATING})


@dataclass(frozen=True, slots=True)
class MultiRegionKey:
    """One related multi-Region key: its ARN and region (AWS's MultiRegionKey)."""

    arn: str
    region: str


@dataclass(frozen=True, slots=True)
class MultiRegionConfiguration:
    """AWS's MultiRegionConfiguration as one region sees it."""

    multi_region_key_type: str  # PRIMARY | REPLICA
    primary_key: MultiRegionKey
    replica_keys: tuple[MultiRegionKey, ...]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the authenticated principal and where the call came from."""

    principal_arn: str
    source_address: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of a key's material. ``material_id`` is 32 random bytes; its hex is
    AWS's KeyMaterialId. ``wrapped_material`` is the material under the region root key."""

    key_id: str
    material_id: bytes
    created_at: datetime
    wrapped_material: bytes

    @property
    def material_id_hex(self) -> str:
        return self.material_id.hex()


@dataclass(slots=True)
class Key:
    key_id: str
    arn: str
    account_id: str
    region: str
    created_at: datetime
    description: str
    key_spec: KeySpec
    key_usage: KeyUsage
    origin: Origin
    state: KeyState
    policy: str
    current_material_id: bytes
    multi_region: bool = False
    deletion_date: datetime | None = None
    pending_window_days: int | None = None
    # Bumped on every write so that concurrent updates can be detected.
    revision: int = 0
    # Filled for multi-Region keys when the key is described (not stored in the keys row;
    # the replication state is its source, see server/domain/multi_region.py).
    multi_region_configuration: MultiRegionConfiguration | None = None

    @property
    def enabled(self) -> bool:
        return self.state is KeyState.ENABLED

    def check_invariants(self) -> None:
        """Raise AssertionError when the key is in an impossible shape.

        Called after every read and before every write, as vault's keysutil does, so a
        corrupted row is caught before it is used rather than after.
        """
        if (self.state is KeyState.PENDING_DELETION) != (self.deletion_date is not None):
            raise AssertionError(f"key {self.key_id}: deletion date and state disagree")
        # Empty only for an EXTERNAL key whose first material is not imported yet.
        if len(self.current_material_id) != 32 and not (
            self.origin is Origin.EXTERNAL and not self.current_material_id
        ):
            raise AssertionError(f"key {self.key_id}: bad current material id")


def encryption_algorithms_for(spec: KeySpec) -> tuple[str, ...]:
    """The EncryptionAlgorithms a key of this spec supports, as DescribeKey lists them."""
    if spec is KeySpec.SYMMETRIC_DEFAULT:
        return (EncryptionAlgorithm.SYMMETRIC_DEFAULT.value,)
    return ()


@dataclass(frozen=True, slots=True)
class Alias:
    alias_name: str
    target_key_id: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Tag:
    tag_key: str
    tag_value: str
