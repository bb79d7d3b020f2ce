"""RSA encryption with OAEP (RSAES_OAEP_SHA_1 and RSAES_OAEP_SHA_256), as AWS KMS does it.

The ciphertext is the raw RFC 8017 RSAES-OAEP output with MGF1 over the same hash and an
empty label, so anyone holding GetPublicKey's output can encrypt for Meridian with a
standard library (and Meridian's own Encrypt is just that). Every decryption failure is
the one opaque InvalidCiphertextException.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from meridian.server.domain.crypto import key_pairs
from meridian.server.domain.errors import InvalidCiphertextException
from meridian.server.domain.model import EncryptionAlgorithm, KeySpec

_HASHES: dict[EncryptionAlgorithm, type[hashes.SHA1 | hashes.SHA256]] = {
    EncryptionAlgorithm.RSAES_OAEP_SHA_1: hashes.SHA1,
    EncryptionAlgorithm.RSAES_OAEP_SHA_256: hashes.SHA256,
}


def plaintext_bytes_max(spec: KeySpec, algorithm: EncryptionAlgorithm) -> int:
    """RFC 8017's bound: modulus bytes - 2 * hash bytes - 2 (214 for RSA_2048/SHA-1)."""
    return key_pairs.RSA_BITS[spec] // 8 - 2 * _HASHES[algorithm].digest_size - 2


def ciphertext_bytes(spec: KeySpec) -> int:
    return key_pairs.RSA_BITS[spec] // 8


def encrypt(
    spec: KeySpec, public_spki: bytes, algorithm: EncryptionAlgorithm, plaintext: bytes
) -> bytes:
    key = key_pairs.load_public(spec, public_spki)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{spec.value} is not an RSA spec")
    return key.encrypt(plaintext, _padding(algorithm))


def decrypt(
    spec: KeySpec, private_pkcs8: bytes, algorithm: EncryptionAlgorithm, ciphertext: bytes
) -> bytes:
    key = key_pairs.load_private(spec, private_pkcs8)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{spec.value} is not an RSA spec")
    try:
        return key.decrypt(ciphertext, _padding(algorithm))
    except ValueError:
        raise InvalidCiphertextException() from None


def _padding(algorithm: EncryptionAlgorithm) -> padding.OAEP:
    hash_type = _HASHES[algorithm]
    return padding.OAEP(mgf=padding.MGF1(hash_type()), algorithm=hash_type(), label=None)
