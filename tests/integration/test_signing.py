"""Sign, Verify and GetPublicKey through the gRPC boundary: every spec x algorithm, the
message types, interop with ``cryptography`` from GetPublicKey's output, and each
AWS reason for bad input."""

from __future__ import annotations

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from key_type_support import (
    SIGNING_MATRIX,
    digest,
    ml_dsa_mu,
    raw_ml_dsa_public_key,
    verify_locally,
)

from conftest import expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _key(stub, spec: str, usage: str = "SIGN_VERIFY") -> pb.KeyMetadata:
    response = await stub.CreateKey(pb.CreateKeyRequest(key_spec=spec, key_usage=usage))
    return response.key_metadata


async def test_every_spec_and_algorithm_signs_and_verifies(running_node) -> None:
    """The matrix of docs/key-types.md: Meridian's Verify and cryptography agree."""
    stub = running_node.stub
    message = b"the message of record"
    for spec, algorithms in SIGNING_MATRIX.items():
        key = await _key(stub, spec)
        assert list(key.signing_algorithms) == (
            list(algorithms) if not spec.startswith("RSA_") else list(SIGNING_MATRIX["RSA_2048"])
        )
        public = (await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key.key_id))).public_key
        for algorithm in algorithms:
            signed = await stub.Sign(
                pb.SignRequest(key_id=key.key_id, message=message, signing_algorithm=algorithm)
            )
            assert signed.key_id == key.arn
            assert signed.signing_algorithm == algorithm
            verified = await stub.Verify(
                pb.VerifyRequest(
                    key_id=key.arn,
                    message=message,
                    signature=signed.signature,
                    signing_algorithm=algorithm,
                )
            )
            assert verified.signature_valid
            verify_locally(public, algorithm, message, signed.signature)
            with pytest.raises(InvalidSignature):
                verify_locally(public, algorithm, message + b"!", signed.signature)
            await expect_error(
                stub.Verify(
                    pb.VerifyRequest(
                        key_id=key.key_id,
                        message=message + b"!",
                        signature=signed.signature,
                        signing_algorithm=algorithm,
                    )
                ),
                INVALID,
                "KMSInvalidSignatureException",
            )


async def test_get_public_key_is_der_spki_with_the_key_s_algorithms(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "ECC_NIST_P384")
    response = await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key.arn))
    assert response.key_id == key.arn
    assert response.key_spec == response.customer_master_key_spec == "ECC_NIST_P384"
    assert response.key_usage == "SIGN_VERIFY"
    assert list(response.signing_algorithms) == ["ECDSA_SHA_384"]
    assert not response.encryption_algorithms and not response.key_agreement_algorithms
    loaded = serialization.load_der_public_key(response.public_key)
    assert (
        loaded.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == response.public_key
    )


@pytest.mark.parametrize(
    ("spec", "algorithm"),
    [
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("ECC_NIST_P521", "ECDSA_SHA_512"),
        ("RSA_2048", "RSASSA_PSS_SHA_384"),
        ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"),
    ],
)
async def test_a_digest_is_never_hashed_twice(running_node, spec: str, algorithm: str) -> None:
    """DIGEST signs the digest as given: it verifies as RAW of the message, and locally as
    a prehashed signature; RAW of the digest would be a different signature."""
    stub = running_node.stub
    key = await _key(stub, spec)
    public = (await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key.key_id))).public_key
    message = b"a message far longer than it needs to be, hashed by the caller"
    message_digest = digest(algorithm, message)
    signed = await stub.Sign(
        pb.SignRequest(
            key_id=key.key_id,
            message=message_digest,
            message_type="DIGEST",
            signing_algorithm=algorithm,
        )
    )
    verify_locally(public, algorithm, message, signed.signature)
    verify_locally(public, algorithm, message_digest, signed.signature, prehashed=True)
    for message_type, payload in (("RAW", message), ("DIGEST", message_digest)):
        await stub.Verify(
            pb.VerifyRequest(
                key_id=key.key_id,
                message=payload,
                message_type=message_type,
                signature=signed.signature,
                signing_algorithm=algorithm,
            )
        )
    # The digest sent as RAW is hashed again: that is another message.
    await expect_error(
        stub.Verify(
            pb.VerifyRequest(
                key_id=key.key_id,
                message=message_digest,
                signature=signed.signature,
                signing_algorithm=algorithm,
            )
        ),
        INVALID,
        "KMSInvalidSignatureException",
    )


