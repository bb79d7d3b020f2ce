"""Unwrapping imported key material (BYOK) with AWS's wrapping algorithms.

GetParametersForImport hands out the public half of a fresh RSA wrapping key; the
customer wraps their material with it in one of two ways, as AWS defines them:

- ``RSAES_OAEP_SHA_1`` / ``RSAES_OAEP_SHA_256``: the material itself, RSA-OAEP encrypted
  (MGF1 over the same hash, no label). Only material shorter than the OAEP bound fits.
- ``RSA_AES_KEY_WRAP_SHA_1`` / ``RSA_AES_KEY_WRAP_SHA_256``: a fresh 256-bit AES key,
  RSA-OAEP encrypted, followed by the material wrapped with that key by AES Key Wrap with
  Padding (RFC 5649). This carries material of any size, e.g. an RSA private key.

Every failure to unwrap is the one opaque InvalidCiphertextException.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from meridian.server.domain.crypto import key_pairs
from meridian.server.domain.errors import InvalidCiphertextException
from meridian.server.domain.key_material import WrappingAlgorithm, WrappingKeySpec

WRAPPING_KEY_BITS: dict[WrappingKeySpec, int] = {
    WrappingKeySpec.RSA_2048: 2048,
    WrappingKeySpec.RSA_3072: 3072,
    WrappingKeySpec.RSA_4096: 4096,
}
AES_KEY_BYTES = 32
_HASHES: dict[WrappingAlgorithm, type[hashes.SHA1 | hashes.SHA256]] = {
    WrappingAlgorithm.RSAES_OAEP_SHA_1: hashes.SHA1,
    WrappingAlgorithm.RSAES_OAEP_SHA_256: hashes.SHA256,
    WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1: hashes.SHA1,
    WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256: hashes.SHA256,
}
_TWO_LAYER = frozenset(
    {WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1, WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256}
)


def is_supported(algorithm: WrappingAlgorithm) -> bool:
    return algorithm in _HASHES


def new_wrapping_key(spec: WrappingKeySpec) -> key_pairs.KeyPair:
    """A fresh RSA wrapping key pair (blocking: up to a second for RSA_4096)."""
    private = rsa.generate_private_key(key_pairs.RSA_PUBLIC_EXPONENT, WRAPPING_KEY_BITS[spec])
    return key_pairs.KeyPair(
        private_pkcs8=private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        public_spki=private.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        ),
    )


def unwrap(wrapping_private_pkcs8: bytes, algorithm: WrappingAlgorithm, encrypted: bytes) -> bytes:
    """The material inside ``encrypted``; InvalidCiphertextException on any failure."""
    private = serialization.load_der_private_key(
        wrapping_private_pkcs8, password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("a wrapping key is an RSA key")
    hash_type = _HASHES[algorithm]
    oaep = padding.OAEP(mgf=padding.MGF1(hash_type()), algorithm=hash_type(), label=None)
    modulus_bytes = private.key_size // 8
    try:
        if algorithm not in _TWO_LAYER:
            return private.decrypt(encrypted, oaep)
        if len(encrypted) <= modulus_bytes:
            raise InvalidCiphertextException()
        aes_key = private.decrypt(encrypted[:modulus_bytes], oaep)
        if len(aes_key) != AES_KEY_BYTES:
            raise InvalidCiphertextException()
        return keywrap.aes_key_unwrap_with_padding(aes_key, encrypted[modulus_bytes:])
    except (ValueError, keywrap.InvalidUnwrap):
        raise InvalidCiphertextException() from None
