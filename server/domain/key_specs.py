"""Key specs, key usages and algorithms: which combinations exist and what each allows.

One table (``SPECS``) says, for every key spec Meridian serves, the key usages it may
have and the algorithms of each usage, exactly as AWS KMS lists them in DescribeKey and
GetPublicKey. Everything that decides "is this algorithm valid for this key" reads it,
so the API cannot allow something the metadata does not show.

Specs and algorithms that the ``cryptography`` package cannot serve (SM2, ML_KEM_512,
Ed25519ph) are refused with UnsupportedOperationException, never half-supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from meridian.server.domain.errors import (
    InvalidKeyUsageException,
    UnsupportedOperationException,
    ValidationException,
)
from meridian.server.domain.model import EncryptionAlgorithm, Key, KeySpec, KeyUsage, Origin


class SigningAlgorithm(StrEnum):
    RSASSA_PSS_SHA_256 = "RSASSA_PSS_SHA_256"
    RSASSA_PSS_SHA_384 = "RSASSA_PSS_SHA_384"
    RSASSA_PSS_SHA_512 = "RSASSA_PSS_SHA_512"
    RSASSA_PKCS1_V1_5_SHA_256 = "RSASSA_PKCS1_V1_5_SHA_256"
    RSASSA_PKCS1_V1_5_SHA_384 = "RSASSA_PKCS1_V1_5_SHA_384"
    RSASSA_PKCS1_V1_5_SHA_512 = "RSASSA_PKCS1_V1_5_SHA_512"
    ECDSA_SHA_256 = "ECDSA_SHA_256"
    ECDSA_SHA_384 = "ECDSA_SHA_384"
    ECDSA_SHA_512 = "ECDSA_SHA_512"
    SM2DSA = "SM2DSA"
    ML_DSA_SHAKE_256 = "ML_DSA_SHAKE_256"
    ED25519_SHA_512 = "ED25519_SHA_512"
    ED25519_PH_SHA_512 = "ED25519_PH_SHA_512"


class MessageType(StrEnum):
    RAW = "RAW"
    DIGEST = "DIGEST"
    EXTERNAL_MU = "EXTERNAL_MU"


class MacAlgorithm(StrEnum):
    HMAC_SHA_224 = "HMAC_SHA_224"
    HMAC_SHA_256 = "HMAC_SHA_256"
    HMAC_SHA_384 = "HMAC_SHA_384"
    HMAC_SHA_512 = "HMAC_SHA_512"


class KeyAgreementAlgorithm(StrEnum):
    ECDH = "ECDH"


class EncapsulationAlgorithm(StrEnum):
    ML_KEM = "ML_KEM"


class DataKeyPairSpec(StrEnum):
    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1"
    SM2 = "SM2"
    ECC_NIST_EDWARDS25519 = "ECC_NIST_EDWARDS25519"
    ML_KEM_512 = "ML_KEM_512"
    ML_KEM_768 = "ML_KEM_768"
    ML_KEM_1024 = "ML_KEM_1024"


class KeyFamily(StrEnum):
    """How a spec's material is made and used; the crypto recipes dispatch on it."""

    SYMMETRIC = "symmetric"
    HMAC = "hmac"
    RSA = "rsa"
    ECC = "ecc"
    EDWARDS = "edwards"
    ML_DSA = "ml-dsa"
    ML_KEM = "ml-kem"


@dataclass(frozen=True, slots=True)
class KeyAlgorithms:
    """The algorithm lists DescribeKey and GetPublicKey show for one spec and usage."""

    encryption: tuple[str, ...] = ()
    signing: tuple[str, ...] = ()
    mac: tuple[str, ...] = ()
    key_agreement: tuple[str, ...] = ()
    encapsulation: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpecInfo:
    family: KeyFamily
    usages: dict[KeyUsage, KeyAlgorithms]
    # Bytes of generated secret material (symmetric and HMAC keys); 0 for key pairs.
    secret_bytes: int = 0
    # Bytes an imported secret may have (AWS's limits for HMAC keys).
    import_bytes_min: int = 0
    import_bytes_max: int = 0

    @property
    def asymmetric(self) -> bool:
        return self.family not in (KeyFamily.SYMMETRIC, KeyFamily.HMAC)


_RSA_SIGNING = (
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
)
_RSA_USAGES = {
    KeyUsage.ENCRYPT_DECRYPT: KeyAlgorithms(encryption=("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")),
    KeyUsage.SIGN_VERIFY: KeyAlgorithms(signing=_RSA_SIGNING),
}


def _nist_curve(signing: str) -> SpecInfo:
    return SpecInfo(
        KeyFamily.ECC,
        {
            KeyUsage.SIGN_VERIFY: KeyAlgorithms(signing=(signing,)),
            KeyUsage.KEY_AGREEMENT: KeyAlgorithms(key_agreement=("ECDH",)),
        },
    )


def _hmac(bits: int, import_bytes_max: int) -> SpecInfo:
    return SpecInfo(
        KeyFamily.HMAC,
        {KeyUsage.GENERATE_VERIFY_MAC: KeyAlgorithms(mac=(f"HMAC_SHA_{bits}",))},
        secret_bytes=bits // 8,
        import_bytes_min=bits // 8,
        import_bytes_max=import_bytes_max,
    )


_ML_DSA = SpecInfo(
    KeyFamily.ML_DSA, {KeyUsage.SIGN_VERIFY: KeyAlgorithms(signing=("ML_DSA_SHAKE_256",))}
)
_ML_KEM = SpecInfo(
    KeyFamily.ML_KEM,
    {KeyUsage.ENCAPSULATE_DECAPSULATE: KeyAlgorithms(encapsulation=("ML_KEM",))},
)

