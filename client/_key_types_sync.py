"""KmsClient's methods for key types, rotation and imported material (a mixin).

Written out like the twin's own methods (so IDEs and ``mypy --strict`` see the real
signatures) and kept in their own module; ``_key_types_async.py`` is the asyncio twin
and a test holds the two to the same signatures. Each method only names its operation
and hands its keyword arguments to the client's ``_invoke``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

from meridian.client import _core
from meridian.client._core import (
    Invoker,
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


class KeyTypeMethods:
    # ---- signing ---------------------------------------------------------------------

    def sign(
        self: Invoker,
        *,
        key_id: str,
        message: bytes,
        signing_algorithm: str,
        message_type: str | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> SignResult:
        return self._invoke(
            _core.SIGN,
            timeout_s,
            key_id=key_id,
            message=message,
            signing_algorithm=signing_algorithm,
            message_type=message_type,
            grant_tokens=grant_tokens,
        )

    def verify(
        self: Invoker,
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
        return self._invoke(
            _core.VERIFY,
            timeout_s,
            key_id=key_id,
            message=message,
            signature=signature,
            signing_algorithm=signing_algorithm,
            message_type=message_type,
            grant_tokens=grant_tokens,
        )

    def get_public_key(
        self: Invoker,
        *,
        key_id: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GetPublicKeyResult:
        return self._invoke(
            _core.GET_PUBLIC_KEY, timeout_s, key_id=key_id, grant_tokens=grant_tokens
        )

    # ---- MACs ----------------------------------------------------------------------------

    def generate_mac(
        self: Invoker,
        *,
        key_id: str,
        message: bytes,
        mac_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateMacResult:
        return self._invoke(
            _core.GENERATE_MAC,
            timeout_s,
            key_id=key_id,
            message=message,
            mac_algorithm=mac_algorithm,
            grant_tokens=grant_tokens,
        )

    def verify_mac(
        self: Invoker,
        *,
        key_id: str,
        message: bytes,
        mac: bytes,
        mac_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> VerifyMacResult:
        """Raises KMSInvalidMacException when the MAC is not valid."""
        return self._invoke(
            _core.VERIFY_MAC,
            timeout_s,
            key_id=key_id,
            message=message,
            mac=mac,
            mac_algorithm=mac_algorithm,
            grant_tokens=grant_tokens,
        )

    # ---- key agreement and encapsulation ---------------------------------------------

    def derive_shared_secret(
        self: Invoker,
        *,
        key_id: str,
        key_agreement_algorithm: str,
        public_key: bytes,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> DeriveSharedSecretResult:
        return self._invoke(
            _core.DERIVE_SHARED_SECRET,
            timeout_s,
            key_id=key_id,
            key_agreement_algorithm=key_agreement_algorithm,
            public_key=public_key,
            grant_tokens=grant_tokens,
        )

    def encapsulate(
        self: Invoker,
        *,
        key_id: str,
        encapsulation_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> EncapsulateResult:
        return self._invoke(
            _core.ENCAPSULATE,
            timeout_s,
            key_id=key_id,
            encapsulation_algorithm=encapsulation_algorithm,
            grant_tokens=grant_tokens,
        )

    def decapsulate(
        self: Invoker,
        *,
        key_id: str,
        shared_secret_ciphertext_blob: bytes,
        encapsulation_algorithm: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> DecapsulateResult:
        return self._invoke(
            _core.DECAPSULATE,
            timeout_s,
            key_id=key_id,
            shared_secret_ciphertext_blob=shared_secret_ciphertext_blob,
            encapsulation_algorithm=encapsulation_algorithm,
            grant_tokens=grant_tokens,
        )

    # ---- data key pairs ------------------------------------------------------------------

    def generate_data_key_pair(
        self: Invoker,
        *,
        key_id: str,
        key_pair_spec: str,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateDataKeyPairResult:
        return self._invoke(
            _core.GENERATE_DATA_KEY_PAIR,
            timeout_s,
            key_id=key_id,
            key_pair_spec=key_pair_spec,
            encryption_context=encryption_context,
            grant_tokens=grant_tokens,
        )

    def generate_data_key_pair_without_plaintext(
        self: Invoker,
        *,
        key_id: str,
        key_pair_spec: str,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateDataKeyPairWithoutPlaintextResult:
        return self._invoke(
            _core.GENERATE_DATA_KEY_PAIR_WITHOUT_PLAINTEXT,
            timeout_s,
            key_id=key_id,
            key_pair_spec=key_pair_spec,
            encryption_context=encryption_context,
            grant_tokens=grant_tokens,
        )

    # ---- rotation ----------------------------------------------------------------------

    def enable_key_rotation(
        self: Invoker,
        *,
        key_id: str,
        rotation_period_in_days: int | None = None,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        return self._invoke(
            _core.ENABLE_KEY_ROTATION,
            timeout_s,
            key_id=key_id,
            rotation_period_in_days=rotation_period_in_days,
        )

    def disable_key_rotation(
        self: Invoker, *, key_id: str, timeout_s: float | None = None
    ) -> EmptyResult:
        return self._invoke(_core.DISABLE_KEY_ROTATION, timeout_s, key_id=key_id)

    def get_key_rotation_status(
        self: Invoker, *, key_id: str, timeout_s: float | None = None
    ) -> GetKeyRotationStatusResult:
        return self._invoke(_core.GET_KEY_ROTATION_STATUS, timeout_s, key_id=key_id)

    def rotate_key_on_demand(
        self: Invoker, *, key_id: str, timeout_s: float | None = None
    ) -> RotateKeyOnDemandResult:
        return self._invoke(_core.ROTATE_KEY_ON_DEMAND, timeout_s, key_id=key_id)

    def list_key_rotations(
        self: Invoker,
        *,
        key_id: str,
        include_key_material: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
        timeout_s: float | None = None,
    ) -> ListKeyRotationsResult:
        return self._invoke(
            _core.LIST_KEY_ROTATIONS,
            timeout_s,
            key_id=key_id,
            include_key_material=include_key_material,
            limit=limit,
            marker=marker,
        )

    def iter_key_rotations(
        self: Invoker,
        *,
        key_id: str,
        include_key_material: str | None = None,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[RotationsListEntry]:
        """Every rotation (or key material) of ``key_id``, following next_marker."""
        pager = Pager()
        while True:
            page = self._invoke(
                _core.LIST_KEY_ROTATIONS,
                timeout_s,
                key_id=key_id,
                include_key_material=include_key_material,
                limit=limit,
                marker=pager.marker,
            )
            yield from page.rotations
            if not pager.advance("ListKeyRotations", page.truncated, page.next_marker):
                return

    # ---- imported key material -------------------------------------------------------

    def get_parameters_for_import(
        self: Invoker,
        *,
        key_id: str,
        wrapping_algorithm: str,
        wrapping_key_spec: str,
        timeout_s: float | None = None,
    ) -> GetParametersForImportResult:
        return self._invoke(
            _core.GET_PARAMETERS_FOR_IMPORT,
            timeout_s,
            key_id=key_id,
            wrapping_algorithm=wrapping_algorithm,
            wrapping_key_spec=wrapping_key_spec,
        )

    def import_key_material(
        self: Invoker,
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
        return self._invoke(
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

    def delete_imported_key_material(
        self: Invoker,
        *,
        key_id: str,
        key_material_id: str | None = None,
        timeout_s: float | None = None,
    ) -> DeleteImportedKeyMaterialResult:
        return self._invoke(
            _core.DELETE_IMPORTED_KEY_MATERIAL,
            timeout_s,
            key_id=key_id,
            key_material_id=key_material_id,
        )
