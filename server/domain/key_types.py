"""Every key type beyond SYMMETRIC_DEFAULT, rotation and imported material.

``KeyTypes`` hangs off the ``KeyService`` (``service.key_types``) and composes one
module per concern, each built on the service's helpers through ``KeyContext``
(key_context.py: resolve a key reference, unwrap material through the cache, check
state, create keys and versions):

    signing.py           Sign, Verify, GetPublicKey
    mac_operations.py    GenerateMac, VerifyMac
    key_agreement.py     DeriveSharedSecret, Encapsulate, Decapsulate
    data_key_pairs.py    GenerateDataKeyPair(WithoutPlaintext)
    rsa_encryption.py    Encrypt/Decrypt with RSAES_OAEP_* (called from KeyService)
    rotation.py          Enable/DisableKeyRotation, GetKeyRotationStatus,
                         RotateKeyOnDemand, ListKeyRotations, the rotation scheduler
    key_import.py        GetParametersForImport, ImportKeyMaterial,
                         DeleteImportedKeyMaterial, expiry of imported material

The algorithms and usages each spec allows are in key_specs.py; the hazmat code lives
in one recipe per concern under crypto/.
"""

from __future__ import annotations

from collections.abc import Sequence

from meridian.server.domain.data_key_pairs import DataKeyPairs
from meridian.server.domain.key_agreement import KeyAgreement
from meridian.server.domain.key_context import (
    ImportExpiry,
    KeyContext,
    NewKey,
    ServiceCore,
)
from meridian.server.domain.key_import import KeyImport
from meridian.server.domain.key_material import KeyMaterialStore
from meridian.server.domain.mac_operations import MacOperations
from meridian.server.domain.model import Key, KeySpec, KeyUsage, Origin, Tag
from meridian.server.domain.rotation import KeyRotation
from meridian.server.domain.rsa_encryption import RsaEncryption
from meridian.server.domain.signing import Signing

__all__ = ["ImportExpiry", "KeyTypes"]


class KeyTypes:
    def __init__(self, service: ServiceCore, materials: KeyMaterialStore) -> None:
        self.context = KeyContext(service, materials)
        self.signing = Signing(self.context)
        self.mac = MacOperations(self.context)
        self.agreement = KeyAgreement(self.context)
        self.data_key_pairs = DataKeyPairs(self.context)
        self.rsa = RsaEncryption(self.context)
        self.rotation = KeyRotation(self.context)
        self.imports = KeyImport(self.context)

    async def create_key(
        self,
        *,
        description: str,
        policy: str,
        tags: Sequence[Tag],
        multi_region: bool,
        key_spec: KeySpec,
        key_usage: KeyUsage,
        origin: Origin,
    ) -> Key:
        """CreateKey for every spec and origin but AWS_KMS SYMMETRIC_DEFAULT."""
        return await self.context.create_key(
            NewKey(description, policy, tags, multi_region),
            key_spec=key_spec,
            key_usage=key_usage,
            origin=origin,
        )

    async def import_expiry(self, key: Key) -> ImportExpiry | None:
        """ExpirationModel and ValidTo for DescribeKey of an EXTERNAL key."""
        return await self.context.import_expiry(key)