async def test_a_digest_of_the_wrong_length_is_a_validation_error(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "ECC_NIST_P384")
    for length in (32, 47, 49, 64):
        message = await expect_error(
            stub.Sign(
                pb.SignRequest(
                    key_id=key.key_id,
                    message=b"d" * length,
                    message_type="DIGEST",
                    signing_algorithm="ECDSA_SHA_384",
                )
            ),
            INVALID,
            "ValidationException",
        )
        assert "48 bytes" in message


@pytest.mark.parametrize("spec", ["ML_DSA_44", "ML_DSA_87"])
async def test_ml_dsa_external_mu_signs_what_raw_signs(running_node, spec: str) -> None:
    """mu computed outside (FIPS 204 6.2) gives a signature that verifies as RAW of the
    message, with Meridian and with cryptography; and a RAW signature verifies as mu."""
    stub = running_node.stub
    key = await _key(stub, spec)
    public = (await stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key.key_id))).public_key
    message = b"x" * 10_000  # larger than Sign's 4096-byte limit: the reason for mu
    mu = ml_dsa_mu(raw_ml_dsa_public_key(public), message)
    signed = await stub.Sign(
        pb.SignRequest(
            key_id=key.key_id,
            message=mu,
            message_type="EXTERNAL_MU",
            signing_algorithm="ML_DSA_SHAKE_256",
        )
    )
    verify_locally(public, "ML_DSA_SHAKE_256", message, signed.signature)
    raw = await stub.Sign(
        pb.SignRequest(key_id=key.key_id, message=b"short", signing_algorithm="ML_DSA_SHAKE_256")
    )
    await stub.Verify(
        pb.VerifyRequest(
            key_id=key.key_id,
            message=ml_dsa_mu(raw_ml_dsa_public_key(public), b"short"),
            message_type="EXTERNAL_MU",
            signature=raw.signature,
            signing_algorithm="ML_DSA_SHAKE_256",
        )
    )


@pytest.mark.parametrize(
    ("spec", "fields", "reason"),
    [
        # EXTERNAL_MU is ML-DSA's, and exactly 64 bytes.
        (
            "ECC_NIST_P256",
            {"message_type": "EXTERNAL_MU", "message": b"m" * 64},
            "ValidationException",
        ),
        ("ML_DSA_65", {"message_type": "EXTERNAL_MU", "message": b"m" * 63}, "ValidationException"),
        # ML-DSA has no DIGEST form; Ed25519 (pure) signs RAW only.
        ("ML_DSA_65", {"message_type": "DIGEST", "message": b"m" * 64}, "ValidationException"),
        (
            "ECC_NIST_EDWARDS25519",
            {
                "message_type": "DIGEST",
                "signing_algorithm": "ED25519_SHA_512",
                "message": b"m" * 64,
            },
            "ValidationException",
        ),
        # Ed25519ph is in AWS's model but not in the cryptography package.
        (
            "ECC_NIST_EDWARDS25519",
            {
                "signing_algorithm": "ED25519_PH_SHA_512",
                "message_type": "DIGEST",
                "message": b"m" * 64,
            },
            "UnsupportedOperationException",
        ),
        # An algorithm of another spec.
        ("ECC_NIST_P256", {"signing_algorithm": "ECDSA_SHA_384"}, "InvalidKeyUsageException"),
        ("ECC_NIST_P256", {"signing_algorithm": "RSASSA_PSS_SHA_256"}, "InvalidKeyUsageException"),
        ("ML_DSA_44", {"signing_algorithm": "ED25519_SHA_512"}, "InvalidKeyUsageException"),
        ("ECC_NIST_P256", {"signing_algorithm": ""}, "ValidationException"),
        ("ECC_NIST_P256", {"signing_algorithm": "ECDSA_SHA_1"}, "ValidationException"),
        ("ECC_NIST_P256", {"message_type": "HASHED"}, "ValidationException"),
        ("ECC_NIST_P256", {"message": b""}, "ValidationException"),
        ("ECC_NIST_P256", {"message": b"m" * 4097}, "ValidationException"),
        ("ECC_NIST_P256", {"grant_tokens": ["t"] * 11}, "ValidationException"),
    ],
)
async def test_sign_refuses_bad_input(running_node, spec: str, fields: dict, reason: str) -> None:
    stub = running_node.stub
    key = await _key(stub, spec)
    algorithm = {"ECC_NIST_P256": "ECDSA_SHA_256"}.get(spec, "ML_DSA_SHAKE_256")
    request = {"message": b"m", "signing_algorithm": algorithm, **fields}
    await expect_error(stub.Sign(pb.SignRequest(key_id=key.key_id, **request)), INVALID, reason)


