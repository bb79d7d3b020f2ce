"""RSA Encrypt/Decrypt (OAEP), HMAC, ECDH, ML-KEM and data key pairs through the gRPC
boundary, held to ``cryptography`` outside Meridian and to AWS's reasons for bad input."""

from __future__ import annotations

import os

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, padding, rsa

from conftest import expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _key(stub, spec: str, usage: str) -> pb.KeyMetadata:
    return (await stub.CreateKey(pb.CreateKeyRequest(key_spec=spec, key_usage=usage))).key_metadata


async def _public(stub, key_id: str):
    return serialization.load_der_public_key(
        (await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key_id))).public_key
    )


def _oaep(algorithm: str) -> padding.OAEP:
    chosen = hashes.SHA1() if algorithm == "RSAES_OAEP_SHA_1" else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(chosen), algorithm=chosen, label=None)


# ---- RSA encryption -----------------------------------------------------------------------


async def test_rsa_ciphertext_made_outside_decrypts_through_meridian(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "RSA_2048", "ENCRYPT_DECRYPT")
    assert list(key.encryption_algorithms) == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    assert not key.signing_algorithms
    public = await _public(stub, key.key_id)
    assert isinstance(public, rsa.RSAPublicKey)
    for algorithm, plaintext_max in (("RSAES_OAEP_SHA_1", 214), ("RSAES_OAEP_SHA_256", 190)):
        plaintext = os.urandom(plaintext_max)
        outside = public.encrypt(plaintext, _oaep(algorithm))
        decrypted = await stub.Decrypt(
            pb.DecryptRequest(
                ciphertext_blob=outside, key_id=key.arn, encryption_algorithm=algorithm
            )
        )
        assert decrypted.plaintext == plaintext
        assert decrypted.encryption_algorithm == algorithm
        assert decrypted.key_id == key.arn
        inside = await stub.Encrypt(
            pb.EncryptRequest(
                key_id=key.key_id, plaintext=plaintext, encryption_algorithm=algorithm
            )
        )
        assert inside.encryption_algorithm == algorithm
        assert len(inside.ciphertext_blob) == 256
        back = await stub.Decrypt(
            pb.DecryptRequest(
                ciphertext_blob=inside.ciphertext_blob,
                key_id=key.key_id,
                encryption_algorithm=algorithm,
            )
        )
        assert back.plaintext == plaintext
        await expect_error(
            stub.Encrypt(
                pb.EncryptRequest(
                    key_id=key.key_id,
                    plaintext=b"p" * (plaintext_max + 1),
                    encryption_algorithm=algorithm,
                )
            ),
            INVALID,
            "ValidationException",
        )


