"""Sign, Verify and GetPublicKey for RSA, ECC, Ed25519 and ML-DSA keys (AWS semantics).

MessageType decides how the message is read, and is checked against the algorithm before
any key is touched: RAW is hashed by the algorithm; DIGEST is a digest of exactly the
algorithm's hash length and is never hashed again; EXTERNAL_MU is ML-DSA's 64-byte
message representative (FIPS 204, 6.2). Ed25519 (ED25519_SHA_512) signs RAW messages
only and ML-DSA takes RAW or EXTERNAL_MU, as AWS documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meridian.server.domain import validation
from meridian.server.domain.crypto import signatures
from meridian.server.domain.crypto.signatures import Form
from meridian.server.domain.errors import UnsupportedOperationException, ValidationException
from meridian.server.domain.key_context import KeyContext
from meridian.server.domain.key_specs import (
    KeyAlgorithms,
    MessageType,
    SigningAlgorithm,
    algorithms_for,
    parse_required,
    require_signing_algorithm,
    require_usage,
    spec_info,
)
from meridian.server.domain.model import Caller, Key, KeyUsage

MESSAGE_BYTES_MAX = 4096
SIGNATURE_BYTES_MAX = 6144


@dataclass(frozen=True, slots=True)
class SignResult:
    key_arn: str
    signature: bytes
    signing_algorithm: SigningAlgorithm


@dataclass(frozen=True, slots=True)
class VerifyResult:
    key_arn: str
    signing_algorithm: SigningAlgorithm


@dataclass(frozen=True, slots=True)
class PublicKeyResult:
    key: Key
    public_key: bytes
    algorithms: KeyAlgorithms


class Signing:
    def __init__(self, context: KeyContext) -> None:
        self._context = context

    async def sign(
        self,
        caller: Caller,
        *,
        key_id: str,
        message: bytes,
        message_type: str,
        signing_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> SignResult:
        algorithm, form = _checked_request(message, message_type, signing_algorithm, grant_tokens)
        key = await self._signing_key(key_id, algorithm)
        secret = await self._context.private_material(key)
        signature = signatures.sign(key.key_spec, secret, algorithm, message, form)
        return SignResult(key.arn, signature, algorithm)

    async def verify(
        self,
        caller: Caller,
        *,
        key_id: str,
        message: bytes,
        message_type: str,
        signature: bytes,
        signing_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> VerifyResult:
        """Return if the signature is valid; KMSInvalidSignatureException otherwise."""
        algorithm, form = _checked_request(message, message_type, signing_algorithm, grant_tokens)
        if not 1 <= len(signature) <= SIGNATURE_BYTES_MAX:
            raise ValidationException(f"Signature must be 1 to {SIGNATURE_BYTES_MAX} bytes")
        key = await self._signing_key(key_id, algorithm)
        public_key = await self._context.public_key(key)
        signatures.verify(key.key_spec, public_key, algorithm, message, signature, form)
        return VerifyResult(key.arn, algorithm)

    async def get_public_key(
        self, caller: Caller, *, key_id: str, grant_tokens: Sequence[str] = ()
    ) -> PublicKeyResult:
        validation.validate_grant_tokens(grant_tokens)
        key = await self._context.usable_key(key_id)
        if not spec_info(key.key_spec).asymmetric:
            raise UnsupportedOperationException(
                f"{key.arn} is a {key.key_spec.value} key, which has no public key"
            )
        public_key = await self._context.public_key(key)
        return PublicKeyResult(key, public_key, algorithms_for(key.key_spec, key.key_usage))

    async def _signing_key(self, key_id: str, algorithm: SigningAlgorithm) -> Key:
        key = await self._context.usable_key(key_id)
        require_usage(key, KeyUsage.SIGN_VERIFY)
        require_signing_algorithm(key, algorithm)
        return key


def _checked_request(
    message: bytes, message_type: str, signing_algorithm: str, grant_tokens: Sequence[str]
) -> tuple[SigningAlgorithm, Form]:
    if not 1 <= len(message) <= MESSAGE_BYTES_MAX:
        raise ValidationException(f"Message must be 1 to {MESSAGE_BYTES_MAX} bytes")
    validation.validate_grant_tokens(grant_tokens)
    algorithm = parse_required(SigningAlgorithm, signing_algorithm, "SigningAlgorithm")
    kind = parse_required(MessageType, message_type or MessageType.RAW.value, "MessageType")
    return algorithm, message_form(algorithm, kind, message)


def message_form(algorithm: SigningAlgorithm, kind: MessageType, message: bytes) -> Form:
    """How ``message`` is to be read, or the ValidationException AWS gives for it."""
    if kind is MessageType.EXTERNAL_MU:
        if algorithm is not SigningAlgorithm.ML_DSA_SHAKE_256:
            raise ValidationException(
                f"MessageType EXTERNAL_MU is valid only with ML_DSA_SHAKE_256, "
                f"not {algorithm.value}"
            )
        if len(message) != signatures.ML_DSA_MU_BYTES:
            raise ValidationException(
                f"An EXTERNAL_MU message must be {signatures.ML_DSA_MU_BYTES} bytes"
            )
        return Form.EXTERNAL_MU
    if kind is MessageType.RAW:
        return Form.RAW
    if algorithm in (SigningAlgorithm.ML_DSA_SHAKE_256, SigningAlgorithm.ED25519_SHA_512):
        instead = "RAW or EXTERNAL_MU" if algorithm is SigningAlgorithm.ML_DSA_SHAKE_256 else "RAW"
        raise ValidationException(f"{algorithm.value} does not sign DIGEST messages; use {instead}")
    expected = signatures.digest_bytes(algorithm)
    if expected is not None and len(message) != expected:
        raise ValidationException(
            f"A DIGEST message for {algorithm.value} must be {expected} bytes, not {len(message)}"
        )
    return Form.DIGEST
