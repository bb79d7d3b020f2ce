"""AsyncKmsClient's methods for key types, rotation and imported material (a mixin).

The asyncio twin of ``_key_types_sync.py``: the same methods, as coroutines, with the
same signatures (a test holds them together).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime

from meridian.client import _core
from meridian.client._core import (
    AsyncInvoker,
    Pager,
)
from meridian.client.key_type_results import (
    DecapsulateResult,
    DeleteImportedKeyMaterialResult,
    DeriveSharedSecretResult,
    EncapsulateResult,
    GenerateDataKeyPairResult,
    GenerateDataKeyPairWithoutPlaintextResult,
    GenerateMacResult,
    GetKeyRotationStatusResult,
    GetParametersForImportResult,
    GetPublicKeyResult,
    ImportKeyMaterialResult,
    ListKeyRotationsResult,
    RotateKeyOnDemandResult,
    RotationsListEntry,
    SignResult,
    VerifyMacResult,
    VerifyResult,
)
from meridian.client.results import EmptyResult


class AsyncKeyTypeMethods:
    # ---- signing ---------------------------------------------------------------------

    async def sign(
        self: AsyncInvoker,
        *,
        key_id: str,
        message: bytes,
        signing_algorithm: str,
        message_type: str | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> SignResult:
        return await self._invoke(
            _core.SIGN,
            timeout_s,
            key_id=key_id,
            message=message,
            signing_algorithm=signing_algorithm,
            message_type=message_type,
            grant_tokens=grant_tokens,
        )

    async def verify(
        self: AsyncInvoker,
        *,
        key_id: str,
        message: bytes,
        signature: bytes,
        signing_algorithm: str,
        message_type: str | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> VerifyResult:
        """Raises KMSInvalidSignatureException when the signature is not valid."""
        return await self._invoke(
            _core.VERIFY,
            timeout_s,
            key_id=key_id,
            message=message,
            signature=signature,
            signing_algorithm=signing_algorithm,
            message_type=message_type,
            grant_tokens=grant_tokens,
        )

    async def get_public_key(
        self: AsyncInvoker,
        *,
        key_id: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GetPublicKeyResult:
        return await self._invoke(
            _core.GET_PUBLIC_KEY, timeout_s, key_id=key_id, grant_tokens=grant_tokens
        )

    # ---- MACs ----------------------------------------------------------------------------

    async def generate_mac(
        self: AsyncInvoker,
        *,
        key_id: str,
        message: bytes,
        mac_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateMacResult:
        return await self._invoke(
            _core.GENERATE_MAC,
            timeout_s,
            key_id=key_id,
            message=message,
            mac_algorithm=mac_algorithm,
            grant_tokens=grant_tokens,
        )

    async def verify_mac(
        self: AsyncInvoker,
        *,
        key_id: str,
        message: bytes,
        mac: bytes,
        mac_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> VerifyMacResult:
        """Raises KMSInvalidMacException when the MAC is not valid."""
        return await self._invoke(
            _core.VERIFY_MAC,
            timeout_s,
            key_id=key_id,
            message=message,
            mac=mac,
            mac_algorithm=mac_algorithm,
            grant_tokens=grant_tokens,
        )

    # ---- key agreement and encapsulation ---------------------------------------------

    async def derive_shared_secret(
        self: AsyncInvoker,
        *,
        key_id: str,
        key_agreement_algorithm: str,
        public_key: bytes,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> DeriveSharedSecretResult:
        return await self._invoke(
            _core.DERIVE_SHARED_SECRET,
            timeout_s,
            key_id=key_id,
            key_agreement_algorithm=key_agreement_algorithm,
            public_key=public_key,
            grant_tokens=grant_tokens,
        )

    async def encapsulate(
        self: AsyncInvoker,
        *,
        key_id: str,
        encapsulation_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> EncapsulateResult:
        return await self._invoke(
            _core.ENCAPSULATE,
            timeout_s,
            key_id=key_id,
            encapsulation_algorithm=encapsulation_algorithm,
            grant_tokens=grant_tokens,
        )

    async def decapsulate(
        self: AsyncInvoker,
        *,
        key_id: str,
        shared_secret_ciphertext_blob: bytes,
        encapsulation_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> DecapsulateResult:
        return await self._invoke(
            _core.DECAPSULATE,
            timeout_s,
            key_id=key_id,
            shared_secret_ciphertext_blob=shared_secret_ciphertext_blob,
            encapsulation_algorithm=encapsulation_algorithm,
            grant_tokens=grant_tokens,
        )

    # ---- data key pairs ------------------------------------------------------------------

    async def generate_data_key_pair(
        self: AsyncInvoker,
        *,
        key_id: str,
        key_pair_spec: str,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateDataKeyPairResult:
        return await self._invoke(
            _core.GENERATE_DATA_KEY_PAIR,
            timeout_s,
            key_id=key_id,
            key_pair_spec=key_pair_spec,
            encryption_context=encryption_context,
            grant_tokens=grant_tokens,
        )

    async def generate_data_key_pair_without_plaintext(
        self: AsyncInvoker,
        *,
        key_id: str,
        key_pair_spec: str,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateDataKeyPairWithoutPlaintextResult:
        return await self._invoke(
            _core.GENERATE_DATA_KEY_PAIR_WITHOUT_PLAINTEXT,
            timeout_s,
            key_id=key_id,
            key_pair_spec=key_pair_spec,
            encryption_context=encryption_context,
            grant_tokens=grant_tokens,
        )

    # ---- rotation ----------------------------------------------------------------------

    async def enable_key_rotation(
        self: AsyncInvoker,
        *,
        key_id: str,
        rotation_period_in_days: int | None = None,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        return await self._invoke(
            _core.ENABLE_KEY_ROTATION,
            timeout_s,
            key_id=key_id,
            rotation_period_in_days=rotation_period_in_days,
        )

    async def disable_key_rotation(
        self: AsyncInvoker, *, key_id: str, timeout_s: float | None = None
    ) -> EmptyResult:
        return await self._invoke(_core.DISABLE_KEY_ROTATION, timeout_s, key_id=key_id)

    async def get_key_rotation_status(
        self: AsyncInvoker, *, key_id: str, timeout_s: float | None = None
    ) -> GetKeyRotationStatusResult:
        return await self._invoke(_core.GET_KEY_ROTATION_STATUS, timeout_s, key_id=key_id)

    async def rotate_key_on_demand(
        self: AsyncInvoker, *, key_id: str, timeout_s: float | None = None
    ) -> RotateKeyOnDemandResult:
        return await self._invoke(_core.ROTATE_KEY_ON_DEMAND, timeout_s, key_id=key_id)

    async def list_key_rotations(
        self: AsyncInvoker,
        *,
        key_id: str,
        include_key_material: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
        timeout_s: float | None = None,
    ) -> ListKeyRotationsResult:
        return await self._invoke(
            _core.LIST_KEY_ROTATIONS,
            timeout_s,
            key_id=key_id,
            include_key_material=include_key_material,
            limit=limit,
            marker=marker,
        )

    async def iter_key_rotations(
        self: AsyncInvoker,
        *,
        key_id: str,
        include_key_material: str | None = None,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[RotationsListEntry]:
        """Every rotation (or key material) of ``key_id``, following next_marker."""
        pager = Pager()
        while True:
            page = await self._invoke(
                _core.LIST_KEY_ROTATIONS,
                timeout_s,
                key_id=key_id,
                include_key_material=include_key_material,
                limit=limit,
                marker=pager.marker,
            )
            for entry in page.rotations:
                yield entry
            if not pager.advance("ListKeyRotations", page.truncated, page.next_marker):
                return

    # ---- imported key material -------------------------------------------------------

    async def get_parameters_for_import(
        self: AsyncInvoker,
        *,
        key_id: str,
        wrapping_algorithm: str,
        wrapping_key_spec: str,
        timeout_s: float | None = None,
    ) -> GetParametersForImportResult:
        return await self._invoke(
            _core.GET_PARAMETERS_FOR_IMPORT,
            timeout_s,
            key_id=key_id,
            wrapping_algorithm=wrapping_algorithm,
            wrapping_key_spec=wrapping_key_spec,
        )

    async def import_key_material(
        self: AsyncInvoker,
        *,
        key_id: str,
        import_token: bytes,
        encrypted_key_material: bytes,
        valid_to: datetime | None = None,
        expiration_model: str | None = None,
        import_type: str | None = None,
        key_material_description: str | None = None,
        key_material_id: str | None = None,
        timeout_s: float | None = None,
    ) -> ImportKeyMaterialResult:
        return await self._invoke(
            _core.IMPORT_KEY_MATERIAL,
            timeout_s,
            key_id=key_id,
            import_token=import_token,
            encrypted_key_material=encrypted_key_material,
            valid_to=valid_to,
            expiration_model=expiration_model,
            import_type=import_type,
            key_material_description=key_material_description,
            key_material_id=key_material_id,
        )

    async def delete_imported_key_material(
        self: AsyncInvoker,
        *,
        key_id: str,
        key_material_id: str | None = None,
        timeout_s: float | None = None,
    ) -> DeleteImportedKeyMaterialResult:
        return await self._invoke(
            _core.DELETE_IMPORTED_KEY_MATERIAL,
            timeout_s,
            key_id=key_id,
            key_material_id=key_material_id,
        )
