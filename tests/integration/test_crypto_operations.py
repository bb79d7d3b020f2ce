"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, GenerateRandom through the gRPC stack."""

from __future__ import annotations

import grpc
import pytest

from conftest import expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def key(running_node) -> pb.KeyMetadata:
    return (await running_node.stub.CreateKey(pb.CreateKeyRequest())).key_metadata


async def test_round_trip_with_context_in_any_order(running_node, key) -> None:
    stub = running_node.stub
    context = {"tenant": "acme", "purpose": "orders", "ünïcode": "välüe"}
    encrypted = await stub.Encrypt(
        pb.EncryptRequest(key_id=key.key_id, plaintext=b"p" * 4096, encryption_context=context)
    )
    assert encrypted.key_id == key.arn
    assert encrypted.encryption_algorithm == "SYMMETRIC_DEFAULT"
    assert len(encrypted.ciphertext_blob) <= 6144
    reordered = dict(reversed(list(context.items())))
    decrypted = await stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=encrypted.ciphertext_blob, encryption_context=reordered)
    )
    assert decrypted.plaintext == b"p" * 4096
    assert decrypted.key_material_id == key.current_key_material_id


@pytest.mark.parametrize(
    "context",
    [{}, {"tenant": "ACME"}, {"tenant": "acme", "extra": "x"}, {"Tenant": "acme"}],
)
async def test_wrong_context_is_opaque_invalid_ciphertext(running_node, key, context) -> None:
    stub = running_node.stub
    blob = (
        await stub.Encrypt(
            pb.EncryptRequest(
                key_id=key.key_id, plaintext=b"x", encryption_context={"tenant": "acme"}
            )
        )
    ).ciphertext_blob
    message = await expect_error(
        stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob, encryption_context=context)),
        INVALID,
        "InvalidCiphertextException",
    )
    assert "tenant" not in message and "acme" not in message


async def test_tampered_and_truncated_blobs(running_node, key) -> None:
    stub = running_node.stub
    blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"secret"))
    ).ciphertext_blob
    candidates = [blob[:n] for n in (1, 10, 40, len(blob) - 1)]
    candidates += [blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1 :] for i in range(0, len(blob), 7)]
    candidates += [b"\x02" + blob[1:], b"garbage" * 10]
    for candidate in candidates:
        await expect_error(
            stub.Decrypt(pb.DecryptRequest(ciphertext_blob=candidate)),
            INVALID,
            "InvalidCiphertextException",
        )


async def test_decrypt_with_wrong_key_id_is_incorrect_key(running_node, key) -> None:
    stub = running_node.stub
    other = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
    ).ciphertext_blob
    await expect_error(
        stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob, key_id=other.key_id)),
        INVALID,
        "IncorrectKeyException",
    )
    # Naming the right key, by ARN, works.
    decrypted = await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob, key_id=key.arn))
    assert decrypted.plaintext == b"x"


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"plaintext": b""}, "ValidationException"),
        ({"plaintext": b"x" * 4097}, "ValidationException"),
        (
            {"plaintext": b"x", "encryption_algorithm": "RSAES_OAEP_SHA_256"},
            "InvalidKeyUsageException",
        ),
        ({"plaintext": b"x", "encryption_algorithm": "ROT13"}, "ValidationException"),
        ({"plaintext": b"x", "encryption_context": {"": "v"}}, "ValidationException"),
        ({"plaintext": b"x", "grant_tokens": ["t"] * 11}, "ValidationException"),
    ],
)
async def test_encrypt_rejects_bad_input(running_node, key, request_fields, reason) -> None:
    await expect_error(
        running_node.stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, **request_fields)),
        INVALID,
        reason,
    )


async def test_decrypt_of_disabled_key_is_disabled(running_node, key) -> None:
    stub = running_node.stub
    blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
    ).ciphertext_blob
    await stub.DisableKey(pb.DisableKeyRequest(key_id=key.key_id))
    await expect_error(
        stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DisabledException",
    )