async def test_rsa_keys_refuse_what_aws_refuses(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "RSA_2048", "ENCRYPT_DECRYPT")
    ciphertext = (
        await stub.Encrypt(
            pb.EncryptRequest(
                key_id=key.key_id, plaintext=b"p", encryption_algorithm="RSAES_OAEP_SHA_256"
            )
        )
    ).ciphertext_blob
    cases = [
        # RSA keys take no encryption context, and only their own algorithms.
        (
            stub.Encrypt(
                pb.EncryptRequest(
                    key_id=key.key_id,
                    plaintext=b"p",
                    encryption_algorithm="RSAES_OAEP_SHA_256",
                    encryption_context={"a": "b"},
                )
            ),
            "ValidationException",
        ),
        (
            stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"p")),
            "InvalidKeyUsageException",
        ),
        (
            stub.Encrypt(
                pb.EncryptRequest(key_id=key.key_id, plaintext=b"p", encryption_algorithm="SM2PKE")
            ),
            "InvalidKeyUsageException",
        ),
        (
            stub.GenerateDataKey(pb.GenerateDataKeyRequest(key_id=key.key_id, number_of_bytes=32)),
            "InvalidKeyUsageException",
        ),
        # The ciphertext names no key, so Decrypt must: without one, the blob is read as a
        # Meridian blob to find its key, and is not one.
        (
            stub.Decrypt(
                pb.DecryptRequest(
                    ciphertext_blob=ciphertext, encryption_algorithm="RSAES_OAEP_SHA_256"
                )
            ),
            "InvalidCiphertextException",
        ),
        # The other OAEP hash, a truncated or tampered ciphertext: one opaque error.
        (
            stub.Decrypt(
                pb.DecryptRequest(
                    ciphertext_blob=ciphertext,
                    key_id=key.key_id,
                    encryption_algorithm="RSAES_OAEP_SHA_1",
                )
            ),
            "InvalidCiphertextException",
        ),
        (
            stub.Decrypt(
                pb.DecryptRequest(
                    ciphertext_blob=ciphertext[:-1],
                    key_id=key.key_id,
                    encryption_algorithm="RSAES_OAEP_SHA_256",
                )
            ),
            "InvalidCiphertextException",
        ),
        (
            stub.Decrypt(
                pb.DecryptRequest(
                    ciphertext_blob=bytes([ciphertext[0] ^ 1]) + ciphertext[1:],
                    key_id=key.key_id,
                    encryption_algorithm="RSAES_OAEP_SHA_256",
                )
            ),
            "InvalidCiphertextException",
        ),
        # SYMMETRIC_DEFAULT decryption of RSA ciphertext is not a blob Meridian made.
        (
            stub.Decrypt(pb.DecryptRequest(ciphertext_blob=ciphertext, key_id=key.key_id)),
            "InvalidCiphertextException",
        ),
    ]
    for call, reason in cases:
        await expect_error(call, INVALID, reason)
    symmetric = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await expect_error(
        stub.Decrypt(
            pb.DecryptRequest(
                ciphertext_blob=ciphertext,
                key_id=symmetric.key_id,
                encryption_algorithm="RSAES_OAEP_SHA_256",
            )
        ),
        INVALID,
        "InvalidKeyUsageException",
    )


async def test_re_encrypt_moves_rsa_ciphertext_to_a_symmetric_key_and_back(running_node) -> None:
    stub = running_node.stub
    rsa_key = await _key(stub, "RSA_2048", "ENCRYPT_DECRYPT")
    symmetric = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    public = await _public(stub, rsa_key.key_id)
    outside = public.encrypt(b"secret", _oaep("RSAES_OAEP_SHA_256"))
    moved = await stub.ReEncrypt(
        pb.ReEncryptRequest(
            ciphertext_blob=outside,
            source_key_id=rsa_key.key_id,
            source_encryption_algorithm="RSAES_OAEP_SHA_256",
            destination_key_id=symmetric.key_id,
            destination_encryption_context={"to": "symmetric"},
        )
    )
    assert moved.source_encryption_algorithm == "RSAES_OAEP_SHA_256"
    assert moved.destination_encryption_algorithm == "SYMMETRIC_DEFAULT"
    back = await stub.ReEncrypt(
        pb.ReEncryptRequest(
            ciphertext_blob=moved.ciphertext_blob,
            source_encryption_context={"to": "symmetric"},
            destination_key_id=rsa_key.arn,
            destination_encryption_algorithm="RSAES_OAEP_SHA_1",
        )
    )
    decrypted = await stub.Decrypt(
        pb.DecryptRequest(
            ciphertext_blob=back.ciphertext_blob,
            key_id=rsa_key.key_id,
            encryption_algorithm="RSAES_OAEP_SHA_1",
        )
    )
    assert decrypted.plaintext == b"secret"