SPECS: dict[KeySpec, SpecInfo] = {
    KeySpec.SYMMETRIC_DEFAULT: SpecInfo(
        KeyFamily.SYMMETRIC,
        {KeyUsage.ENCRYPT_DECRYPT: KeyAlgorithms(encryption=("SYMMETRIC_DEFAULT",))},
        secret_bytes=32,
        import_bytes_min=32,
        import_bytes_max=32,
    ),
    KeySpec.RSA_2048: SpecInfo(KeyFamily.RSA, _RSA_USAGES),
    KeySpec.RSA_3072: SpecInfo(KeyFamily.RSA, _RSA_USAGES),
    KeySpec.RSA_4096: SpecInfo(KeyFamily.RSA, _RSA_USAGES),
    KeySpec.ECC_NIST_P256: _nist_curve("ECDSA_SHA_256"),
    KeySpec.ECC_NIST_P384: _nist_curve("ECDSA_SHA_384"),
    KeySpec.ECC_NIST_P521: _nist_curve("ECDSA_SHA_512"),
    KeySpec.ECC_SECG_P256K1: SpecInfo(
        KeyFamily.ECC, {KeyUsage.SIGN_VERIFY: KeyAlgorithms(signing=("ECDSA_SHA_256",))}
    ),
    # AWS also lists ED25519_PH_SHA_512 (Ed25519ph). The cryptography package has no
    # Ed25519ph, so Meridian lists only what it can do and refuses the other by name.
    KeySpec.ECC_NIST_EDWARDS25519: SpecInfo(
        KeyFamily.EDWARDS, {KeyUsage.SIGN_VERIFY: KeyAlgorithms(signing=("ED25519_SHA_512",))}
    ),
    KeySpec.HMAC_224: _hmac(224, 64),
    KeySpec.HMAC_256: _hmac(256, 64),
    KeySpec.HMAC_384: _hmac(384, 128),
    KeySpec.HMAC_512: _hmac(512, 128),
    KeySpec.ML_DSA_44: _ML_DSA,
    KeySpec.ML_DSA_65: _ML_DSA,
    KeySpec.ML_DSA_87: _ML_DSA,
    KeySpec.ML_KEM_768: _ML_KEM,
    KeySpec.ML_KEM_1024: _ML_KEM,
}

# In AWS's model, but not servable by the cryptography package today.
UNSUPPORTED_SPECS = frozenset({KeySpec.SM2, KeySpec.ML_KEM_512})
UNSUPPORTED_SIGNING_ALGORITHMS = frozenset(
    {SigningAlgorithm.ED25519_PH_SHA_512, SigningAlgorithm.SM2DSA}
)

E = TypeVar("E", bound=StrEnum)


def parse_required(enum: type[E], value: str, field: str) -> E:
    """A required enum member: empty is "required", anything else must be a member."""
    if not value:
        raise ValidationException(f"{field} is required")
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValidationException(
            f"Value at '{field}' failed to satisfy constraint: Member must satisfy enum value "
            f"set: [{allowed}]"
        ) from None


def spec_info(spec: KeySpec) -> SpecInfo:
    """The table entry of a spec Meridian serves; UnsupportedOperationException otherwise."""
    info = SPECS.get(spec)
    if info is None:
        raise UnsupportedOperationException(
            f"KeySpec {spec.value} is not supported by this Meridian version"
        )
    return info


def check_creatable(spec: KeySpec, usage: KeyUsage, origin: Origin) -> None:
    """Refuse a CreateKey combination of spec, usage and origin as AWS does."""
    info = spec_info(spec)
    if usage not in info.usages:
        raise ValidationException(f"KeyUsage {usage.value} is not valid for KeySpec {spec.value}")
    if origin not in (Origin.AWS_KMS, Origin.EXTERNAL):
        raise UnsupportedOperationException(
            f"Origin {origin.value} is not supported by this Meridian version"
        )


def algorithms_for(spec: KeySpec, usage: KeyUsage) -> KeyAlgorithms:
    """The algorithm lists of a key, as DescribeKey and GetPublicKey show them."""
    info = SPECS.get(spec)
    if info is None:
        return KeyAlgorithms()
    return info.usages.get(usage, KeyAlgorithms())


def require_usage(key: Key, usage: KeyUsage) -> None:
    if key.key_usage is not usage:
        raise InvalidKeyUsageException(
            f"{key.arn} key usage is {key.key_usage.value} which is not valid for this operation"
        )


def require_encryption_algorithm(key: Key, algorithm: EncryptionAlgorithm) -> None:
    """The algorithm must be one the key lists (SYMMETRIC_DEFAULT, or RSAES_OAEP_* for RSA)."""
    if algorithm.value not in algorithms_for(key.key_spec, key.key_usage).encryption:
        raise InvalidKeyUsageException(
            f"The encryption algorithm {algorithm.value} is not valid for {key.arn}"
        )


def require_signing_algorithm(key: Key, algorithm: SigningAlgorithm) -> None:
    if algorithm.value in algorithms_for(key.key_spec, key.key_usage).signing:
        return
    if algorithm in UNSUPPORTED_SIGNING_ALGORITHMS:
        raise UnsupportedOperationException(
            f"The signing algorithm {algorithm.value} is not supported by this Meridian version"
        )
    raise InvalidKeyUsageException(
        f"The signing algorithm {algorithm.value} is not valid for {key.arn}"
    )


def key_spec_of_pair(spec: DataKeyPairSpec) -> KeySpec:
    """The key spec whose material a data key pair of ``spec`` is; refuses SM2/ML_KEM_512."""
    key_spec = KeySpec(spec.value)
    if key_spec in UNSUPPORTED_SPECS:
        raise UnsupportedOperationException(
            f"KeyPairSpec {spec.value} is not supported by this Meridian version"
        )
    return key_spec
