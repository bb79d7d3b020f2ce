"""What the key-type tests share: the published vectors, and what a customer does with
``cryptography`` outside Meridian (verify a signature with GetPublicKey's output, wrap
key material for import, compute ML-DSA's external mu).

These helpers deliberately use only ``cryptography`` and ``hashlib``, never Meridian's
recipes, so the tests hold Meridian to independent implementations.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa, utils

from meridian.proto.kms.v1 import kms_pb2 as pb

VECTORS_FILE = Path(__file__).parent / "vectors" / "key_types_v1.json"

# Every spec x usage Meridian serves, with its algorithms: the matrix of docs/key-types.md.
SIGNING_MATRIX: dict[str, tuple[str, ...]] = {
    "RSA_2048": (
        "RSASSA_PSS_SHA_256",
        "RSASSA_PSS_SHA_384",
        "RSASSA_PSS_SHA_512",
        "RSASSA_PKCS1_V1_5_SHA_256",
        "RSASSA_PKCS1_V1_5_SHA_384",
        "RSASSA_PKCS1_V1_5_SHA_512",
    ),
    "RSA_3072": ("RSASSA_PSS_SHA_384", "RSASSA_PKCS1_V1_5_SHA_256"),
    "RSA_4096": ("RSASSA_PSS_SHA_512", "RSASSA_PKCS1_V1_5_SHA_512"),
    "ECC_NIST_P256": ("ECDSA_SHA_256",),
    "ECC_NIST_P384": ("ECDSA_SHA_384",),
    "ECC_NIST_P521": ("ECDSA_SHA_512",),
    "ECC_SECG_P256K1": ("ECDSA_SHA_256",),
    "ECC_NIST_EDWARDS25519": ("ED25519_SHA_512",),
    "ML_DSA_44": ("ML_DSA_SHAKE_256",),
    "ML_DSA_65": ("ML_DSA_SHAKE_256",),
    "ML_DSA_87": ("ML_DSA_SHAKE_256",),
}

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA_256": hashes.SHA256,
    "SHA_384": hashes.SHA384,
    "SHA_512": hashes.SHA512,
}


@cache
def vectors() -> dict[str, Any]:
    return json.loads(VECTORS_FILE.read_text())


def hash_of(algorithm: str) -> hashes.HashAlgorithm:
    return _HASHES[algorithm[-7:]]()


def digest(algorithm: str, message: bytes) -> bytes:
    hasher = hashes.Hash(hash_of(algorithm))
    hasher.update(message)
    return hasher.finalize()


def verify_locally(
    public_der: bytes, algorithm: str, message: bytes, signature: bytes, *, prehashed: bool = False
) -> None:
    """Verify as a customer would, from GetPublicKey's DER; raises InvalidSignature."""
    key = serialization.load_der_public_key(public_der)
    if algorithm.startswith("RSASSA_"):
        assert isinstance(key, rsa.RSAPublicKey)
        chosen = hash_of(algorithm)
        scheme: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(chosen), salt_length=chosen.digest_size)
            if "_PSS_" in algorithm
            else padding.PKCS1v15()
        )
        key.verify(signature, message, scheme, utils.Prehashed(chosen) if prehashed else chosen)
    elif algorithm.startswith("ECDSA_"):
        assert isinstance(key, ec.EllipticCurvePublicKey)
        chosen = hash_of(algorithm)
        key.verify(signature, message, ec.ECDSA(utils.Prehashed(chosen) if prehashed else chosen))
    elif algorithm == "ED25519_SHA_512":
        assert isinstance(key, ed25519.Ed25519PublicKey)
        key.verify(signature, message)
    else:
        assert isinstance(
            key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
        )
        key.verify(signature, message)


def ml_dsa_mu(public_key_raw: bytes, message: bytes, context: bytes = b"") -> bytes:
    """FIPS 204's message representative: SHAKE256(tr || 0 || len(ctx) || ctx || M, 64),
    tr = SHAKE256(pk, 64). Written from the standard with hashlib, independent of both
    Meridian and cryptography's MLDSAMuHasher."""
    tr = hashlib.shake_256(public_key_raw).digest(64)
    prefix = bytes((0, len(context))) + context
    return hashlib.shake_256(tr + prefix + message).digest(64)


def raw_ml_dsa_public_key(public_der: bytes) -> bytes:
    key = serialization.load_der_public_key(public_der)
    assert isinstance(key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey)
    return key.public_bytes_raw()


def pkcs8(private_key: Any) -> bytes:
    der: bytes = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der


def wrap_for_import(wrapping_public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """What a customer sends to ImportKeyMaterial, made with cryptography as AWS documents."""
    public = serialization.load_der_public_key(wrapping_public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    chosen: hashes.HashAlgorithm = hashes.SHA1() if algorithm.endswith("SHA_1") else hashes.SHA256()
    oaep = padding.OAEP(mgf=padding.MGF1(chosen), algorithm=chosen, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep)
    aes_key = os.urandom(32)
    return public.encrypt(aes_key, oaep) + keywrap.aes_key_wrap_with_padding(aes_key, material)


def in_days(now: datetime, days: float) -> datetime:
    return now + timedelta(days=days)


async def import_material(
    stub: Any,
    key_id: str,
    material: bytes,
    *,
    algorithm: str = "RSA_AES_KEY_WRAP_SHA_256",
    wrapping_key_spec: str = "RSA_2048",
    valid_to: datetime | None = None,
    **fields: Any,
) -> pb.ImportKeyMaterialResponse:
    """GetParametersForImport, wrap locally, ImportKeyMaterial (never expiring by default)."""
    parameters = await stub.GetParametersForImport(
        pb.GetParametersForImportRequest(
            key_id=key_id, wrapping_algorithm=algorithm, wrapping_key_spec=wrapping_key_spec
        )
    )
    request = pb.ImportKeyMaterialRequest(
        key_id=key_id,
        import_token=parameters.import_token,
        encrypted_key_material=wrap_for_import(parameters.public_key, algorithm, material),
        **fields,
    )
    if valid_to is None and "expiration_model" not in fields:
        request.expiration_model = "KEY_MATERIAL_DOES_NOT_EXPIRE"
    if valid_to is not None:
        request.valid_to.FromDatetime(valid_to.astimezone(UTC))
    response: pb.ImportKeyMaterialResponse = await stub.ImportKeyMaterial(request)
    return response
