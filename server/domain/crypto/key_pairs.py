"""Key pairs of every asymmetric spec: generate, serialize, load and check them.

Inside Meridian a private key is always its PKCS#8 DER encoding (RFC 5958; the seed form
for ML-DSA and ML-KEM, as AWS's GenerateDataKeyPair returns them), which the root key
wraps like any other material. A public key is its DER SubjectPublicKeyInfo (RFC 5280),
exactly what GetPublicKey returns and what OpenSSL reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, rsa

from meridian.server.domain.model import KeySpec

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | mldsa.MLDSA44PrivateKey
    | mldsa.MLDSA65PrivateKey
    | mldsa.MLDSA87PrivateKey
    | mlkem.MLKEM768PrivateKey
    | mlkem.MLKEM1024PrivateKey
)
PublicKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | mldsa.MLDSA44PublicKey
    | mldsa.MLDSA65PublicKey
    | mldsa.MLDSA87PublicKey
    | mlkem.MLKEM768PublicKey
    | mlkem.MLKEM1024PublicKey
)

RSA_PUBLIC_EXPONENT = 65537
RSA_BITS: dict[KeySpec, int] = {
    KeySpec.RSA_2048: 2048,
    KeySpec.RSA_3072: 3072,
    KeySpec.RSA_4096: 4096,
}
CURVES: dict[KeySpec, type[ec.EllipticCurve]] = {
    KeySpec.ECC_NIST_P256: ec.SECP256R1,
    KeySpec.ECC_NIST_P384: ec.SECP384R1,
    KeySpec.ECC_NIST_P521: ec.SECP521R1,
    KeySpec.ECC_SECG_P256K1: ec.SECP256K1,
}
_ML_DSA: dict[
    KeySpec,
    type[mldsa.MLDSA44PrivateKey] | type[mldsa.MLDSA65PrivateKey] | type[mldsa.MLDSA87PrivateKey],
] = {
    KeySpec.ML_DSA_44: mldsa.MLDSA44PrivateKey,
    KeySpec.ML_DSA_65: mldsa.MLDSA65PrivateKey,
    KeySpec.ML_DSA_87: mldsa.MLDSA87PrivateKey,
}
_ML_KEM: dict[KeySpec, type[mlkem.MLKEM768PrivateKey] | type[mlkem.MLKEM1024PrivateKey]] = {
    KeySpec.ML_KEM_768: mlkem.MLKEM768PrivateKey,
    KeySpec.ML_KEM_1024: mlkem.MLKEM1024PrivateKey,
}
_PUBLIC_TYPES: dict[KeySpec, type[PublicKey]] = {
    **dict.fromkeys(RSA_BITS, rsa.RSAPublicKey),
    **dict.fromkeys(CURVES, ec.EllipticCurvePublicKey),
    KeySpec.ECC_NIST_EDWARDS25519: ed25519.Ed25519PublicKey,
    KeySpec.ML_DSA_44: mldsa.MLDSA44PublicKey,
    KeySpec.ML_DSA_65: mldsa.MLDSA65PublicKey,
    KeySpec.ML_DSA_87: mldsa.MLDSA87PublicKey,
    KeySpec.ML_KEM_768: mlkem.MLKEM768PublicKey,
    KeySpec.ML_KEM_1024: mlkem.MLKEM1024PublicKey,
}


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pkcs8: bytes
    public_spki: bytes

    def __repr__(self) -> str:
        return f"KeyPair(public_spki={len(self.public_spki)} bytes, private key hidden)"


def is_key_pair_spec(spec: KeySpec) -> bool:
    return spec in _PUBLIC_TYPES


def generate(spec: KeySpec) -> KeyPair:
    """A new key pair of ``spec``. RSA takes up to a second (RSA-4096) and releases the
    GIL, so async callers run this in a worker thread."""
    private: PrivateKey
    if spec in RSA_BITS:
        private = rsa.generate_private_key(RSA_PUBLIC_EXPONENT, RSA_BITS[spec])
    elif spec in CURVES:
        private = ec.generate_private_key(CURVES[spec]())
    elif spec is KeySpec.ECC_NIST_EDWARDS25519:
        private = ed25519.Ed25519PrivateKey.generate()
    elif spec in _ML_DSA:
        private = _ML_DSA[spec].generate()
    elif spec in _ML_KEM:
        private = _ML_KEM[spec].generate()
    else:
        raise ValueError(f"{spec.value} is not a key pair spec")
    return _pair(private)


def load_private(spec: KeySpec, private_pkcs8: bytes) -> PrivateKey:
    """Load a private key Meridian itself stored (generated or checked at import).

    RSA's consistency check costs ~40 ms per load and proves nothing here: the key was
    checked when it entered Meridian and the root key's AEAD guards it since.
    """
    key = serialization.load_der_private_key(
        private_pkcs8, password=None, unsafe_skip_rsa_key_validation=True
    )
    if not _matches(spec, key):
        raise ValueError(f"stored private key is not a {spec.value} key")
    return key  # type: ignore[return-value]  # _matches narrowed it to PrivateKey


def load_public(spec: KeySpec, public_spki: bytes) -> PublicKey:
    """Load a DER SubjectPublicKeyInfo of ``spec``; ValueError if it is anything else."""
    try:
        key = serialization.load_der_public_key(public_spki)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ValueError("not a DER SubjectPublicKeyInfo") from error
    expected = _PUBLIC_TYPES.get(spec)
    if expected is None or not isinstance(key, expected):
        raise ValueError(f"not a {spec.value} public key")
    if spec in CURVES and not isinstance(key.curve, CURVES[spec]):  # type: ignore[union-attr]
        raise ValueError(f"not a {spec.value} public key")
    if spec in RSA_BITS and key.key_size != RSA_BITS[spec]:  # type: ignore[union-attr]
        raise ValueError(f"not a {spec.value} public key")
    return key


def public_spki_of(spec: KeySpec, private_pkcs8: bytes) -> bytes:
    """The public key of a stored private key (for versions stored without one)."""
    return _spki(load_private(spec, private_pkcs8).public_key())


def check_imported(spec: KeySpec, der: bytes) -> KeyPair:
    """Check a private key a customer imports and return it in Meridian's canonical form.

    The key must be an unencrypted PKCS#8 DER private key of exactly ``spec`` (curve,
    modulus size, parameter set). RSA keys are fully validated here, once. Raises
    ValueError for anything else.
    """
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ValueError("not an unencrypted PKCS#8 DER private key") from error
    if not _matches(spec, key):
        raise ValueError(f"not a {spec.value} private key")
    try:
        return _pair(key)  # type: ignore[arg-type]  # _matches narrowed it to PrivateKey
    except ValueError as error:
        # e.g. an ML-DSA key without its seed, which has no seed-form PKCS#8.
        raise ValueError(f"the {spec.value} private key cannot be stored in seed form") from error


def _matches(spec: KeySpec, key: object) -> bool:
    if spec in RSA_BITS:
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size == RSA_BITS[spec]
    if spec in CURVES:
        return isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, CURVES[spec])
    if spec is KeySpec.ECC_NIST_EDWARDS25519:
        return isinstance(key, ed25519.Ed25519PrivateKey)
    if spec in _ML_DSA:
        return isinstance(key, _ML_DSA[spec])
    if spec in _ML_KEM:
        return isinstance(key, _ML_KEM[spec])
    return False


def _pair(private: PrivateKey) -> KeyPair:
    return KeyPair(
        private_pkcs8=private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        public_spki=_spki(private.public_key()),
    )


def _spki(public: PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
