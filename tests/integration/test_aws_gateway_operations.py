"""boto3 through the AWS endpoint for the operations beyond the foundation's.

Asymmetric and HMAC keys, data key pairs, rotation, key policies, grants and key usage
exercise the translation's harder shapes: nested structures, lists of structures,
timestamps, DER blobs, integers and booleans in both directions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import ACCOUNT, PRINCIPAL, GatewayNode, gateway_node


@pytest.fixture(scope="module")
def gateway(test_pki, tmp_path_factory) -> Iterator[GatewayNode]:
    with gateway_node(test_pki, tmp_path_factory.mktemp("gateway-ops") / "data") as node:
        yield node


@pytest.fixture(scope="module")
def kms(gateway) -> Any:
    return gateway.client()


def test_sign_verify_and_public_key(kms) -> None:
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert key["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    assert "EncryptionAlgorithms" not in key
    message = b"a message to sign"
    signed = kms.sign(KeyId=key["KeyId"], Message=message, SigningAlgorithm="ECDSA_SHA_256")
    assert signed["KeyId"] == key["Arn"]
    digest = hashlib.sha256(message).digest()
    verified = kms.verify(
        KeyId=key["KeyId"],
        Message=digest,
        MessageType="DIGEST",
        Signature=signed["Signature"],
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert verified["SignatureValid"] is True
    public = kms.get_public_key(KeyId=key["KeyId"])
    assert public["KeySpec"] == "ECC_NIST_P256"
    # The DER public key arrives intact: verify the signature locally with it.
    loaded = serialization.load_der_public_key(public["PublicKey"])
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    loaded.verify(signed["Signature"], message, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(botocore.exceptions.ClientError) as invalid:
        kms.verify(
            KeyId=key["KeyId"],
            Message=b"another message",
            Signature=signed["Signature"],
            SigningAlgorithm="ECDSA_SHA_256",
        )
    assert invalid.value.response["Error"]["Code"] == "KMSInvalidSignatureException"


def test_mac_and_data_key_pairs(kms) -> None:
    mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    assert mac_key["MacAlgorithms"] == ["HMAC_SHA_256"]
    mac = kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    checked = kms.verify_mac(
        KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac["Mac"]
    )
    assert checked["MacValid"] is True

    wrapping = kms.create_key()["KeyMetadata"]["KeyId"]
    pair = kms.generate_data_key_pair(KeyId=wrapping, KeyPairSpec="ECC_NIST_P256")
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    public = serialization.load_der_public_key(pair["PublicKey"])
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    opened = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])
    assert opened["Plaintext"] == pair["PrivateKeyPlaintext"]
    blind = kms.generate_data_key_pair_without_plaintext(KeyId=wrapping, KeyPairSpec="RSA_2048")
    assert "PrivateKeyPlaintext" not in blind
    assert blind["KeyPairSpec"] == "RSA_2048"


def test_rotation(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 180
    assert "NextRotationDate" in status
    before = kms.encrypt(KeyId=key_id, Plaintext=b"old")["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key_id)
    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [rotation["RotationType"] for rotation in rotations] == ["ON_DEMAND"]
    assert rotations[0]["RotationDate"].year >= 2026
    assert kms.decrypt(CiphertextBlob=before)["Plaintext"] == b"old"
    kms.disable_key_rotation(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_key_policies_and_grants(gateway, kms) -> None:
    key = kms.create_key()["KeyMetadata"]
    assert kms.list_key_policies(KeyId=key["KeyId"])["PolicyNames"] == ["default"]
    policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"])["Policy"])
    assert policy["Statement"], policy

    grantee = f"arn:meridian:iam::{ACCOUNT}:user/carol"
    grant = kms.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=grantee,
        Operations=["Encrypt", "Decrypt"],
        Constraints={"EncryptionContextSubset": {"tenant": "42"}},
        Name="carol-orders",
    )
    grants = kms.list_grants(KeyId=key["KeyId"])["Grants"]
    assert [entry["GrantId"] for entry in grants] == [grant["GrantId"]]
    assert grants[0]["Constraints"] == {"EncryptionContextSubset": {"tenant": "42"}}
    assert sorted(grants[0]["Operations"]) == ["Decrypt", "Encrypt"]
    assert grants[0]["CreationDate"].year >= 2026

    # The grant lets carol, signing with her own access key, encrypt under the key.
    carol = gateway.client(key=gateway.create_access_key("carol"))
    encrypted = carol.encrypt(
        KeyId=key["Arn"], Plaintext=b"granted", EncryptionContext={"tenant": "42"}
    )
    assert encrypted["KeyId"] == key["Arn"]
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        carol.encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext={"tenant": "7"})
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"

    kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])
    assert kms.list_grants(KeyId=key["KeyId"])["Grants"] == []

    # Carol's Encrypt is the key's last use; its request id is the gateway's.
    usage = kms.get_key_last_usage(KeyId=key["KeyId"])
    assert usage["KeyLastUsage"]["Operation"] == "Encrypt"
    assert usage["KeyLastUsage"]["KmsRequestId"] == encrypted["ResponseMetadata"]["RequestId"]
    assert usage["KeyCreationDate"] == key["CreationDate"]


def test_the_admin_principal_is_the_caller(gateway, kms) -> None:
    key = kms.create_key()["KeyMetadata"]
    grant = kms.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=f"arn:meridian:iam::{ACCOUNT}:user/{PRINCIPAL}",
        Operations=["Decrypt"],
    )
    retirable = kms.list_retirable_grants(
        RetiringPrincipal=f"arn:meridian:iam::{ACCOUNT}:user/{PRINCIPAL}"
    )
    assert isinstance(retirable["Grants"], list)
    kms.retire_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])
