"""Encrypt and Decrypt with RSA keys (RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256), as AWS does.

KeyService routes here every Encrypt whose key is not SYMMETRIC_DEFAULT and every Decrypt
that names an RSAES_OAEP_* algorithm. The ciphertext is plain RSAES-OAEP with no header,
so a ciphertext made outside Meridian with GetPublicKey's output decrypts here. Unlike
symmetric keys, RSA keys take no encryption context (AWS refuses one), and Decrypt must
name the key, since the ciphertext does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meridian.server.domain.crypto import rsa_oaep
from meridian.server.domain.errors import InvalidCiphertextException, ValidationException
from meridian.server.domain.key_context import KeyContext
from meridian.server.domain.key_specs import require_encryption_algorithm, require_usage
from meridian.server.domain.model import EncryptionAlgorithm, Key, KeyUsage


@dataclass(frozen=True, slots=True)
class RsaResult:
    key_arn: str
    data: bytes
    key_material_id: str

    def __repr__(self) -> str:
        return f"RsaResult(key_arn={self.key_arn!r}, data hidden)"


class RsaEncryption:
    def __init__(self, context: KeyContext) -> None:
        self._context = context

    async def encrypt(
        self,
        key: Key,
        *,
        plaintext: bytes,
        encryption_context: Mapping[str, str],
        algorithm: EncryptionAlgorithm,
    ) -> RsaResult:
        """``key`` is resolved and usable for encryption; the plaintext is 1..4096 bytes."""
        self._check(key, encryption_context, algorithm)
        bytes_max = rsa_oaep.plaintext_bytes_max(key.key_spec, algorithm)
        if len(plaintext) > bytes_max:
            raise ValidationException(
                f"{algorithm.value} with a {key.key_spec.value} key encrypts at most "
                f"{bytes_max} bytes"
            )
        public_key = await self._context.public_key(key)
        ciphertext = rsa_oaep.encrypt(key.key_spec, public_key, algorithm, plaintext)
        return RsaResult(key.arn, ciphertext, key.current_material_id.hex())

    async def decrypt(
        self,
        key_id: str,
        *,
        ciphertext_blob: bytes,
        encryption_context: Mapping[str, str],
        algorithm: EncryptionAlgorithm,
    ) -> RsaResult:
        if not key_id:
            raise ValidationException(f"KeyId is required to decrypt with {algorithm.value}")
        key = await self._context.usable_key(key_id)
        self._check(key, encryption_context, algorithm)
        if len(ciphertext_blob) != rsa_oaep.ciphertext_bytes(key.key_spec):
            raise InvalidCiphertextException()
        secret = await self._context.private_material(key)
        plaintext = rsa_oaep.decrypt(key.key_spec, secret, algorithm, ciphertext_blob)
        return RsaResult(key.arn, plaintext, key.current_material_id.hex())

    def _check(
        self, key: Key, encryption_context: Mapping[str, str], algorithm: EncryptionAlgorithm
    ) -> None:
        require_usage(key, KeyUsage.ENCRYPT_DECRYPT)
        # RSA keys list only RSAES_OAEP_*, symmetric keys only SYMMETRIC_DEFAULT.
        require_encryption_algorithm(key, algorithm)
        if encryption_context:
            raise ValidationException(
                "EncryptionContext is not supported with asymmetric (RSA) keys"
            )
