"""The key-type rows of test_client_requests' tables: each SDK method, its arguments and
the request the server must receive (kept here so the shared table stays small)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from meridian.proto.kms.v1 import kms_pb2 as pb

VALID_TO = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


KEY_TYPE_CALLS: list[tuple[str, dict[str, Any], str, Any]] = [
    (
        "sign",
        {
            "key_id": "k1",
            "message": b"m",
            "message_type": "DIGEST",
            "signing_algorithm": "ECDSA_SHA_256",
            "grant_tokens": ["g"],
        },
        "Sign",
        pb.SignRequest(
            key_id="k1",
            message=b"m",
            message_type="DIGEST",
            signing_algorithm="ECDSA_SHA_256",
            grant_tokens=["g"],
        ),
    ),
    (
        "verify",
        {"key_id": "k1", "message": b"m", "signature": b"s", "signing_algorithm": "A"},
        "Verify",
        pb.VerifyRequest(key_id="k1", message=b"m", signature=b"s", signing_algorithm="A"),
    ),
    (
        "get_public_key",
        {"key_id": "k1", "grant_tokens": ["g"]},
        "GetPublicKey",
        pb.GetPublicKeyRequest(key_id="k1", grant_tokens=["g"]),
    ),
    (
        "generate_mac",
        {"key_id": "k1", "message": b"m", "mac_algorithm": "HMAC_SHA_256"},
        "GenerateMac",
        pb.GenerateMacRequest(key_id="k1", message=b"m", mac_algorithm="HMAC_SHA_256"),
    ),
    (
        "verify_mac",
        {"key_id": "k1", "message": b"m", "mac": b"t", "mac_algorithm": "HMAC_SHA_256"},
        "VerifyMac",
        pb.VerifyMacRequest(key_id="k1", message=b"m", mac=b"t", mac_algorithm="HMAC_SHA_256"),
    ),
    (
        "derive_shared_secret",
        {"key_id": "k1", "key_agreement_algorithm": "ECDH", "public_key": b"p"},
        "DeriveSharedSecret",
        pb.DeriveSharedSecretRequest(key_id="k1", key_agreement_algorithm="ECDH", public_key=b"p"),
    ),
    (
        "encapsulate",
        {"key_id": "k1", "encapsulation_algorithm": "ML_KEM"},
        "Encapsulate",
        pb.EncapsulateRequest(key_id="k1", encapsulation_algorithm="ML_KEM"),
    ),
    (
        "decapsulate",
        {
            "key_id": "k1",
            "shared_secret_ciphertext_blob": b"c",
            "encapsulation_algorithm": "ML_KEM",
        },
        "Decapsulate",
        pb.DecapsulateRequest(
            key_id="k1", shared_secret_ciphertext_blob=b"c", encapsulation_algorithm="ML_KEM"
        ),
    ),
    (
        "generate_data_key_pair",
        {"key_id": "k1", "key_pair_spec": "ECC_NIST_P256", "encryption_context": {"a": "b"}},
        "GenerateDataKeyPair",
        pb.GenerateDataKeyPairRequest(
            key_id="k1", key_pair_spec="ECC_NIST_P256", encryption_context={"a": "b"}
        ),
    ),
    (
        "generate_data_key_pair_without_plaintext",
        {"key_id": "k1", "key_pair_spec": "RSA_2048"},
        "GenerateDataKeyPairWithoutPlaintext",
        pb.GenerateDataKeyPairWithoutPlaintextRequest(key_id="k1", key_pair_spec="RSA_2048"),
    ),
    (
        "enable_key_rotation",
        {"key_id": "k1", "rotation_period_in_days": 180},
        "EnableKeyRotation",
        pb.EnableKeyRotationRequest(key_id="k1", rotation_period_in_days=180),
    ),
    (
        "disable_key_rotation",
        {"key_id": "k1"},
        "DisableKeyRotation",
        pb.DisableKeyRotationRequest(key_id="k1"),
    ),
    (
        "get_key_rotation_status",
        {"key_id": "k1"},
        "GetKeyRotationStatus",
        pb.GetKeyRotationStatusRequest(key_id="k1"),
    ),
    (
        "rotate_key_on_demand",
        {"key_id": "k1"},
        "RotateKeyOnDemand",
        pb.RotateKeyOnDemandRequest(key_id="k1"),
    ),
    (
        "list_key_rotations",
        {"key_id": "k1", "include_key_material": "ALL_KEY_MATERIAL", "limit": 5, "marker": "m"},
        "ListKeyRotations",
        pb.ListKeyRotationsRequest(
            key_id="k1", include_key_material="ALL_KEY_MATERIAL", limit=5, marker="m"
        ),
    ),
    (
        "get_parameters_for_import",
        {
            "key_id": "k1",
            "wrapping_algorithm": "RSA_AES_KEY_WRAP_SHA_256",
            "wrapping_key_spec": "RSA_4096",
        },
        "GetParametersForImport",
        pb.GetParametersForImportRequest(
            key_id="k1", wrapping_algorithm="RSA_AES_KEY_WRAP_SHA_256", wrapping_key_spec="RSA_4096"
        ),
    ),
    (
        "import_key_material",
        {
            "key_id": "k1",
            "import_token": b"t",
            "encrypted_key_material": b"e",
            "valid_to": VALID_TO,
            "expiration_model": "KEY_MATERIAL_EXPIRES",
            "import_type": "EXISTING_KEY_MATERIAL",
            "key_material_description": "d",
            "key_material_id": "ab" * 32,
        },
        "ImportKeyMaterial",
        pb.ImportKeyMaterialRequest(
            key_id="k1",
            import_token=b"t",
            encrypted_key_material=b"e",
            valid_to=_timestamp(VALID_TO),
            expiration_model="KEY_MATERIAL_EXPIRES",
            import_type="EXISTING_KEY_MATERIAL",
            key_material_description="d",
            key_material_id="ab" * 32,
        ),
    ),
    (
        "delete_imported_key_material",
        {"key_id": "k1", "key_material_id": "cd" * 32},
        "DeleteImportedKeyMaterial",
        pb.DeleteImportedKeyMaterialRequest(key_id="k1", key_material_id="cd" * 32),
    ),
]

KEY_TYPE_PRESENCE: list[tuple[str, dict[str, Any], str, str, Any]] = [
    ("enable_key_rotation", {"key_id": "k"}, "EnableKeyRotation", "rotation_period_in_days", None),
    ("list_key_rotations", {"key_id": "k"}, "ListKeyRotations", "limit", None),
    (
        "import_key_material",
        {"key_id": "k", "import_token": b"t", "encrypted_key_material": b"e"},
        "ImportKeyMaterial",
        "valid_to",
        None,
    ),
]