# ---- HMAC ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [224, 256, 384, 512])
async def test_hmac_keys_generate_and_verify(running_node, bits: int) -> None:
    stub = running_node.stub
    key = await _key(stub, f"HMAC_{bits}", "GENERATE_VERIFY_MAC")
    algorithm = f"HMAC_SHA_{bits}"
    assert list(key.mac_algorithms) == [algorithm]
    generated = await stub.GenerateMac(
        pb.GenerateMacRequest(key_id=key.key_id, message=b"message", mac_algorithm=algorithm)
    )
    assert len(generated.mac) == bits // 8
    assert generated.key_id == key.arn
    verified = await stub.VerifyMac(
        pb.VerifyMacRequest(
            key_id=key.arn, message=b"message", mac=generated.mac, mac_algorithm=algorithm
        )
    )
    assert verified.mac_valid
    for message, mac in (
        (b"messagf", generated.mac),
        (b"message", generated.mac[:-1]),
        (b"message", b"\x00" * 64),
    ):
        await expect_error(
            stub.VerifyMac(
                pb.VerifyMacRequest(
                    key_id=key.key_id, message=message, mac=mac, mac_algorithm=algorithm
                )
            ),
            INVALID,
            "KMSInvalidMacException",
        )
    other = "HMAC_SHA_512" if bits != 512 else "HMAC_SHA_256"
    await expect_error(
        stub.GenerateMac(
            pb.GenerateMacRequest(key_id=key.key_id, message=b"m", mac_algorithm=other)
        ),
        INVALID,
        "InvalidKeyUsageException",
    )


async def test_mac_refuses_bad_input(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "HMAC_256", "GENERATE_VERIFY_MAC")
    symmetric = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    for request, reason in (
        (
            pb.GenerateMacRequest(key_id=key.key_id, message=b"", mac_algorithm="HMAC_SHA_256"),
            "ValidationException",
        ),
        (
            pb.GenerateMacRequest(
                key_id=key.key_id, message=b"m" * 4097, mac_algorithm="HMAC_SHA_256"
            ),
            "ValidationException",
        ),
        (pb.GenerateMacRequest(key_id=key.key_id, message=b"m"), "ValidationException"),
        (
            pb.GenerateMacRequest(key_id=key.key_id, message=b"m", mac_algorithm="HMAC_MD5"),
            "ValidationException",
        ),
        (
            pb.GenerateMacRequest(
                key_id=symmetric.key_id, message=b"m", mac_algorithm="HMAC_SHA_256"
            ),
            "InvalidKeyUsageException",
        ),
    ):
        await expect_error(stub.GenerateMac(request), INVALID, reason)
    await expect_error(
        stub.VerifyMac(
            pb.VerifyMacRequest(
                key_id=key.key_id, message=b"m", mac=b"", mac_algorithm="HMAC_SHA_256"
            )
        ),
        INVALID,
        "ValidationException",
    )
    # An HMAC key encrypts nothing, and takes no other usage.
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"p")),
        INVALID,
        "InvalidKeyUsageException",
    )
    await expect_error(
        stub.CreateKey(pb.CreateKeyRequest(key_spec="HMAC_256")), INVALID, "ValidationException"
    )


# ---- ECDH ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "curve"),
    [
        ("ECC_NIST_P256", ec.SECP256R1()),
        ("ECC_NIST_P384", ec.SECP384R1()),
        ("ECC_NIST_P521", ec.SECP521R1()),
    ],
)
async def test_derive_shared_secret_matches_the_peer_s(running_node, spec: str, curve) -> None:
    stub = running_node.stub
    key = await _key(stub, spec, "KEY_AGREEMENT")
    assert list(key.key_agreement_algorithms) == ["ECDH"]
    peer = ec.generate_private_key(curve)
    peer_public = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    derived = await stub.DeriveSharedSecret(
        pb.DeriveSharedSecretRequest(
            key_id=key.key_id, key_agreement_algorithm="ECDH", public_key=peer_public
        )
    )
    ours = await _public(stub, key.key_id)
    assert derived.shared_secret == peer.exchange(ec.ECDH(), ours)
    assert derived.key_origin == "AWS_KMS"
    assert derived.key_agreement_algorithm == "ECDH"


