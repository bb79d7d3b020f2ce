"""The RPCs of asymmetric, HMAC and post-quantum keys, rotation and imported material.

A mixin of ``KeyManagementServicer``: proto <-> ``service.key_types`` translation and
nothing else, like the rest of the servicer. Every rule and error is the domain's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.interceptor import CURRENT_CALLER, Context
from meridian.server.domain.errors import ValidationException
from meridian.server.domain.rotation import RotationEntry

if TYPE_CHECKING:
    from meridian.server.domain.key_types import KeyTypes
    from meridian.server.domain.service import KeyService


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _optional_int(message: Any, field: str) -> int | None:
    return int(getattr(message, field)) if message.HasField(field) else None


def _optional_datetime(message: Any, field: str) -> datetime | None:
    """A Timestamp field as a UTC datetime; one outside datetime's range is bad input."""
    if not message.HasField(field):
        return None
    try:
        moment: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise ValidationException(f"{field} is not a valid timestamp") from None
    return moment


def _rotation_entry(entry: RotationEntry) -> pb.RotationsListEntry:
    message = pb.RotationsListEntry(
        key_id=entry.key_id,
        key_material_id=entry.key_material_id,
        key_material_description=entry.key_material_description or "",
        import_state="" if entry.import_state is None else entry.import_state.value,
        key_material_state=entry.key_material_state.value,
        expiration_model=entry.expiration_model or "",
        rotation_type="" if entry.rotation_type is None else entry.rotation_type.value,
    )
    if entry.valid_to is not None:
        message.valid_to.CopyFrom(_timestamp(entry.valid_to))
    if entry.rotation_date is not None:
        message.rotation_date.CopyFrom(_timestamp(entry.rotation_date))
    return message


