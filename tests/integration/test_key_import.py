"""Imported key material (BYOK) through the gRPC boundary: the import round trip for every
key type, published vectors imported and used, re-import, deletion, expiry with the
fake clock, and each AWS reason for a bad token or bad material."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, utils
from key_type_support import import_material, ml_dsa_mu, pkcs8, vectors, wrap_for_import

from conftest import expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def _external_key(stub, spec: str = "SYMMETRIC_DEFAULT", usage: str = "") -> pb.KeyMetadata:
    request = pb.CreateKeyRequest(origin="EXTERNAL", key_spec=spec, key_usage=usage)
    return (await stub.CreateKey(request)).key_metadata


async def _state(stub, key_id: str) -> str:
    return (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))).key_metadata.key_state


@pytest.mark.parametrize(
    "algorithm",
    [
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "RSA_AES_KEY_WRAP_SHA_1",
        "RSA_AES_KEY_WRAP_SHA_256",
    ],
)
async def test_symmetric_import_round_trip(running_node, algorithm: str) -> None:
    stub = running_node.stub
    key = await _external_key(stub)
    assert key.key_state == "PendingImport"
    assert key.origin == "EXTERNAL"
    assert not key.current_key_material_id
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"p")),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    material = os.urandom(32)
    imported = await import_material(stub, key.key_id, material, algorithm=algorithm)
    assert imported.key_id == key.arn
    assert len(imported.key_material_id) == 64
    described = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id))).key_metadata
    assert described.key_state == "Enabled"
    assert described.expiration_model == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    assert described.current_key_material_id == imported.key_material_id
    blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"p"))
    ).ciphertext_blob
    assert (await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))).plaintext == b"p"


async def test_deleted_material_comes_back_by_importing_it_again(running_node) -> None:
    stub = running_node.stub
    key = await _external_key(stub)
    material = os.urandom(32)
    first = await import_material(stub, key.key_id, material)
    blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"p"))
    ).ciphertext_blob
    deleted = await stub.DeleteImportedKeyMaterial(
        pb.DeleteImportedKeyMaterialRequest(key_id=key.key_id)
    )
    assert deleted.key_material_id == first.key_material_id
    assert await _state(stub, key.key_id) == "PendingImport"
    await expect_error(
        stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob)),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    # Other material is not the key's: IncorrectKeyMaterialException.
    await expect_error(
        import_material(stub, key.key_id, os.urandom(32)),
        INVALID,
        "IncorrectKeyMaterialException",
    )
    again = await import_material(stub, key.key_id, material, algorithm="RSAES_OAEP_SHA_256")
    assert again.key_material_id == first.key_material_id
    assert await _state(stub, key.key_id) == "Enabled"
    assert (await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))).plaintext == b"p"
    # Re-importing with the id named is the same; a wrong id is refused.
    await import_material(
        stub,
        key.key_id,
        material,
        import_type="EXISTING_KEY_MATERIAL",
        key_material_id=first.key_material_id,
    )
    await expect_error(
        import_material(stub, key.key_id, material, key_material_id="ab" * 32),
        INVALID,
        "IncorrectKeyMaterialException",
    )


async def test_expiring_material_is_deleted_when_its_time_comes(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    imports = running_node.node.service.key_types.imports
    key = await _external_key(stub)
    valid_to = clock.now() + timedelta(days=30)
    await import_material(stub, key.key_id, os.urandom(32), valid_to=valid_to)
    described = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id))).key_metadata
    assert described.expiration_model == "KEY_MATERIAL_EXPIRES"
    assert described.valid_to.ToDatetime(tzinfo=valid_to.tzinfo) == valid_to
    clock.advance(timedelta(days=30) - timedelta(microseconds=1))
    assert await imports.expire_due_materials() == []
    assert await _state(stub, key.key_id) == "Enabled"
    clock.advance(timedelta(microseconds=1))
    assert [key_id for key_id, _ in await imports.expire_due_materials()] == [key.key_id]
    assert await _state(stub, key.key_id) == "PendingImport"
    rotations = await stub.ListKeyRotations(
        pb.ListKeyRotationsRequest(key_id=key.key_id, include_key_material="ALL_KEY_MATERIAL")
    )
    assert [entry.import_state for entry in rotations.rotations] == ["PENDING_IMPORT"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"expiration_model": "KEY_MATERIAL_EXPIRES"}, "ValidationException"),  # no ValidTo
        ({"expiration_model": "SOMETIMES"}, "ValidationException"),
        ({"import_type": "SIDEWAYS"}, "ValidationException"),
        ({"key_material_id": "short"}, "ValidationException"),
        ({"key_material_description": "d" * 257}, "ValidationException"),
        ({"import_type": "NEW_KEY_MATERIAL", "key_material_id": "ab" * 32}, "ValidationException"),
    ],
)
async def test_import_refuses_bad_fields(running_node, fields: dict, reason: str) -> None:
    stub = running_node.stub
    key = await _external_key(stub)
    await expect_error(import_material(stub, key.key_id, os.urandom(32), **fields), INVALID, reason)


async def test_valid_to_must_be_within_a_year(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key = await _external_key(stub)
    for valid_to in (clock.now(), clock.now() + timedelta(days=366)):
        await expect_error(
            import_material(stub, key.key_id, os.urandom(32), valid_to=valid_to),
            INVALID,
            "ValidationException",
        )
    await expect_error(
        import_material(
            stub,
            key.key_id,
            os.urandom(32),
            valid_to=clock.now() + timedelta(days=1),
            expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
        ),
        INVALID,
        "ValidationException",
    )


async def test_import_tokens_expire_and_belong_to_their_key(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key = await _external_key(stub)
    other = await _external_key(stub)
    parameters = await stub.GetParametersForImport(
        pb.GetParametersForImportRequest(
            key_id=key.key_id,
            wrapping_algorithm="RSAES_OAEP_SHA_256",
            wrapping_key_spec="RSA_3072",
        )
    )
    assert parameters.key_id == key.arn
    assert serialization.load_der_public_key(parameters.public_key).key_size == 3072
    valid_to = parameters.parameters_valid_to.ToDatetime(tzinfo=clock.now().tzinfo)
    assert valid_to == clock.now() + timedelta(hours=24)
    wrapped = wrap_for_import(parameters.public_key, "RSAES_OAEP_SHA_256", os.urandom(32))

    def request(key_id: str, token: bytes = parameters.import_token, material: bytes = wrapped):
        return pb.ImportKeyMaterialRequest(
            key_id=key_id,
            import_token=token,
            encrypted_key_material=material,
            expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    token = parameters.import_token
    for call, reason in (
        (request(other.key_id), "InvalidImportTokenException"),
        (request(key.key_id, token[:-1]), "InvalidImportTokenException"),
        (request(key.key_id, b"\x02" + token[1:]), "InvalidImportTokenException"),
        (request(key.key_id, b"garbage"), "InvalidImportTokenException"),
        (request(key.key_id, material=wrapped[:-1]), "InvalidCiphertextException"),
        (request(key.key_id, material=os.urandom(384)), "InvalidCiphertextException"),
        (request(key.key_id, token=b""), "ValidationException"),
    ):
        await expect_error(stub.ImportKeyMaterial(call), INVALID, reason)
    clock.advance(timedelta(hours=24))
    await expect_error(
        stub.ImportKeyMaterial(request(key.key_id)), INVALID, "ExpiredImportTokenException"
    )


async def test_import_parameters_refuse_what_aws_refuses(running_node) -> None:
    stub = running_node.stub
    external = await _external_key(stub)
    generated = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    for request, reason in (
        (
            pb.GetParametersForImportRequest(
                key_id=generated.key_id,
                wrapping_algorithm="RSAES_OAEP_SHA_256",
                wrapping_key_spec="RSA_2048",
            ),
            "UnsupportedOperationException",
        ),
        (
            pb.GetParametersForImportRequest(
                key_id=external.key_id, wrapping_algorithm="SM2PKE", wrapping_key_spec="SM2"
            ),
            "UnsupportedOperationException",
        ),
        (
            pb.GetParametersForImportRequest(
                key_id=external.key_id,
                wrapping_algorithm="RSAES_PKCS1_V1_5",
                wrapping_key_spec="RSA_2048",
            ),
            "UnsupportedOperationException",
        ),
        (
            pb.GetParametersForImportRequest(
                key_id=external.key_id, wrapping_algorithm="RSAES_OAEP_SHA_256"
            ),
            "ValidationException",
        ),
    ):
        await expect_error(stub.GetParametersForImport(request), INVALID, reason)
    await expect_error(
        stub.DeleteImportedKeyMaterial(
            pb.DeleteImportedKeyMaterialRequest(key_id=generated.key_id)
        ),
        INVALID,
        "UnsupportedOperationException",
    )
    # Nothing imported yet: nothing to delete.
    nothing = await stub.DeleteImportedKeyMaterial(
        pb.DeleteImportedKeyMaterialRequest(key_id=external.key_id)
    )
    assert nothing.key_material_id == ""


@pytest.mark.parametrize(
    ("spec", "usage", "material", "reason"),
    [
        ("SYMMETRIC_DEFAULT", "", b"k" * 31, "IncorrectKeyMaterialException"),
        ("SYMMETRIC_DEFAULT", "", b"k" * 33, "IncorrectKeyMaterialException"),
        ("HMAC_384", "GENERATE_VERIFY_MAC", b"k" * 47, "IncorrectKeyMaterialException"),
        ("HMAC_384", "GENERATE_VERIFY_MAC", b"k" * 129, "IncorrectKeyMaterialException"),
        ("ECC_NIST_P256", "SIGN_VERIFY", b"not a key", "IncorrectKeyMaterialException"),
        (
            "ECC_NIST_P256",
            "SIGN_VERIFY",
            pkcs8(ec.generate_private_key(ec.SECP384R1())),
            "IncorrectKeyMaterialException",
        ),
        (
            "ECC_NIST_EDWARDS25519",
            "SIGN_VERIFY",
            pkcs8(ec.generate_private_key(ec.SECP256R1())),
            "IncorrectKeyMaterialException",
        ),
    ],
)
async def test_material_must_fit_the_key_spec(
    running_node, spec: str, usage: str, material: bytes, reason: str
) -> None:
    stub = running_node.stub
    key = await _external_key(stub, spec, usage)
    await expect_error(import_material(stub, key.key_id, material), INVALID, reason)
    assert await _state(stub, key.key_id) == "PendingImport"


async def test_hmac_import_computes_the_customer_s_macs(running_node) -> None:
    import hmac as stdlib_hmac

    stub = running_node.stub
    key = await _external_key(stub, "HMAC_256", "GENERATE_VERIFY_MAC")
    secret = os.urandom(48)
    await import_material(stub, key.key_id, secret, algorithm="RSAES_OAEP_SHA_1")
    mac = await stub.GenerateMac(
        pb.GenerateMacRequest(key_id=key.key_id, message=b"m", mac_algorithm="HMAC_SHA_256")
    )
    assert mac.mac == stdlib_hmac.new(secret, b"m", "sha256").digest()


async def test_new_key_material_then_rotate_on_demand(running_node) -> None:
    stub = running_node.stub
    key = await _external_key(stub)
    first_material, second_material = os.urandom(32), os.urandom(32)
    first = await import_material(stub, key.key_id, first_material)
    blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"1"))
    ).ciphertext_blob
    await expect_error(
        stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key.key_id)),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    second = await import_material(
        stub,
        key.key_id,
        second_material,
        import_type="NEW_KEY_MATERIAL",
        key_material_description="second",
    )
    await expect_error(
        import_material(stub, key.key_id, os.urandom(32), import_type="NEW_KEY_MATERIAL"),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    listed = await stub.ListKeyRotations(
        pb.ListKeyRotationsRequest(key_id=key.key_id, include_key_material="ALL_KEY_MATERIAL")
    )
    assert [(e.key_material_id, e.key_material_state) for e in listed.rotations] == [
        (first.key_material_id, "CURRENT"),
        (second.key_material_id, "PENDING_ROTATION"),
    ]
    assert listed.rotations[1].key_material_description == "second"
    assert listed.rotations[1].import_state == "IMPORTED"
    await stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key.key_id))
    described = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id))).key_metadata
    assert described.current_key_material_id == second.key_material_id
    assert (await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))).plaintext == b"1"
    # Deleting any material of the key makes it unusable until that material is back.
    await stub.DeleteImportedKeyMaterial(
        pb.DeleteImportedKeyMaterialRequest(
            key_id=key.key_id, key_material_id=first.key_material_id
        )
    )
    assert await _state(stub, key.key_id) == "PendingImport"
    await import_material(stub, key.key_id, first_material)
    assert await _state(stub, key.key_id) == "Enabled"
    await expect_error(
        stub.DeleteImportedKeyMaterial(
            pb.DeleteImportedKeyMaterialRequest(key_id=key.key_id, key_material_id="cd" * 32)
        ),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )


async def test_deletion_states_of_imported_keys(running_node) -> None:
    stub = running_node.stub
    key = await _external_key(stub)
    await import_material(stub, key.key_id, os.urandom(32))
    await stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=key.key_id))
    # Deleting the material of a key pending deletion leaves it pending deletion (AWS).
    await stub.DeleteImportedKeyMaterial(pb.DeleteImportedKeyMaterialRequest(key_id=key.key_id))
    assert await _state(stub, key.key_id) == "PendingDeletion"
    # Cancelled, a key without its material waits for it, rather than being Disabled.
    await stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(key_id=key.key_id))
    assert await _state(stub, key.key_id) == "PendingImport"
    never = await _external_key(stub)
    await stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=never.key_id))
    await stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(key_id=never.key_id))
    assert await _state(stub, never.key_id) == "PendingImport"


# ---- published vectors, imported and used through Meridian -----------------------------


async def test_rsa_oaep_published_vectors_decrypt(running_node) -> None:
    stub = running_node.stub
    vector = vectors()["rsa_oaep_sha256_2048"]
    key = await _external_key(stub, "RSA_2048", "ENCRYPT_DECRYPT")
    await import_material(stub, key.key_id, bytes.fromhex(vector["private_key_pkcs8"]))
    for case in vector["cases"]:
        decrypted = await stub.Decrypt(
            pb.DecryptRequest(
                ciphertext_blob=bytes.fromhex(case["ciphertext"]),
                key_id=key.key_id,
                encryption_algorithm="RSAES_OAEP_SHA_256",
            )
        )
        assert decrypted.plaintext.hex() == case["message"]


async def test_rfc_8032_ed25519_signatures_come_out_exactly(running_node) -> None:
    stub = running_node.stub
    for vector in vectors()["ed25519"]:
        if not vector["message"]:
            continue  # Sign takes 1 to 4096 bytes
        key = await _external_key(stub, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
        private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["seed"]))
        await import_material(stub, key.key_id, pkcs8(private))
        public = (await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key.key_id))).public_key
        assert public.endswith(bytes.fromhex(vector["public_key"]))
        signed = await stub.Sign(
            pb.SignRequest(
                key_id=key.key_id,
                message=bytes.fromhex(vector["message"]),
                signing_algorithm="ED25519_SHA_512",
            )
        )
        assert signed.signature.hex() == vector["signature"]


async def test_secp256k1_published_signatures_verify(running_node) -> None:
    stub = running_node.stub
    for vector in vectors()["ecdsa_secp256k1_sha256"]:
        key = await _external_key(stub, "ECC_SECG_P256K1", "SIGN_VERIFY")
        private = ec.derive_private_key(int(vector["private_value"], 16), ec.SECP256K1())
        await import_material(stub, key.key_id, pkcs8(private))
        await stub.Verify(
            pb.VerifyRequest(
                key_id=key.key_id,
                message=bytes.fromhex(vector["message"]),
                signature=bytes.fromhex(vector["signature"]),
                signing_algorithm="ECDSA_SHA_256",
            )
        )
        r, s = utils.decode_dss_signature(bytes.fromhex(vector["signature"]))
        forged = utils.encode_dss_signature(r, s ^ 1)
        await expect_error(
            stub.Verify(
                pb.VerifyRequest(
                    key_id=key.key_id,
                    message=bytes.fromhex(vector["message"]),
                    signature=forged,
                    signing_algorithm="ECDSA_SHA_256",
                )
            ),
            INVALID,
            "KMSInvalidSignatureException",
        )


async def test_nist_ecdh_vectors_derive_the_published_secret(running_node) -> None:
    stub = running_node.stub
    for vector in vectors()["ecdh_p256"]:
        key = await _external_key(stub, "ECC_NIST_P256", "KEY_AGREEMENT")
        private = ec.derive_private_key(int(vector["private_value"], 16), ec.SECP256R1())
        await import_material(stub, key.key_id, pkcs8(private))
        peer = ec.EllipticCurvePublicNumbers(
            int(vector["peer_x"], 16), int(vector["peer_y"], 16), ec.SECP256R1()
        ).public_key()
        derived = await stub.DeriveSharedSecret(
            pb.DeriveSharedSecretRequest(
                key_id=key.key_id,
                key_agreement_algorithm="ECDH",
                public_key=peer.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
        )
        assert derived.shared_secret.hex() == vector["shared_secret"]
        assert derived.key_origin == "EXTERNAL"


async def test_ml_dsa_kat_keys_and_signatures(running_node) -> None:
    """NIST ACVP ML-DSA vectors: the seed gives the published public key, and the published
    signature (made with a context) verifies through EXTERNAL_MU."""
    stub = running_node.stub
    classes = {
        "ML_DSA_44": mldsa.MLDSA44PrivateKey,
        "ML_DSA_65": mldsa.MLDSA65PrivateKey,
        "ML_DSA_87": mldsa.MLDSA87PrivateKey,
    }
    for vector in vectors()["ml_dsa"][::2]:
        spec = vector["key_spec"]
        key = await _external_key(stub, spec, "SIGN_VERIFY")
        private = classes[spec].from_seed_bytes(bytes.fromhex(vector["seed"]))
        await import_material(stub, key.key_id, pkcs8(private))
        public = (await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key.key_id))).public_key
        assert public.endswith(bytes.fromhex(vector["public_key"]))
        mu = ml_dsa_mu(
            bytes.fromhex(vector["public_key"]),
            bytes.fromhex(vector["message"]),
            bytes.fromhex(vector["context"]),
        )
        verified = await stub.Verify(
            pb.VerifyRequest(
                key_id=key.key_id,
                message=mu,
                message_type="EXTERNAL_MU",
                signature=bytes.fromhex(vector["signature"]),
                signing_algorithm="ML_DSA_SHAKE_256",
            )
        )
        assert verified.signature_valid


async def test_ml_kem_kat_decapsulates_the_published_secret(running_node) -> None:
    stub = running_node.stub
    classes = {"ML_KEM_768": mlkem.MLKEM768PrivateKey, "ML_KEM_1024": mlkem.MLKEM1024PrivateKey}
    for vector in vectors()["ml_kem"][::2]:
        key = await _external_key(stub, vector["key_spec"], "ENCAPSULATE_DECAPSULATE")
        private = classes[vector["key_spec"]].from_seed_bytes(bytes.fromhex(vector["seed"]))
        await import_material(stub, key.key_id, pkcs8(private))
        for ciphertext, secret in (
            (vector["ciphertext"], vector["shared_secret"]),
            (vector["rejected_ciphertext"], vector["rejected_shared_secret"]),
        ):
            recovered = await stub.Decapsulate(
                pb.DecapsulateRequest(
                    key_id=key.key_id,
                    shared_secret_ciphertext_blob=bytes.fromhex(ciphertext),
                    encapsulation_algorithm="ML_KEM",
                )
            )
            assert recovered.shared_secret.hex() == secret


async def test_asymmetric_keys_take_only_their_first_material(running_node) -> None:
    stub = running_node.stub
    key = await _external_key(stub, "ECC_NIST_P256", "SIGN_VERIFY")
    private = ec.generate_private_key(ec.SECP256R1())
    await import_material(stub, key.key_id, pkcs8(private))
    await expect_error(
        import_material(stub, key.key_id, pkcs8(ec.generate_private_key(ec.SECP256R1()))),
        INVALID,
        "IncorrectKeyMaterialException",
    )
    await expect_error(
        import_material(
            stub,
            key.key_id,
            pkcs8(ec.generate_private_key(ec.SECP256R1())),
            import_type="NEW_KEY_MATERIAL",
        ),
        INVALID,
        "IncorrectKeyMaterialException",
    )
    # The same key again is fine (e.g. to change its expiry).
    await import_material(stub, key.key_id, pkcs8(private))


async def test_imported_and_generated_private_keys_are_never_stored_or_logged(
    running_node, capsys
) -> None:
    """DESIGN.md §7.4 for key pairs and HMAC keys: the store and the logs hold neither an
    imported private key (PKCS#8 or its raw scalar) nor the secrets Meridian generates."""
    stub = running_node.stub
    private = ec.generate_private_key(ec.SECP256R1())
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    signer = await _external_key(stub, "ECC_NIST_P256", "SIGN_VERIFY")
    await import_material(stub, signer.key_id, pkcs8(private))
    hmac_secret = os.urandom(40)
    mac_key = await _external_key(stub, "HMAC_256", "GENERATE_VERIFY_MAC")
    await import_material(stub, mac_key.key_id, hmac_secret)
    generated = (
        await stub.CreateKey(pb.CreateKeyRequest(key_spec="ML_DSA_44", key_usage="SIGN_VERIFY"))
    ).key_metadata
    await stub.Sign(
        pb.SignRequest(key_id=generated.key_id, message=b"m", signing_algorithm="ML_DSA_SHAKE_256")
    )
    service = running_node.node.service
    cached = [
        material
        for (key_id, _), material in service._materials._entries.items()
        if key_id == generated.key_id
    ]
    assert len(cached) == 1, "the generated key's material was not in the cache"
    secrets = [pkcs8(private), scalar, hmac_secret, cached[0]]

    data_dir = Path(running_node.node.config.data_dir)

    def stored_bytes() -> bytes:
        return b"".join(path.read_bytes() for path in data_dir.iterdir() if path.is_file())

    stored = await asyncio.to_thread(stored_bytes)
    assert stored, "the store is empty: the check would be meaningless"
    # The public key is public, and stored: the scan does read the rows.
    public = (await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=signer.key_id))).public_key
    assert public in stored
    output = capsys.readouterr()
    logged = (output.out + output.err).encode()
    assert b"ImportKeyMaterial" in logged, "logs were not captured"
    for secret in secrets:
        assert secret not in stored
        assert secret not in logged and secret.hex().encode() not in logged
