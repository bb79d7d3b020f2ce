"""Typed results of the key-type operations: signing, MACs, key agreement, encapsulation,
data key pairs, rotation and imported key material.

Like ``results``: frozen dataclasses with the snake_case names of AWS's response members
plus ``region``; timestamps are UTC ``datetime`` values (None when unset); repeated
fields are tuples; members AWS may leave out are None rather than "". Secrets (shared
secrets, private keys) are kept out of ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from meridian.proto.kms.v1 import kms_pb2

__all__ = [
    "DecapsulateResult",
    "DeleteImportedKeyMaterialResult",
    "DeriveSharedSecretResult",
    "EncapsulateResult",
    "GenerateDataKeyPairResult",
    "GenerateDataKeyPairWithoutPlaintextResult",
    "GenerateMacResult",
    "GetKeyRotationStatusResult",
    "GetParametersForImportResult",
    "GetPublicKeyResult",
    "ImportKeyMaterialResult",
    "ListKeyRotationsResult",
    "RotateKeyOnDemandResult",
    "RotationsListEntry",
    "SignResult",
    "VerifyMacResult",
    "VerifyResult",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignResult:
    key_id: str
    signature: bytes
    signing_algorithm: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    key_id: str
    signature_valid: bool
    signing_algorithm: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetPublicKeyResult:
    key_id: str
    public_key: bytes
    customer_master_key_spec: str
    key_spec: str
    key_usage: str
    encryption_algorithms: tuple[str, ...]
    signing_algorithms: tuple[str, ...]
    key_agreement_algorithms: tuple[str, ...]
    encapsulation_algorithms: tuple[str, ...]
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateMacResult:
    mac: bytes
    mac_algorithm: str
    key_id: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyMacResult:
    key_id: str
    mac_valid: bool
    mac_algorithm: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeriveSharedSecretResult:
    key_id: str
    shared_secret: bytes = field(repr=False)
    key_agreement_algorithm: str
    key_origin: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EncapsulateResult:
    key_id: str
    shared_secret: bytes = field(repr=False)
    shared_secret_ciphertext_blob: bytes
    encapsulation_algorithm: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DecapsulateResult:
    key_id: str
    shared_secret: bytes = field(repr=False)
    encapsulation_algorithm: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateDataKeyPairResult:
    private_key_ciphertext_blob: bytes
    private_key_plaintext: bytes = field(repr=False)
    public_key: bytes
    key_id: str
    key_pair_spec: str
    key_material_id: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateDataKeyPairWithoutPlaintextResult:
    private_key_ciphertext_blob: bytes
    public_key: bytes
    key_id: str
    key_pair_spec: str
    key_material_id: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetKeyRotationStatusResult:
    key_rotation_enabled: bool
    key_id: str
    rotation_period_in_days: int | None
    next_rotation_date: datetime | None
    on_demand_rotation_start_date: datetime | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RotateKeyOnDemandResult:
    key_id: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationsListEntry:
    key_id: str
    key_material_id: str
    key_material_description: str | None
    import_state: str | None
    key_material_state: str | None
    expiration_model: str | None
    valid_to: datetime | None
    rotation_date: datetime | None
    rotation_type: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListKeyRotationsResult:
    rotations: tuple[RotationsListEntry, ...]
    next_marker: str | None
    truncated: bool
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetParametersForImportResult:
    key_id: str
    import_token: bytes
    public_key: bytes
    parameters_valid_to: datetime | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportKeyMaterialResult:
    key_id: str
    key_material_id: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteImportedKeyMaterialResult:
    key_id: str
    key_material_id: str | None
    region: str


# ---- reading responses ---------------------------------------------------------------


def _datetime(message: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return message.ToDatetime(tzinfo=UTC) if present else None


def _optional(text: str) -> str | None:
    return text or None


def sign_result(message: kms_pb2.SignResponse, region: str) -> SignResult:
    return SignResult(
        key_id=message.key_id,
        signature=message.signature,
        signing_algorithm=message.signing_algorithm,
        region=message.region or region,
    )


def verify_result(message: kms_pb2.VerifyResponse, region: str) -> VerifyResult:
    return VerifyResult(
        key_id=message.key_id,
        signature_valid=message.signature_valid,
        signing_algorithm=message.signing_algorithm,
        region=message.region or region,
    )


def get_public_key_result(message: kms_pb2.GetPublicKeyResponse, region: str) -> GetPublicKeyResult:
    return GetPublicKeyResult(
        key_id=message.key_id,
        public_key=message.public_key,
        customer_master_key_spec=message.customer_master_key_spec,
        key_spec=message.key_spec,
        key_usage=message.key_usage,
        encryption_algorithms=tuple(message.encryption_algorithms),
        signing_algorithms=tuple(message.signing_algorithms),
        key_agreement_algorithms=tuple(message.key_agreement_algorithms),
        encapsulation_algorithms=tuple(message.encapsulation_algorithms),
        region=message.region or region,
    )


def generate_mac_result(message: kms_pb2.GenerateMacResponse, region: str) -> GenerateMacResult:
    return GenerateMacResult(
        mac=message.mac,
        mac_algorithm=message.mac_algorithm,
        key_id=message.key_id,
        region=message.region or region,
    )


def verify_mac_result(message: kms_pb2.VerifyMacResponse, region: str) -> VerifyMacResult:
    return VerifyMacResult(
        key_id=message.key_id,
        mac_valid=message.mac_valid,
        mac_algorithm=message.mac_algorithm,
        region=message.region or region,
    )


def derive_shared_secret_result(
    message: kms_pb2.DeriveSharedSecretResponse, region: str
) -> DeriveSharedSecretResult:
    return DeriveSharedSecretResult(
        key_id=message.key_id,
        shared_secret=message.shared_secret,
        key_agreement_algorithm=message.key_agreement_algorithm,
        key_origin=message.key_origin,
        region=message.region or region,
    )


def encapsulate_result(message: kms_pb2.EncapsulateResponse, region: str) -> EncapsulateResult:
    return EncapsulateResult(
        key_id=message.key_id,
        shared_secret=message.shared_secret,
        shared_secret_ciphertext_blob=message.shared_secret_ciphertext_blob,
        encapsulation_algorithm=message.encapsulation_algorithm,
        region=message.region or region,
    )


def decapsulate_result(message: kms_pb2.DecapsulateResponse, region: str) -> DecapsulateResult:
    return DecapsulateResult(
        key_id=message.key_id,
        shared_secret=message.shared_secret,
        encapsulation_algorithm=message.encapsulation_algorithm,
        region=message.region or region,
    )


def generate_data_key_pair_result(
    message: kms_pb2.GenerateDataKeyPairResponse, region: str
) -> GenerateDataKeyPairResult:
    return GenerateDataKeyPairResult(
        private_key_ciphertext_blob=message.private_key_ciphertext_blob,
        private_key_plaintext=message.private_key_plaintext,
        public_key=message.public_key,
        key_id=message.key_id,
        key_pair_spec=message.key_pair_spec,
        key_material_id=_optional(message.key_material_id),
        region=message.region or region,
    )


def generate_data_key_pair_without_plaintext_result(
    message: kms_pb2.GenerateDataKeyPairWithoutPlaintextResponse, region: str
) -> GenerateDataKeyPairWithoutPlaintextResult:
    return GenerateDataKeyPairWithoutPlaintextResult(
        private_key_ciphertext_blob=message.private_key_ciphertext_blob,
        public_key=message.public_key,
        key_id=message.key_id,
        key_pair_spec=message.key_pair_spec,
        key_material_id=_optional(message.key_material_id),
        region=message.region or region,
    )


def get_key_rotation_status_result(
    message: kms_pb2.GetKeyRotationStatusResponse, region: str
) -> GetKeyRotationStatusResult:
    return GetKeyRotationStatusResult(
        key_rotation_enabled=message.key_rotation_enabled,
        key_id=message.key_id,
        rotation_period_in_days=(
            message.rotation_period_in_days if message.HasField("rotation_period_in_days") else None
        ),
        next_rotation_date=_datetime(
            message.next_rotation_date, message.HasField("next_rotation_date")
        ),
        on_demand_rotation_start_date=_datetime(
            message.on_demand_rotation_start_date,
            message.HasField("on_demand_rotation_start_date"),
        ),
        region=message.region or region,
    )


def rotate_key_on_demand_result(
    message: kms_pb2.RotateKeyOnDemandResponse, region: str
) -> RotateKeyOnDemandResult:
    return RotateKeyOnDemandResult(key_id=message.key_id, region=message.region or region)


def _rotation(entry: kms_pb2.RotationsListEntry) -> RotationsListEntry:
    return RotationsListEntry(
        key_id=entry.key_id,
        key_material_id=entry.key_material_id,
        key_material_description=_optional(entry.key_material_description),
        import_state=_optional(entry.import_state),
        key_material_state=_optional(entry.key_material_state),
        expiration_model=_optional(entry.expiration_model),
        valid_to=_datetime(entry.valid_to, entry.HasField("valid_to")),
        rotation_date=_datetime(entry.rotation_date, entry.HasField("rotation_date")),
        rotation_type=_optional(entry.rotation_type),
    )


def list_key_rotations_result(
    message: kms_pb2.ListKeyRotationsResponse, region: str
) -> ListKeyRotationsResult:
    return ListKeyRotationsResult(
        rotations=tuple(_rotation(entry) for entry in message.rotations),
        next_marker=_optional(message.next_marker),
        truncated=message.truncated,
        region=message.region or region,
    )


def get_parameters_for_import_result(
    message: kms_pb2.GetParametersForImportResponse, region: str
) -> GetParametersForImportResult:
    return GetParametersForImportResult(
        key_id=message.key_id,
        import_token=message.import_token,
        public_key=message.public_key,
        parameters_valid_to=_datetime(
            message.parameters_valid_to, message.HasField("parameters_valid_to")
        ),
        region=message.region or region,
    )


def import_key_material_result(
    message: kms_pb2.ImportKeyMaterialResponse, region: str
) -> ImportKeyMaterialResult:
    return ImportKeyMaterialResult(
        key_id=message.key_id,
        key_material_id=_optional(message.key_material_id),
        region=message.region or region,
    )


def delete_imported_key_material_result(
    message: kms_pb2.DeleteImportedKeyMaterialResponse, region: str
) -> DeleteImportedKeyMaterialResult:
    return DeleteImportedKeyMaterialResult(
        key_id=message.key_id,
        key_material_id=_optional(message.key_material_id),
        region=message.region or region,
    )