class KeyTypesServicer:
    """Mixed into KeyManagementServicer, which sets ``_service`` and ``_region``."""

    _service: KeyService
    _region: str

    @property
    def _types(self) -> KeyTypes:
        return self._service.key_types

    # ---- signing -----------------------------------------------------------------------

    async def Sign(self, request: pb.SignRequest, context: Context) -> pb.SignResponse:
        result = await self._types.signing.sign(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            message=request.message,
            message_type=request.message_type,
            signing_algorithm=request.signing_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.SignResponse(
            key_id=result.key_arn,
            signature=result.signature,
            signing_algorithm=result.signing_algorithm.value,
            region=self._region,
        )

    async def Verify(self, request: pb.VerifyRequest, context: Context) -> pb.VerifyResponse:
        result = await self._types.signing.verify(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            message=request.message,
            message_type=request.message_type,
            signature=request.signature,
            signing_algorithm=request.signing_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.VerifyResponse(
            key_id=result.key_arn,
            signature_valid=True,
            signing_algorithm=result.signing_algorithm.value,
            region=self._region,
        )

    async def GetPublicKey(
        self, request: pb.GetPublicKeyRequest, context: Context
    ) -> pb.GetPublicKeyResponse:
        result = await self._types.signing.get_public_key(
            CURRENT_CALLER.get(), key_id=request.key_id, grant_tokens=list(request.grant_tokens)
        )
        key, algorithms = result.key, result.algorithms
        return pb.GetPublicKeyResponse(
            key_id=key.arn,
            public_key=result.public_key,
            customer_master_key_spec=key.key_spec.value,
            key_spec=key.key_spec.value,
            key_usage=key.key_usage.value,
            encryption_algorithms=algorithms.encryption,
            signing_algorithms=algorithms.signing,
            key_agreement_algorithms=algorithms.key_agreement,
            encapsulation_algorithms=algorithms.encapsulation,
            region=self._region,
        )

    # ---- MACs ----------------------------------------------------------------------------

    async def GenerateMac(
        self, request: pb.GenerateMacRequest, context: Context
    ) -> pb.GenerateMacResponse:
        result = await self._types.mac.generate_mac(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            message=request.message,
            mac_algorithm=request.mac_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.GenerateMacResponse(
            mac=result.mac,
            mac_algorithm=result.mac_algorithm.value,
            key_id=result.key_arn,
            region=self._region,
        )

    async def VerifyMac(
        self, request: pb.VerifyMacRequest, context: Context
    ) -> pb.VerifyMacResponse:
        result = await self._types.mac.verify_mac(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            message=request.message,
            mac_algorithm=request.mac_algorithm,
            mac_value=request.mac,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.VerifyMacResponse(
            key_id=result.key_arn,
            mac_valid=True,
            mac_algorithm=result.mac_algorithm.value,
            region=self._region,
        )

    # ---- key agreement and encapsulation ----------------------------------------------

    async def DeriveSharedSecret(
        self, request: pb.DeriveSharedSecretRequest, context: Context
    ) -> pb.DeriveSharedSecretResponse:
        result = await self._types.agreement.derive_shared_secret(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            key_agreement_algorithm=request.key_agreement_algorithm,
            public_key=request.public_key,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.DeriveSharedSecretResponse(
            key_id=result.key_arn,
            shared_secret=result.shared_secret,
            key_agreement_algorithm=result.key_agreement_algorithm.value,
            key_origin=result.key_origin.value,
            region=self._region,
        )

    async def Encapsulate(
        self, request: pb.EncapsulateRequest, context: Context
    ) -> pb.EncapsulateResponse:
        result = await self._types.agreement.encapsulate(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            encapsulation_algorithm=request.encapsulation_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.EncapsulateResponse(
            key_id=result.key_arn,
            shared_secret=result.shared_secret,
            shared_secret_ciphertext_blob=result.ciphertext,
            encapsulation_algorithm=result.encapsulation_algorithm.value,
            region=self._region,
        )

    async def Decapsulate(
        self, request: pb.DecapsulateRequest, context: Context
    ) -> pb.DecapsulateResponse:
        result = await self._types.agreement.decapsulate(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            shared_secret_ciphertext_blob=request.shared_secret_ciphertext_blob,
            encapsulation_algorithm=request.encapsulation_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.DecapsulateResponse(
            key_id=result.key_arn,
            shared_secret=result.shared_secret,
            encapsulation_algorithm=result.encapsulation_algorithm.value,
            region=self._region,
        )

    # ---- data key pairs ------------------------------------------------------------------

    async def GenerateDataKeyPair(
        self, request: pb.GenerateDataKeyPairRequest, context: Context
    ) -> pb.GenerateDataKeyPairResponse:
        result = await self._types.data_key_pairs.generate(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            encryption_context=dict(request.encryption_context),
            key_pair_spec=request.key_pair_spec,
            grant_tokens=list(request.grant_tokens),
            with_plaintext=True,
        )
        return pb.GenerateDataKeyPairResponse(
            private_key_ciphertext_blob=result.private_key_ciphertext_blob,
            private_key_plaintext=result.private_key_plaintext,
            public_key=result.public_key,
            key_id=result.key_arn,
            key_pair_spec=result.key_pair_spec.value,
            key_material_id=result.key_material_id,
            region=self._region,
        )

    async def GenerateDataKeyPairWithoutPlaintext(
        self, request: pb.GenerateDataKeyPairWithoutPlaintextRequest, context: Context
    ) -> pb.GenerateDataKeyPairWithoutPlaintextResponse:
        result = await self._types.data_key_pairs.generate(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            encryption_context=dict(request.encryption_context),
            key_pair_spec=request.key_pair_spec,
            grant_tokens=list(request.grant_tokens),
            with_plaintext=False,
        )
        return pb.GenerateDataKeyPairWithoutPlaintextResponse(
            private_key_ciphertext_blob=result.private_key_ciphertext_blob,
            public_key=result.public_key,
            key_id=result.key_arn,
            key_pair_spec=result.key_pair_spec.value,
            key_material_id=result.key_material_id,
            region=self._region,
        )

    # ---- rotation ----------------------------------------------------------------------

    async def EnableKeyRotation(
        self, request: pb.EnableKeyRotationRequest, context: Context
    ) -> pb.EnableKeyRotationResponse:
        await self._types.rotation.enable_key_rotation(
            CURRENT_CALLER.get(),
            request.key_id,
            _optional_int(request, "rotation_period_in_days"),
        )
        return pb.EnableKeyRotationResponse(region=self._region)

    async def DisableKeyRotation(
        self, request: pb.DisableKeyRotationRequest, context: Context
    ) -> pb.DisableKeyRotationResponse:
        await self._types.rotation.disable_key_rotation(CURRENT_CALLER.get(), request.key_id)
        return pb.DisableKeyRotationResponse(region=self._region)

    async def GetKeyRotationStatus(
        self, request: pb.GetKeyRotationStatusRequest, context: Context
    ) -> pb.GetKeyRotationStatusResponse:
        status = await self._types.rotation.get_key_rotation_status(
            CURRENT_CALLER.get(), request.key_id
        )
        response = pb.GetKeyRotationStatusResponse(
            key_rotation_enabled=status.enabled, key_id=status.key_id, region=self._region
        )
        if status.period_days is not None:
            response.rotation_period_in_days = status.period_days
        if status.next_rotation is not None:
            response.next_rotation_date.CopyFrom(_timestamp(status.next_rotation))
        if status.on_demand_rotation_start is not None:
            response.on_demand_rotation_start_date.CopyFrom(
                _timestamp(status.on_demand_rotation_start)
            )
        return response

    async def RotateKeyOnDemand(
        self, request: pb.RotateKeyOnDemandRequest, context: Context
    ) -> pb.RotateKeyOnDemandResponse:
        key = await self._types.rotation.rotate_key_on_demand(CURRENT_CALLER.get(), request.key_id)
        return pb.RotateKeyOnDemandResponse(key_id=key.key_id, region=self._region)

    async def ListKeyRotations(
        self, request: pb.ListKeyRotationsRequest, context: Context
    ) -> pb.ListKeyRotationsResponse:
        page = await self._types.rotation.list_key_rotations(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            include_key_material=request.include_key_material,
            limit=_optional_int(request, "limit"),
            marker=request.marker,
        )
        return pb.ListKeyRotationsResponse(
            rotations=[_rotation_entry(entry) for entry in page.items],
            next_marker=page.next_marker,
            truncated=page.truncated,
            region=self._region,
        )

    # ---- imported key material -------------------------------------------------------

    async def GetParametersForImport(
        self, request: pb.GetParametersForImportRequest, context: Context
    ) -> pb.GetParametersForImportResponse:
        parameters = await self._types.imports.get_parameters_for_import(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            wrapping_algorithm=request.wrapping_algorithm,
            wrapping_key_spec=request.wrapping_key_spec,
        )
        return pb.GetParametersForImportResponse(
            key_id=parameters.key_arn,
            import_token=parameters.import_token,
            public_key=parameters.public_key,
            parameters_valid_to=_timestamp(parameters.parameters_valid_to),
            region=self._region,
        )

    async def ImportKeyMaterial(
        self, request: pb.ImportKeyMaterialRequest, context: Context
    ) -> pb.ImportKeyMaterialResponse:
        result = await self._types.imports.import_key_material(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            import_token=request.import_token,
            encrypted_key_material=request.encrypted_key_material,
            valid_to=_optional_datetime(request, "valid_to"),
            expiration_model=request.expiration_model,
            import_type=request.import_type,
            key_material_description=request.key_material_description,
            key_material_id=request.key_material_id,
        )
        return pb.ImportKeyMaterialResponse(
            key_id=result.key_arn, key_material_id=result.key_material_id, region=self._region
        )

    async def DeleteImportedKeyMaterial(
        self, request: pb.DeleteImportedKeyMaterialRequest, context: Context
    ) -> pb.DeleteImportedKeyMaterialResponse:
        result = await self._types.imports.delete_imported_key_material(
            CURRENT_CALLER.get(), key_id=request.key_id, key_material_id=request.key_material_id
        )
        return pb.DeleteImportedKeyMaterialResponse(
            key_id=result.key_arn, key_material_id=result.key_material_id, region=self._region
        )
