"""The batch rows of test_client_requests' table: SDK method, arguments, request."""

from __future__ import annotations

from typing import Any

from meridian.proto.kms.v1 import kms_pb2 as pb

BATCH_CALLS: list[tuple[str, dict[str, Any], str, Any]] = [
    (
        "batch_encrypt",
        {
            "items": [
                {"key_id": "k1", "plaintext": b"a", "encryption_context": {"c": "d"}},
                {"key_id": "alias/x", "plaintext": b"b", "grant_tokens": ["g"]},
            ]
        },
        "BatchEncrypt",
        pb.BatchEncryptRequest(
            items=[
                pb.EncryptRequest(key_id="k1", plaintext=b"a", encryption_context={"c": "d"}),
                pb.EncryptRequest(key_id="alias/x", plaintext=b"b", grant_tokens=["g"]),
            ]
        ),
    ),
    (
        "batch_decrypt",
        {"items": [{"ciphertext_blob": b"blob"}, {"ciphertext_blob": b"b2", "key_id": "k1"}]},
        "BatchDecrypt",
        pb.BatchDecryptRequest(
            items=[
                pb.DecryptRequest(ciphertext_blob=b"blob"),
                pb.DecryptRequest(ciphertext_blob=b"b2", key_id="k1"),
            ]
        ),
    ),
    (
        "batch_generate_data_key",
        {
            "items": [
                {"key_id": "k1", "key_spec": "AES_256"},
                {"key_id": "k1", "number_of_bytes": 0},
            ]
        },
        "BatchGenerateDataKey",
        pb.BatchGenerateDataKeyRequest(
            items=[
                pb.GenerateDataKeyRequest(key_id="k1", key_spec="AES_256"),
                pb.GenerateDataKeyRequest(key_id="k1", number_of_bytes=0),
            ]
        ),
    ),
]
