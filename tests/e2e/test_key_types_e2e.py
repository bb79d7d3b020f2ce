"""Key types, rotation and import on a real node process: both SDK twins, the command line,
and interoperability with the ``openssl`` command line using only GetPublicKey's output."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from key_type_support import SIGNING_MATRIX, pkcs8, verify_locally, wrap_for_import

from meridian.client import AsyncKmsClient, KmsClient
from meridian.client.errors import (
    IncorrectKeyMaterialException,
    KMSInvalidSignatureException,
    UnsupportedOperationException,
)

pytestmark = pytest.mark.e2e
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def run_cli(cluster_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meridian", "kms", "--cluster-file", str(cluster_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_json(cluster_file: Path, *args: str) -> dict:
    done = run_cli(cluster_file, *args)
    assert done.returncode == 0, done.stderr
    document: dict = json.loads(done.stdout)
    return document


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_openssl
@pytest.mark.parametrize(
    ("spec", "algorithm", "openssl_args"),
    [
        ("ECC_NIST_P256", "ECDSA_SHA_256", ["dgst", "-sha256"]),
        ("ECC_NIST_P384", "ECDSA_SHA_384", ["dgst", "-sha384"]),
        ("ECC_NIST_P521", "ECDSA_SHA_512", ["dgst", "-sha512"]),
        ("ECC_SECG_P256K1", "ECDSA_SHA_256", ["dgst", "-sha256"]),
        (
            "RSA_2048",
            "RSASSA_PSS_SHA_256",
            ["dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"],
        ),
        ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_512", ["dgst", "-sha512"]),
    ],
)
def test_openssl_verifies_signatures_from_get_public_key_alone(
    single_region, tmp_path: Path, spec: str, algorithm: str, openssl_args: list[str]
) -> None:
    message = tmp_path / "message.bin"
    message.write_bytes(b"signed by Meridian, checked by OpenSSL\n")
    with KmsClient.from_cluster_file(single_region.file) as kms:
        key = kms.create_key(key_spec=spec, key_usage="SIGN_VERIFY").key_metadata
        public = tmp_path / "public.der"
        public.write_bytes(kms.get_public_key(key_id=key.key_id).public_key)
        signature = tmp_path / "signature.bin"
        signed = kms.sign(key_id=key.arn, message=message.read_bytes(), signing_algorithm=algorithm)
        signature.write_bytes(signed.signature)
        assert signed.region == "us-east-1"
    checked = openssl(
        *openssl_args,
        "-keyform",
        "DER",
        "-verify",
        str(public),
        "-signature",
        str(signature),
        str(message),
    )
    assert checked.returncode == 0 and "Verified OK" in checked.stdout, checked
    message.write_bytes(b"something else\n")
    refused = openssl(
        *openssl_args,
        "-keyform",
        "DER",
        "-verify",
        str(public),
        "-signature",
        str(signature),
        str(message),
    )
    assert refused.returncode != 0


@needs_openssl
def test_openssl_verifies_ed25519_and_encrypts_for_rsa(single_region, tmp_path: Path) -> None:
    message = tmp_path / "message.bin"
    message.write_bytes(b"pure Ed25519")
    with KmsClient.from_cluster_file(single_region.file) as kms:
        signer = kms.create_key(key_spec="ECC_NIST_EDWARDS25519", key_usage="SIGN_VERIFY")
        public = tmp_path / "ed25519.der"
        public.write_bytes(kms.get_public_key(key_id=signer.key_metadata.key_id).public_key)
        signature = tmp_path / "ed25519.sig"
        signature.write_bytes(
            kms.sign(
                key_id=signer.key_metadata.key_id,
                message=message.read_bytes(),
                signing_algorithm="ED25519_SHA_512",
            ).signature
        )
        checked = openssl(
            "pkeyutl",
            "-verify",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            str(public),
            "-rawin",
            "-in",
            str(message),
            "-sigfile",
            str(signature),
        )
        assert checked.returncode == 0, checked

        # RSA ciphertext made by OpenSSL with GetPublicKey's output decrypts in Meridian.
        rsa_key = kms.create_key(key_spec="RSA_3072", key_usage="ENCRYPT_DECRYPT").key_metadata
        rsa_public = tmp_path / "rsa.der"
        rsa_public.write_bytes(kms.get_public_key(key_id=rsa_key.key_id).public_key)
        ciphertext = tmp_path / "ciphertext.bin"
        encrypted = openssl(
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            str(rsa_public),
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            str(message),
            "-out",
            str(ciphertext),
        )
        assert encrypted.returncode == 0, encrypted
        decrypted = kms.decrypt(
            ciphertext_blob=ciphertext.read_bytes(),
            key_id=rsa_key.arn,
            encryption_algorithm="RSAES_OAEP_SHA_256",
        )
        assert decrypted.plaintext == message.read_bytes()
        assert decrypted.encryption_algorithm == "RSAES_OAEP_SHA_256"


def test_sdk_signs_every_spec_and_cryptography_verifies(single_region) -> None:
    with KmsClient.from_cluster_file(single_region.file) as kms:
        for spec in ("ML_DSA_65", "ECC_NIST_EDWARDS25519", "ECC_NIST_P256"):
            algorithm = SIGNING_MATRIX[spec][0]
            key = kms.create_key(key_spec=spec, key_usage="SIGN_VERIFY").key_metadata
            assert key.signing_algorithms == SIGNING_MATRIX[spec]
            public = kms.get_public_key(key_id=key.key_id)
            assert public.key_spec == spec and public.signing_algorithms == SIGNING_MATRIX[spec]
            signed = kms.sign(key_id=key.key_id, message=b"m", signing_algorithm=algorithm)
            verify_locally(public.public_key, algorithm, b"m", signed.signature)
            assert kms.verify(
                key_id=key.key_id,
                message=b"m",
                signature=signed.signature,
                signing_algorithm=algorithm,
            ).signature_valid
            with pytest.raises(KMSInvalidSignatureException) as caught:
                kms.verify(
                    key_id=key.key_id,
                    message=b"n",
                    signature=signed.signature,
                    signing_algorithm=algorithm,
                )
            assert caught.value.request_id
        symmetric = kms.create_key().key_metadata
        with pytest.raises(UnsupportedOperationException):
            kms.get_public_key(key_id=symmetric.key_id)


async def test_async_sdk_key_types(single_region) -> None:
    async with AsyncKmsClient.from_cluster_file(single_region.file) as kms:
        kem = (
            await kms.create_key(key_spec="ML_KEM_1024", key_usage="ENCAPSULATE_DECAPSULATE")
        ).key_metadata
        sealed = await kms.encapsulate(key_id=kem.key_id, encapsulation_algorithm="ML_KEM")
        opened = await kms.decapsulate(
            key_id=kem.key_id,
            shared_secret_ciphertext_blob=sealed.shared_secret_ciphertext_blob,
            encapsulation_algorithm="ML_KEM",
        )
        assert opened.shared_secret == sealed.shared_secret
        assert sealed.shared_secret.hex() not in repr(sealed)
        mac_key = (
            await kms.create_key(key_spec="HMAC_512", key_usage="GENERATE_VERIFY_MAC")
        ).key_metadata
        tag = await kms.generate_mac(
            key_id=mac_key.key_id, message=b"m", mac_algorithm="HMAC_SHA_512"
        )
        assert (
            await kms.verify_mac(
                key_id=mac_key.key_id, message=b"m", mac=tag.mac, mac_algorithm="HMAC_SHA_512"
            )
        ).mac_valid
        wrapping = (await kms.create_key()).key_metadata
        pair = await kms.generate_data_key_pair(
            key_id=wrapping.key_id, key_pair_spec="ECC_NIST_P384", encryption_context={"k": "v"}
        )
        opened_private = await kms.decrypt(
            ciphertext_blob=pair.private_key_ciphertext_blob, encryption_context={"k": "v"}
        )
        assert opened_private.plaintext == pair.private_key_plaintext
        await kms.rotate_key_on_demand(key_id=wrapping.key_id)
        rotations = [
            entry async for entry in kms.iter_key_rotations(key_id=wrapping.key_id, limit=1)
        ]
        assert [entry.rotation_type for entry in rotations] == ["ON_DEMAND"]


def test_cli_sign_verify_and_rotation(single_region, tmp_path: Path) -> None:
    cluster_file = single_region.file
    key = cli_json(
        cluster_file, "create-key", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY"
    )["KeyMetadata"]
    assert key["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    message = tmp_path / "message.bin"
    message.write_bytes(b"from the command line")
    signed = cli_json(
        cluster_file,
        "sign",
        "--key-id",
        key["KeyId"],
        "--message",
        f"fileb://{message}",
        "--signing-algorithm",
        "ECDSA_SHA_256",
    )
    assert signed["KeyId"] == key["Arn"] and signed["SigningAlgorithm"] == "ECDSA_SHA_256"
    signature = tmp_path / "signature.bin"
    signature.write_bytes(base64.b64decode(signed["Signature"]))
    verified = cli_json(
        cluster_file,
        "verify",
        "--key-id",
        key["Arn"],
        "--message",
        f"fileb://{message}",
        "--signature",
        f"fileb://{signature}",
        "--signing-algorithm",
        "ECDSA_SHA_256",
    )
    assert verified["SignatureValid"] is True
    refused = run_cli(
        cluster_file,
        "verify",
        "--key-id",
        key["Arn"],
        "--message",
        base64.b64encode(b"x").decode(),
        "--signature",
        f"fileb://{signature}",
        "--signing-algorithm",
        "ECDSA_SHA_256",
    )
    assert refused.returncode == 254
    assert "KMSInvalidSignatureException" in refused.stderr
    public = run_cli(
        cluster_file,
        "get-public-key",
        "--key-id",
        key["KeyId"],
        "--query",
        "PublicKey",
        "--output",
        "text",
    )
    assert public.returncode == 0, public.stderr
    verify_locally(
        base64.b64decode(public.stdout.strip()),
        "ECDSA_SHA_256",
        message.read_bytes(),
        signature.read_bytes(),
    )

    symmetric = cli_json(cluster_file, "create-key")["KeyMetadata"]
    run = ["--key-id", symmetric["KeyId"]]
    cli_json(cluster_file, "enable-key-rotation", *run, "--rotation-period-in-days", "180")
    status = cli_json(cluster_file, "get-key-rotation-status", *run)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 180
    assert "NextRotationDate" in status
    assert cli_json(cluster_file, "rotate-key-on-demand", *run)["KeyId"] == symmetric["KeyId"]
    rotations = cli_json(cluster_file, "list-key-rotations", *run)["Rotations"]
    assert [entry["RotationType"] for entry in rotations] == ["ON_DEMAND"]
    everything = cli_json(
        cluster_file, "list-key-rotations", *run, "--include-key-material", "ALL_KEY_MATERIAL"
    )["Rotations"]
    assert [entry["KeyMaterialState"] for entry in everything] == ["NON_CURRENT", "CURRENT"]
    bad = run_cli(cluster_file, "enable-key-rotation", *run, "--rotation-period-in-days", "30")
    assert bad.returncode == 254 and "ValidationException" in bad.stderr


def test_cli_imports_key_material(single_region, tmp_path: Path) -> None:
    """BYOK as an AWS CLI user does it: parameters, wrap locally, import, use."""
    cluster_file = single_region.file
    key = cli_json(
        cluster_file,
        "create-key",
        "--origin",
        "EXTERNAL",
        "--key-spec",
        "ECC_NIST_P256",
        "--key-usage",
        "SIGN_VERIFY",
    )["KeyMetadata"]
    assert key["KeyState"] == "PendingImport"
    parameters = cli_json(
        cluster_file,
        "get-parameters-for-import",
        "--key-id",
        key["KeyId"],
        "--wrapping-algorithm",
        "RSA_AES_KEY_WRAP_SHA_256",
        "--wrapping-key-spec",
        "RSA_2048",
    )
    private = ec.generate_private_key(ec.SECP256R1())
    token = tmp_path / "token.bin"
    token.write_bytes(base64.b64decode(parameters["ImportToken"]))
    wrapped = tmp_path / "wrapped.bin"
    wrapped.write_bytes(
        wrap_for_import(
            base64.b64decode(parameters["PublicKey"]), "RSA_AES_KEY_WRAP_SHA_256", pkcs8(private)
        )
    )
    import_args = [
        "import-key-material",
        "--key-id",
        key["KeyId"],
        "--import-token",
        f"fileb://{token}",
        "--encrypted-key-material",
        f"fileb://{wrapped}",
    ]
    # ValidTo more than a year ahead is refused; material that does not expire is taken.
    too_late = run_cli(cluster_file, *import_args, "--valid-to", "2099-01-01T00:00:00Z")
    assert too_late.returncode == 254 and "ValidationException" in too_late.stderr
    imported = cli_json(
        cluster_file, *import_args, "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE"
    )
    assert len(imported["KeyMaterialId"]) == 64
    with KmsClient.from_cluster_file(cluster_file) as kms:
        described = kms.describe_key(key_id=key["KeyId"]).key_metadata
        assert described.key_state == "Enabled"
        assert described.expiration_model == "KEY_MATERIAL_DOES_NOT_EXPIRE"
        assert kms.get_public_key(
            key_id=key["KeyId"]
        ).public_key == private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signed = kms.sign(key_id=key["KeyId"], message=b"m", signing_algorithm="ECDSA_SHA_256")
        verify_locally(
            kms.get_public_key(key_id=key["KeyId"]).public_key,
            "ECDSA_SHA_256",
            b"m",
            signed.signature,
        )
        fresh = kms.get_parameters_for_import(
            key_id=key["KeyId"],
            wrapping_algorithm="RSAES_OAEP_SHA_256",
            wrapping_key_spec="RSA_2048",
        )
        with pytest.raises(IncorrectKeyMaterialException):
            kms.import_key_material(
                key_id=key["KeyId"],
                import_token=fresh.import_token,
                encrypted_key_material=wrap_for_import(
                    fresh.public_key, "RSAES_OAEP_SHA_256", os.urandom(32)
                ),
                expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
            )
        deleted = kms.delete_imported_key_material(key_id=key["KeyId"])
        assert deleted.key_material_id is not None
        assert kms.describe_key(key_id=key["KeyId"]).key_metadata.key_state == "PendingImport"