async def test_verify_refuses_signatures_of_any_wrong_shape(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "ECC_NIST_P256")
    good = (
        await stub.Sign(
            pb.SignRequest(key_id=key.key_id, message=b"m", signing_algorithm="ECDSA_SHA_256")
        )
    ).signature
    for signature, reason in (
        (good[:-1], "KMSInvalidSignatureException"),
        (good + b"\x00", "KMSInvalidSignatureException"),
        (b"\x30\x00", "KMSInvalidSignatureException"),
        (b"\xff" * 6144, "KMSInvalidSignatureException"),
        (b"", "ValidationException"),
        (b"\x00" * 6145, "ValidationException"),
    ):
        await expect_error(
            stub.Verify(
                pb.VerifyRequest(
                    key_id=key.key_id,
                    message=b"m",
                    signature=signature,
                    signing_algorithm="ECDSA_SHA_256",
                )
            ),
            INVALID,
            reason,
        )


async def test_keys_sign_only_with_the_right_usage_and_state(running_node) -> None:
    stub = running_node.stub
    symmetric = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    agreement = await _key(stub, "ECC_NIST_P256", "KEY_AGREEMENT")
    for key in (symmetric, agreement):
        await expect_error(
            stub.Sign(
                pb.SignRequest(key_id=key.key_id, message=b"m", signing_algorithm="ECDSA_SHA_256")
            ),
            INVALID,
            "InvalidKeyUsageException",
        )
    await expect_error(
        stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=symmetric.key_id)),
        INVALID,
        "UnsupportedOperationException",
    )
    hmac_key = await _key(stub, "HMAC_256", "GENERATE_VERIFY_MAC")
    await expect_error(
        stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=hmac_key.key_id)),
        INVALID,
        "UnsupportedOperationException",
    )
    signer = await _key(stub, "ECC_SECG_P256K1")
    await stub.DisableKey(pb.DisableKeyRequest(key_id=signer.key_id))
    for call in (
        stub.Sign(
            pb.SignRequest(key_id=signer.key_id, message=b"m", signing_algorithm="ECDSA_SHA_256")
        ),
        stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=signer.key_id)),
    ):
        await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION, "DisabledException")
    await stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=signer.key_id))
    await expect_error(
        stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=signer.key_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )


async def test_signing_keys_work_through_aliases(running_node) -> None:
    stub = running_node.stub
    key = await _key(stub, "ECC_NIST_EDWARDS25519")
    await stub.CreateAlias(
        pb.CreateAliasRequest(alias_name="alias/signer", target_key_id=key.key_id)
    )
    signed = await stub.Sign(
        pb.SignRequest(key_id="alias/signer", message=b"m", signing_algorithm="ED25519_SHA_512")
    )
    assert signed.key_id == key.arn
    # Ed25519 is deterministic: the same key and message give the same signature.
    again = await stub.Sign(
        pb.SignRequest(key_id=key.arn, message=b"m", signing_algorithm="ED25519_SHA_512")
    )
    assert again.signature == signed.signature
    assert len(signed.signature) == 64
