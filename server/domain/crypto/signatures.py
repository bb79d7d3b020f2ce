"""Digital signatures: RSASSA-PSS, RSASSA-PKCS1-v1_5, ECDSA, Ed25519 and ML-DSA.

The formats are AWS KMS's, so a signature verifies with any standard tool given only the
DER public key: RSA signatures are the raw RFC 8017 octets (PSS with MGF1 over the same
hash and a salt as long as the digest), ECDSA signatures are DER ``Ecdsa-Sig-Value``
(ANSI X9.62), Ed25519 is RFC 8032 pure Ed25519, and ML-DSA is FIPS 204 with an empty
context.

How the message is read is the caller's choice, checked by the domain before it gets
here: ``Form.RAW`` hashes it as the algorithm does; ``Form.DIGEST`` is a digest that is
never hashed again; ``Form.EXTERNAL_MU`` is ML-DSA's 64-byte message representative.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa, utils

from meridian.server.domain.crypto import key_pairs
from meridian.server.domain.errors import KMSInvalidSignatureException
from meridian.server.domain.key_specs import SigningAlgorithm
from meridian.server.domain.model import KeySpec

ML_DSA_MU_BYTES = 64

_HASHES: dict[SigningAlgorithm, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    SigningAlgorithm.RSASSA_PSS_SHA_256: hashes.SHA256,
    SigningAlgorithm.RSASSA_PSS_SHA_384: hashes.SHA384,
    SigningAlgorithm.RSASSA_PSS_SHA_512: hashes.SHA512,
    SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_256: hashes.SHA256,
    SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_384: hashes.SHA384,
    SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_512: hashes.SHA512,
    SigningAlgorithm.ECDSA_SHA_256: hashes.SHA256,
    SigningAlgorithm.ECDSA_SHA_384: hashes.SHA384,
    SigningAlgorithm.ECDSA_SHA_512: hashes.SHA512,
}
_PSS = frozenset(
    {
        SigningAlgorithm.RSASSA_PSS_SHA_256,
        SigningAlgorithm.RSASSA_PSS_SHA_384,
        SigningAlgorithm.RSASSA_PSS_SHA_512,
    }
)


class Form(Enum):
    RAW = "raw"
    DIGEST = "digest"
    EXTERNAL_MU = "external-mu"


def digest_bytes(algorithm: SigningAlgorithm) -> int | None:
    """The length a DIGEST message must have for ``algorithm``; None if it takes none."""
    hash_type = _HASHES.get(algorithm)
    return None if hash_type is None else hash_type.digest_size


def sign(
    spec: KeySpec, private_pkcs8: bytes, algorithm: SigningAlgorithm, message: bytes, form: Form
) -> bytes:
    key = key_pairs.load_private(spec, private_pkcs8)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, _rsa_padding(algorithm), _hash_argument(algorithm, form))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(_hash_argument(algorithm, form)))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        _require_raw(form)
        return key.sign(message)
    if isinstance(key, mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey):
        if form is Form.EXTERNAL_MU:
            return key.sign_mu(message)
        _require_raw(form)
        return key.sign(message)
    raise ValueError(f"{spec.value} keys do not sign")


def verify(
    spec: KeySpec,
    public_spki: bytes,
    algorithm: SigningAlgorithm,
    message: bytes,
    signature: bytes,
    form: Form,
) -> None:
    """Return if ``signature`` is valid; raise KMSInvalidSignatureException otherwise."""
    check = _checker(key_pairs.load_public(spec, public_spki), algorithm, form)
    try:
        check(signature, message)
    # A malformed signature (wrong length, bad DER) is as invalid as a wrong one.
    except (InvalidSignature, ValueError):
        raise KMSInvalidSignatureException("The signature is not valid") from None


def _checker(
    key: key_pairs.PublicKey, algorithm: SigningAlgorithm, form: Form
) -> Callable[[bytes, bytes], None]:
    """The verification call for ``key``; combinations the domain refuses raise here."""
    if isinstance(key, rsa.RSAPublicKey):
        rsa_padding, rsa_hash = _rsa_padding(algorithm), _hash_argument(algorithm, form)
        return lambda signature, message: key.verify(signature, message, rsa_padding, rsa_hash)
    if isinstance(key, ec.EllipticCurvePublicKey):
        ecdsa = ec.ECDSA(_hash_argument(algorithm, form))
        return lambda signature, message: key.verify(signature, message, ecdsa)
    if isinstance(key, ed25519.Ed25519PublicKey):
        _require_raw(form)
        return key.verify
    if isinstance(key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey):
        if form is Form.EXTERNAL_MU:
            return key.verify_mu
        _require_raw(form)
        return lambda signature, message: key.verify(signature, message)
    raise ValueError("this key does not verify signatures")


def _rsa_padding(algorithm: SigningAlgorithm) -> padding.AsymmetricPadding:
    if algorithm in _PSS:
        hash_type = _HASHES[algorithm]
        return padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=hash_type.digest_size)
    return padding.PKCS1v15()


def _hash_argument(
    algorithm: SigningAlgorithm, form: Form
) -> hashes.HashAlgorithm | utils.Prehashed:
    hash_type = _HASHES[algorithm]
    if form is Form.DIGEST:
        return utils.Prehashed(hash_type())
    _require_raw(form)
    return hash_type()


def _require_raw(form: Form) -> None:
    if form is not Form.RAW:
        # The domain refuses these combinations first; reaching here is a bug.
        raise ValueError(f"message form {form.value} is not valid for this algorithm")
