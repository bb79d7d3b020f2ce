"""DeriveSharedSecret (ECDH) and Encapsulate/Decapsulate (ML-KEM), with AWS semantics.

DeriveSharedSecret needs a KEY_AGREEMENT key on a NIST curve and the peer's DER public
key on the same curve. Encapsulate uses only the public half of an
ENCAPSULATE_DECAPSULATE key; Decapsulate returns 32 bytes for any ciphertext of the
right length (implicit rejection), and InvalidCiphertextException otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meridian.server.domain import validation
from meridian.server.domain.crypto import ecdh, kem
from meridian.server.domain.errors import ValidationException
from meridian.server.domain.key_context import KeyContext
from meridian.server.domain.key_specs import (
    EncapsulationAlgorithm,
    KeyAgreementAlgorithm,
    parse_required,
    require_usage,
)
from meridian.server.domain.model import Caller, Key, KeyUsage, Origin

PUBLIC_KEY_BYTES_MAX = 8192
CIPHERTEXT_BYTES_MAX = 6144


@dataclass(frozen=True, slots=True)
class SharedSecretResult:
    key_arn: str
    shared_secret: bytes
    key_agreement_algorithm: KeyAgreementAlgorithm
    key_origin: Origin

    def __repr__(self) -> str:
        return f"SharedSecretResult(key_arn={self.key_arn!r}, shared secret hidden)"


@dataclass(frozen=True, slots=True)
class EncapsulationResult:
    key_arn: str
    shared_secret: bytes
    # Empty for Decapsulate, which only recovers the secret.
    ciphertext: bytes
    encapsulation_algorithm: EncapsulationAlgorithm

    def __repr__(self) -> str:
        return f"EncapsulationResult(key_arn={self.key_arn!r}, shared secret hidden)"


class KeyAgreement:
    def __init__(self, context: KeyContext) -> None:
        self._context = context

    async def derive_shared_secret(
        self,
        caller: Caller,
        *,
        key_id: str,
        key_agreement_algorithm: str,
        public_key: bytes,
        grant_tokens: Sequence[str] = (),
    ) -> SharedSecretResult:
        validation.validate_grant_tokens(grant_tokens)
        algorithm = parse_required(
            KeyAgreementAlgorithm, key_agreement_algorithm, "KeyAgreementAlgorithm"
        )
        if not 1 <= len(public_key) <= PUBLIC_KEY_BYTES_MAX:
            raise ValidationException(f"PublicKey must be 1 to {PUBLIC_KEY_BYTES_MAX} bytes")
        key = await self._key(key_id, KeyUsage.KEY_AGREEMENT)
        secret = await self._context.private_material(key)
        shared = ecdh.derive_shared_secret(key.key_spec, secret, public_key)
        return SharedSecretResult(key.arn, shared, algorithm, key.origin)

    async def encapsulate(
        self,
        caller: Caller,
        *,
        key_id: str,
        encapsulation_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> EncapsulationResult:
        validation.validate_grant_tokens(grant_tokens)
        algorithm = parse_required(
            EncapsulationAlgorithm, encapsulation_algorithm, "EncapsulationAlgorithm"
        )
        key = await self._key(key_id, KeyUsage.ENCAPSULATE_DECAPSULATE)
        shared, ciphertext = kem.encapsulate(key.key_spec, await self._context.public_key(key))
        return EncapsulationResult(key.arn, shared, ciphertext, algorithm)

    async def decapsulate(
        self,
        caller: Caller,
        *,
        key_id: str,
        shared_secret_ciphertext_blob: bytes,
        encapsulation_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> EncapsulationResult:
        validation.validate_grant_tokens(grant_tokens)
        algorithm = parse_required(
            EncapsulationAlgorithm, encapsulation_algorithm, "EncapsulationAlgorithm"
        )
        if not 1 <= len(shared_secret_ciphertext_blob) <= CIPHERTEXT_BYTES_MAX:
            raise ValidationException(
                f"SharedSecretCiphertextBlob must be 1 to {CIPHERTEXT_BYTES_MAX} bytes"
            )
        key = await self._key(key_id, KeyUsage.ENCAPSULATE_DECAPSULATE)
        secret = await self._context.private_material(key)
        shared = kem.decapsulate(key.key_spec, secret, shared_secret_ciphertext_blob)
        return EncapsulationResult(key.arn, shared, b"", algorithm)

    async def _key(self, key_id: str, usage: KeyUsage) -> Key:
        key = await self._context.usable_key(key_id)
        require_usage(key, usage)
        return key