async def test_derive_shared_secret_refuses_foreign_public_keys(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "ECC_NIST_P256", "KEY_AGREEMENT")
    other_curve = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    good = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for public_key, reason in (
        (other_curve, "ValidationException"),
        (b"not a key", "ValidationException"),
        (good[:-1], "ValidationException"),
        (good[:-2] + bytes([good[-2] ^ 1, good[-1]]), "ValidationException"),
        (b"", "ValidationException"),
        (b"k" * 8193, "ValidationException"),
    ):
        await expect_error(
            stub.DeriveSharedSecret(
                pb.DeriveSharedSecretRequest(
                    key_id=key.key_id, key_agreement_algorithm="ECDH", public_key=public_key
                )
            ),
            INVALID,
            reason,
        )
    signer = await _key(stub, "ECC_NIST_P256", "SIGN_VERIFY")
    await expect_error(
        stub.DeriveSharedSecret(
            pb.DeriveSharedSecretRequest(
                key_id=signer.key_id, key_agreement_algorithm="ECDH", public_key=good
            )
        ),
        INVALID,
        "InvalidKeyUsageException",
    )
    await expect_error(
        stub.DeriveSharedSecret(pb.DeriveSharedSecretRequest(key_id=key.key_id, public_key=good)),
        INVALID,
        "ValidationException",
    )
    # P256K1 and Ed25519 keys sign only.
    for spec in ("ECC_SECG_P256K1", "ECC_NIST_EDWARDS25519"):
        await expect_error(
            stub.CreateKey(pb.CreateKeyRequest(key_spec=spec, key_usage="KEY_AGREEMENT")),
            INVALID,
            "ValidationException",
        )


# ---- ML-KEM --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ciphertext_bytes"), [("ML_KEM_768", 1088), ("ML_KEM_1024", 1568)]
)
async def test_encapsulate_and_decapsulate(running_node, spec: str, ciphertext_bytes: int) -> None:
    stub = running_node.stub
    key = await _key(stub, spec, "ENCAPSULATE_DECAPSULATE")
    assert list(key.encapsulation_algorithms) == ["ML_KEM"]
    encapsulated = await stub.Encapsulate(
        pb.EncapsulateRequest(key_id=key.key_id, encapsulation_algorithm="ML_KEM")
    )
    assert len(encapsulated.shared_secret) == 32
    assert len(encapsulated.shared_secret_ciphertext_blob) == ciphertext_bytes
    decapsulated = await stub.Decapsulate(
        pb.DecapsulateRequest(
            key_id=key.key_id,
            shared_secret_ciphertext_blob=encapsulated.shared_secret_ciphertext_blob,
            encapsulation_algorithm="ML_KEM",
        )
    )
    assert decapsulated.shared_secret == encapsulated.shared_secret
    # A party outside encapsulates to GetPublicKey's output; Meridian recovers the secret.
    public = await _public(stub, key.key_id)
    assert isinstance(public, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey)
    secret, ciphertext = public.encapsulate()
    recovered = await stub.Decapsulate(
        pb.DecapsulateRequest(
            key_id=key.arn,
            shared_secret_ciphertext_blob=ciphertext,
            encapsulation_algorithm="ML_KEM",
        )
    )
    assert recovered.shared_secret == secret
    # Implicit rejection: a changed ciphertext gives another 32-byte secret, no error.
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    rejected = await stub.Decapsulate(
        pb.DecapsulateRequest(
            key_id=key.key_id,
            shared_secret_ciphertext_blob=tampered,
            encapsulation_algorithm="ML_KEM",
        )
    )
    assert len(rejected.shared_secret) == 32 and rejected.shared_secret != secret
    for blob, reason in (
        (ciphertext[:-1], "InvalidCiphertextException"),
        (b"", "ValidationException"),
    ):
        await expect_error(
            stub.Decapsulate(
                pb.DecapsulateRequest(
                    key_id=key.key_id,
                    shared_secret_ciphertext_blob=blob,
                    encapsulation_algorithm="ML_KEM",
                )
            ),
            INVALID,
            reason,
        )
    await expect_error(
        stub.Encapsulate(pb.EncapsulateRequest(key_id=key.key_id)), INVALID, "ValidationException"
    )
    await expect_error(
        stub.Sign(
            pb.SignRequest(key_id=key.key_id, message=b"m", signing_algorithm="ML_DSA_SHAKE_256")
        ),
        INVALID,
        "InvalidKeyUsageException",
    )