async def test_re_encrypt_moves_ciphertext_between_keys_and_contexts(running_node, key) -> None:
    stub = running_node.stub
    destination = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    blob = (
        await stub.Encrypt(
            pb.EncryptRequest(
                key_id=key.key_id, plaintext=b"payload", encryption_context={"a": "1"}
            )
        )
    ).ciphertext_blob
    result = await stub.ReEncrypt(
        pb.ReEncryptRequest(
            ciphertext_blob=blob,
            source_encryption_context={"a": "1"},
            destination_key_id=destination.key_id,
            destination_encryption_context={"b": "2"},
        )
    )
    assert result.source_key_id == key.arn
    assert result.key_id == destination.arn
    assert result.source_key_material_id == key.current_key_material_id
    assert result.destination_key_material_id == destination.current_key_material_id
    decrypted = await stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=result.ciphertext_blob, encryption_context={"b": "2"})
    )
    assert decrypted.plaintext == b"payload"
    assert decrypted.key_id == destination.arn
    await expect_error(
        stub.ReEncrypt(
            pb.ReEncryptRequest(
                ciphertext_blob=blob,
                source_encryption_context={"a": "2"},
                destination_key_id=destination.key_id,
            )
        ),
        INVALID,
        "InvalidCiphertextException",
    )
    await expect_error(
        stub.ReEncrypt(
            pb.ReEncryptRequest(
                ciphertext_blob=blob,
                source_encryption_context={"a": "1"},
                source_key_id=destination.key_id,
                destination_key_id=destination.key_id,
            )
        ),
        INVALID,
        "IncorrectKeyException",
    )
    await expect_error(
        stub.ReEncrypt(
            pb.ReEncryptRequest(ciphertext_blob=blob, source_encryption_context={"a": "1"})
        ),
        INVALID,
        "ValidationException",
    )


@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({"key_spec": "AES_256"}, 32),
        ({"key_spec": "AES_128"}, 16),
        ({"number_of_bytes": 1}, 1),
        ({"number_of_bytes": 1024}, 1024),
    ],
)
async def test_generate_data_key_sizes(running_node, key, fields, size) -> None:
    stub = running_node.stub
    generated = await stub.GenerateDataKey(
        pb.GenerateDataKeyRequest(key_id=key.key_id, encryption_context={"f": "1"}, **fields)
    )
    assert len(generated.plaintext) == size
    assert generated.key_id == key.arn
    decrypted = await stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=generated.ciphertext_blob, encryption_context={"f": "1"})
    )
    assert decrypted.plaintext == generated.plaintext
    without = await stub.GenerateDataKeyWithoutPlaintext(
        pb.GenerateDataKeyWithoutPlaintextRequest(key_id=key.key_id, **fields)
    )
    assert (
        len(
            (
                await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=without.ciphertext_blob))
            ).plaintext
        )
        == size
    )


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"key_spec": "AES_256", "number_of_bytes": 32},
        {"number_of_bytes": 0},
        {"number_of_bytes": 1025},
        {"key_spec": "AES_512"},
    ],
)
async def test_generate_data_key_rejects_bad_sizes(running_node, key, fields) -> None:
    await expect_error(
        running_node.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key_id=key.key_id, **fields)),
        INVALID,
        "ValidationException",
    )


async def test_generate_random(running_node) -> None:
    stub = running_node.stub
    first = await stub.GenerateRandom(pb.GenerateRandomRequest(number_of_bytes=32))
    second = await stub.GenerateRandom(pb.GenerateRandomRequest(number_of_bytes=32))
    assert len(first.plaintext) == 32 and first.plaintext != second.plaintext
    for bad in (
        pb.GenerateRandomRequest(),
        pb.GenerateRandomRequest(number_of_bytes=0),
        pb.GenerateRandomRequest(number_of_bytes=1025),
    ):
        await expect_error(stub.GenerateRandom(bad), INVALID, "ValidationException")


async def test_encrypt_through_alias(running_node, key) -> None:
    stub = running_node.stub
    await stub.CreateAlias(
        pb.CreateAliasRequest(alias_name="alias/orders", target_key_id=key.key_id)
    )
    encrypted = await stub.Encrypt(pb.EncryptRequest(key_id="alias/orders", plaintext=b"x"))
    assert encrypted.key_id == key.arn
