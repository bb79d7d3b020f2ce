"""The crypto recipes of the key types against published vectors and negative vectors.

Published: NIST ACVP ML-DSA and ML-KEM KATs, RFC 8032 Ed25519, NIST CAVP RSASSA-PKCS1-v1_5
and ECDSA SigVer, Project Wycheproof RSASSA-PSS (salt = digest length, as AWS), the pyca
OAEP-SHA2 set, NIST KAS ECDH and RFC 4231 HMAC (tests/vectors/key_types_v1.json says
where each comes from). Negative vectors are the published ones with one thing changed.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, rsa
from key_type_support import ml_dsa_mu, pkcs8, vectors

from meridian.server.domain.crypto import ecdh, kem, key_pairs, mac, rsa_oaep, signatures
from meridian.server.domain.crypto.signatures import Form
from meridian.server.domain.errors import (
    InvalidCiphertextException,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    ValidationException,
)
from meridian.server.domain.key_specs import MacAlgorithm, SigningAlgorithm
from meridian.server.domain.model import EncryptionAlgorithm, KeySpec

_ML_DSA = {
    "ML_DSA_44": mldsa.MLDSA44PrivateKey,
    "ML_DSA_65": mldsa.MLDSA65PrivateKey,
    "ML_DSA_87": mldsa.MLDSA87PrivateKey,
}
_ML_KEM = {"ML_KEM_768": mlkem.MLKEM768PrivateKey, "ML_KEM_1024": mlkem.MLKEM1024PrivateKey}


def _spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize("vector", vectors()["ml_dsa"], ids=lambda v: v["key_spec"])
def test_ml_dsa_kat_seed_gives_the_public_key_and_mu_verifies(vector) -> None:
    spec = KeySpec(vector["key_spec"])
    private = _ML_DSA[vector["key_spec"]].from_seed_bytes(bytes.fromhex(vector["seed"]))
    pair = key_pairs.check_imported(spec, pkcs8(private))
    assert pair.public_spki.endswith(bytes.fromhex(vector["public_key"]))
    mu = ml_dsa_mu(
        bytes.fromhex(vector["public_key"]),
        bytes.fromhex(vector["message"]),
        bytes.fromhex(vector["context"]),
    )
    signature = bytes.fromhex(vector["signature"])
    algorithm = SigningAlgorithm.ML_DSA_SHAKE_256
    signatures.verify(spec, pair.public_spki, algorithm, mu, signature, Form.EXTERNAL_MU)
    for bad_mu, bad_signature in ((_flip(mu), signature), (mu, _flip(signature, 100))):
        with pytest.raises(KMSInvalidSignatureException):
            signatures.verify(
                spec, pair.public_spki, algorithm, bad_mu, bad_signature, Form.EXTERNAL_MU
            )
    # A signature over mu made here verifies as RAW of the message only with no context.
    own = signatures.sign(spec, pair.private_pkcs8, algorithm, mu, Form.EXTERNAL_MU)
    signatures.verify(spec, pair.public_spki, algorithm, mu, own, Form.EXTERNAL_MU)
    with pytest.raises(KMSInvalidSignatureException):
        signatures.verify(
            spec, pair.public_spki, algorithm, bytes.fromhex(vector["message"]), own, Form.RAW
        )


@pytest.mark.parametrize("vector", vectors()["ml_kem"], ids=lambda v: v["key_spec"])
def test_ml_kem_kat_decapsulation(vector) -> None:
    spec = KeySpec(vector["key_spec"])
    private = _ML_KEM[vector["key_spec"]].from_seed_bytes(bytes.fromhex(vector["seed"]))
    pair = key_pairs.check_imported(spec, pkcs8(private))
    assert pair.public_spki.endswith(bytes.fromhex(vector["public_key"]))
    assert (
        kem.decapsulate(spec, pair.private_pkcs8, bytes.fromhex(vector["ciphertext"])).hex()
        == (vector["shared_secret"])
    )
    # The KAT's implicit-rejection case: a modified ciphertext gives the published
    # pseudo-random secret, not an error.
    rejected = kem.decapsulate(
        spec, pair.private_pkcs8, bytes.fromhex(vector["rejected_ciphertext"])
    )
    assert rejected.hex() == vector["rejected_shared_secret"]
    with pytest.raises(InvalidCiphertextException):
        kem.decapsulate(spec, pair.private_pkcs8, bytes.fromhex(vector["ciphertext"])[:-1])


@pytest.mark.parametrize("vector", vectors()["ed25519"], ids=lambda v: v["public_key"][:8])
def test_rfc_8032_ed25519(vector) -> None:
    spec = KeySpec.ECC_NIST_EDWARDS25519
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["seed"]))
    pair = key_pairs.check_imported(spec, pkcs8(private))
    message = bytes.fromhex(vector["message"])
    algorithm = SigningAlgorithm.ED25519_SHA_512
    assert (
        signatures.sign(spec, pair.private_pkcs8, algorithm, message, Form.RAW).hex()
        == (vector["signature"])
    )
    signatures.verify(
        spec, pair.public_spki, algorithm, message, bytes.fromhex(vector["signature"]), Form.RAW
    )
    with pytest.raises(KMSInvalidSignatureException):
        signatures.verify(
            spec,
            pair.public_spki,
            algorithm,
            message + b"x",
            bytes.fromhex(vector["signature"]),
            Form.RAW,
        )


def test_nist_rsassa_pkcs1_v1_5_sha256() -> None:
    vector = vectors()["rsa_pkcs1_sha256_2048"]
    public = rsa.RSAPublicNumbers(
        int(vector["public_exponent"], 16), int(vector["modulus"], 16)
    ).public_key()
    spki = _spki(public)
    algorithm = SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_256
    for case in vector["cases"]:
        message, signature = bytes.fromhex(case["message"]), bytes.fromhex(case["signature"])
        signatures.verify(KeySpec.RSA_2048, spki, algorithm, message, signature, Form.RAW)
        with pytest.raises(KMSInvalidSignatureException):
            signatures.verify(
                KeySpec.RSA_2048, spki, algorithm, message, _flip(signature, 10), Form.RAW
            )
        # The same signature is not a PSS signature.
        with pytest.raises(KMSInvalidSignatureException):
            signatures.verify(
                KeySpec.RSA_2048,
                spki,
                SigningAlgorithm.RSASSA_PSS_SHA_256,
                message,
                signature,
                Form.RAW,
            )


def test_wycheproof_rsassa_pss_sha256_salt_32() -> None:
    vector = vectors()["rsa_pss_sha256_2048"]
    spki = bytes.fromhex(vector["public_key"])
    algorithm = SigningAlgorithm.RSASSA_PSS_SHA_256
    for case in vector["cases"]:
        message, signature = bytes.fromhex(case["message"]), bytes.fromhex(case["signature"])
        signatures.verify(KeySpec.RSA_2048, spki, algorithm, message, signature, Form.RAW)
        with pytest.raises(KMSInvalidSignatureException):
            signatures.verify(
                KeySpec.RSA_2048, spki, algorithm, message + b"\x00", signature, Form.RAW
            )


def test_nist_ecdsa_p256_sigver_passes_and_fails_as_published() -> None:
    algorithm = SigningAlgorithm.ECDSA_SHA_256
    outcomes = set()
    for case in vectors()["ecdsa_p256_sha256"]:
        public = ec.EllipticCurvePublicNumbers(
            int(case["qx"], 16), int(case["qy"], 16), ec.SECP256R1()
        ).public_key()
        call = (
            KeySpec.ECC_NIST_P256,
            _spki(public),
            algorithm,
            bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]),
            Form.RAW,
        )
        if case["valid"]:
            signatures.verify(*call)
        else:
            with pytest.raises(KMSInvalidSignatureException):
                signatures.verify(*call)
        outcomes.add(case["valid"])
    assert outcomes == {True, False}, "the set holds both kinds"


def test_pyca_oaep_sha256_vectors_decrypt() -> None:
    vector = vectors()["rsa_oaep_sha256_2048"]
    pair = key_pairs.check_imported(KeySpec.RSA_2048, bytes.fromhex(vector["private_key_pkcs8"]))
    algorithm = EncryptionAlgorithm.RSAES_OAEP_SHA_256
    for case in vector["cases"]:
        ciphertext = bytes.fromhex(case["ciphertext"])
        assert (
            rsa_oaep.decrypt(KeySpec.RSA_2048, pair.private_pkcs8, algorithm, ciphertext).hex()
            == (case["message"])
        )
        with pytest.raises(InvalidCiphertextException):
            rsa_oaep.decrypt(KeySpec.RSA_2048, pair.private_pkcs8, algorithm, _flip(ciphertext, 5))
        with pytest.raises(InvalidCiphertextException):
            rsa_oaep.decrypt(
                KeySpec.RSA_2048,
                pair.private_pkcs8,
                EncryptionAlgorithm.RSAES_OAEP_SHA_1,
                ciphertext,
            )
    assert (
        rsa_oaep.plaintext_bytes_max(KeySpec.RSA_2048, EncryptionAlgorithm.RSAES_OAEP_SHA_1) == 214
    )
    assert rsa_oaep.plaintext_bytes_max(KeySpec.RSA_4096, algorithm) == 446


def test_nist_kas_ecdh_p256() -> None:
    for case in vectors()["ecdh_p256"]:
        private = ec.derive_private_key(int(case["private_value"], 16), ec.SECP256R1())
        peer = ec.EllipticCurvePublicNumbers(
            int(case["peer_x"], 16), int(case["peer_y"], 16), ec.SECP256R1()
        ).public_key()
        secret = ecdh.derive_shared_secret(KeySpec.ECC_NIST_P256, pkcs8(private), _spki(peer))
        assert secret.hex() == case["shared_secret"]
        with pytest.raises(ValidationException):
            ecdh.derive_shared_secret(
                KeySpec.ECC_NIST_P256,
                pkcs8(private),
                _spki(ec.generate_private_key(ec.SECP384R1()).public_key()),
            )


@pytest.mark.parametrize("case", vectors()["hmac"], ids=lambda c: c["algorithm"])
def test_rfc_4231_hmac(case) -> None:
    algorithm = MacAlgorithm(case["algorithm"])
    key, message = bytes.fromhex(case["key"]), bytes.fromhex(case["message"])
    assert mac.generate(key, algorithm, message).hex() == case["mac"]
    mac.verify(key, algorithm, message, bytes.fromhex(case["mac"]))
    for wrong in (_flip(bytes.fromhex(case["mac"])), bytes.fromhex(case["mac"])[:-1], b""):
        with pytest.raises(KMSInvalidMacException):
            mac.verify(key, algorithm, message, wrong)


@pytest.mark.parametrize(
    "spec",
    [
        spec
        for spec in KeySpec
        if key_pairs.is_key_pair_spec(spec) and spec not in key_pairs.RSA_BITS
    ],
)
def test_generated_pairs_load_and_round_trip_their_checks(spec: KeySpec) -> None:
    pair = key_pairs.generate(spec)
    assert key_pairs.public_spki_of(spec, pair.private_pkcs8) == pair.public_spki
    assert key_pairs.check_imported(spec, pair.private_pkcs8) == pair
    assert "hidden" in repr(pair) and pair.private_pkcs8.hex() not in repr(pair)
    other = KeySpec.ECC_NIST_P256 if spec is not KeySpec.ECC_NIST_P256 else KeySpec.ECC_NIST_P384
    with pytest.raises(ValueError, match="not a"):
        key_pairs.check_imported(other, pair.private_pkcs8)
    with pytest.raises(ValueError, match="not a"):
        key_pairs.load_public(other, pair.public_spki)


def test_rsa_private_keys_of_another_size_are_refused() -> None:
    small = rsa.generate_private_key(65537, 1024)
    with pytest.raises(ValueError, match="not a RSA_2048"):
        key_pairs.check_imported(KeySpec.RSA_2048, pkcs8(small))
    with pytest.raises(ValueError, match="not a RSA_2048"):
        key_pairs.load_public(KeySpec.RSA_2048, _spki(small.public_key()))
    with pytest.raises(ValueError, match="PKCS#8"):
        key_pairs.check_imported(KeySpec.RSA_2048, b"\x30\x03\x02\x01\x00")
