"""ML-KEM (FIPS 203) encapsulation and decapsulation for Encapsulate and Decapsulate.

Decapsulation of a ciphertext of the right length always yields 32 bytes: a tampered or
foreign ciphertext gives a pseudo-random secret (implicit rejection), as AWS documents.
Only a ciphertext of the wrong length is refused, with InvalidCiphertextException.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mlkem

from meridian.server.domain.crypto import key_pairs
from meridian.server.domain.errors import InvalidCiphertextException
from meridian.server.domain.model import KeySpec

SHARED_SECRET_BYTES = 32
CIPHERTEXT_BYTES: dict[KeySpec, int] = {KeySpec.ML_KEM_768: 1088, KeySpec.ML_KEM_1024: 1568}


def encapsulate(spec: KeySpec, public_spki: bytes) -> tuple[bytes, bytes]:
    """A new (shared secret, ciphertext) pair for the key's public half."""
    key = key_pairs.load_public(spec, public_spki)
    if not isinstance(key, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey):
        raise ValueError(f"{spec.value} is not an ML-KEM spec")
    return key.encapsulate()


def decapsulate(spec: KeySpec, private_pkcs8: bytes, ciphertext: bytes) -> bytes:
    if len(ciphertext) != CIPHERTEXT_BYTES[spec]:
        raise InvalidCiphertextException()
    key = key_pairs.load_private(spec, private_pkcs8)
    if not isinstance(key, mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey):
        raise ValueError(f"{spec.value} is not an ML-KEM spec")
    try:
        return key.decapsulate(ciphertext)
    except ValueError:
        raise InvalidCiphertextException() from None