async def test_ml_kem_512_and_sm2_are_refused_as_unsupported(running_node) -> None:
    stub = running_node.stub
    await expect_error(
        stub.CreateKey(
            pb.CreateKeyRequest(key_spec="ML_KEM_512", key_usage="ENCAPSULATE_DECAPSULATE")
        ),
        INVALID,
        "UnsupportedOperationException",
    )
    await expect_error(
        stub.CreateKey(pb.CreateKeyRequest(key_spec="SM2", key_usage="SIGN_VERIFY")),
        INVALID,
        "UnsupportedOperationException",
    )


# ---- data key pairs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "RSA_2048",
        "ECC_NIST_P256",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
        "ECC_NIST_EDWARDS25519",
        "ML_KEM_768",
    ],
)
async def test_generate_data_key_pair(running_node, spec: str) -> None:
    stub = running_node.stub
    wrapping = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    context = {"purpose": "pair"}
    pair = await stub.GenerateDataKeyPair(
        pb.GenerateDataKeyPairRequest(
            key_id=wrapping.key_id, key_pair_spec=spec, encryption_context=context
        )
    )
    assert pair.key_pair_spec == spec
    assert pair.key_id == wrapping.arn
    assert pair.key_material_id == wrapping.current_key_material_id
    private = serialization.load_der_private_key(pair.private_key_plaintext, password=None)
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == pair.public_key
    )
    opened = await stub.Decrypt(
        pb.DecryptRequest(
            ciphertext_blob=pair.private_key_ciphertext_blob, encryption_context=context
        )
    )
    assert opened.plaintext == pair.private_key_plaintext
    sealed_only = await stub.GenerateDataKeyPairWithoutPlaintext(
        pb.GenerateDataKeyPairWithoutPlaintextRequest(key_id=wrapping.key_id, key_pair_spec=spec)
    )
    private = serialization.load_der_private_key(
        (
            await stub.Decrypt(
                pb.DecryptRequest(ciphertext_blob=sealed_only.private_key_ciphertext_blob)
            )
        ).plaintext,
        password=None,
    )
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == sealed_only.public_key
    )


async def test_data_key_pairs_refuse_what_aws_refuses(running_node) -> None:
    stub = running_node.stub
    wrapping = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    signer = await _key(stub, "ECC_NIST_P256", "SIGN_VERIFY")
    for request, reason in (
        (
            pb.GenerateDataKeyPairRequest(key_id=wrapping.key_id, key_pair_spec="SM2"),
            "UnsupportedOperationException",
        ),
        (
            pb.GenerateDataKeyPairRequest(key_id=wrapping.key_id, key_pair_spec="ML_KEM_512"),
            "UnsupportedOperationException",
        ),
        (
            pb.GenerateDataKeyPairRequest(key_id=wrapping.key_id, key_pair_spec="ML_DSA_44"),
            "ValidationException",
        ),
        (pb.GenerateDataKeyPairRequest(key_id=wrapping.key_id), "ValidationException"),
        (
            pb.GenerateDataKeyPairRequest(key_id=signer.key_id, key_pair_spec="ECC_NIST_P256"),
            "InvalidKeyUsageException",
        ),
        (
            pb.GenerateDataKeyPairRequest(
                key_id=wrapping.key_id, key_pair_spec="ECC_NIST_P256", encryption_context={"": "v"}
            ),
            "ValidationException",
        ),
    ):
        await expect_error(stub.GenerateDataKeyPair(request), INVALID, reason)
