"""GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.

A fresh key pair for use outside Meridian: the public key (DER SubjectPublicKeyInfo), the
private key (PKCS#8 DER; the seed form for ML-KEM) and a copy of the private key
encrypted under a symmetric encryption key, exactly as Encrypt would seal it, so Decrypt
returns it. Pairs of every spec AWS lists are made except SM2 and ML_KEM_512, which the
cryptography package cannot serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meridian.server.domain import validation
from meridian.server.domain.crypto import key_pairs
from meridian.server.domain.crypto.context import validate_encryption_context
from meridian.server.domain.errors import InvalidKeyUsageException
from meridian.server.domain.key_context import KeyContext
from meridian.server.domain.key_specs import DataKeyPairSpec, key_spec_of_pair, parse_required
from meridian.server.domain.model import Caller, KeySpec, KeyUsage


@dataclass(frozen=True, slots=True)
class DataKeyPairResult:
    private_key_ciphertext_blob: bytes
    # Empty for GenerateDataKeyPairWithoutPlaintext.
    private_key_plaintext: bytes = field(repr=False)
    public_key: bytes
    key_arn: str
    key_pair_spec: DataKeyPairSpec
    key_material_id: str


class DataKeyPairs:
    def __init__(self, context: KeyContext) -> None:
        self._context = context

    async def generate(
        self,
        caller: Caller,
        *,
        key_id: str,
        encryption_context: Mapping[str, str],
        key_pair_spec: str,
        grant_tokens: Sequence[str] = (),
        with_plaintext: bool,
    ) -> DataKeyPairResult:
        pair_spec = parse_required(DataKeyPairSpec, key_pair_spec, "KeyPairSpec")
        spec = key_spec_of_pair(pair_spec)
        validate_encryption_context(encryption_context)
        validation.validate_grant_tokens(grant_tokens)
        key = await self._context.usable_key(key_id)
        # The private key is sealed like Encrypt's plaintext: only a symmetric
        # encryption key may do that (AWS refuses asymmetric keys here).
        if key.key_spec is not KeySpec.SYMMETRIC_DEFAULT or key.key_usage is not (
            KeyUsage.ENCRYPT_DECRYPT
        ):
            raise InvalidKeyUsageException(
                f"{key.arn} is not a symmetric encryption key; GenerateDataKeyPair needs one"
            )
        pair = await asyncio.to_thread(key_pairs.generate, spec)
        sealed = await self._context.service.encrypt(
            caller,
            key_id=key.key_id,
            plaintext=pair.private_pkcs8,
            encryption_context=encryption_context,
            encryption_algorithm="",
        )
        return DataKeyPairResult(
            private_key_ciphertext_blob=sealed.ciphertext_blob,
            private_key_plaintext=pair.private_pkcs8 if with_plaintext else b"",
            public_key=pair.public_spki,
            key_arn=sealed.key_arn,
            key_pair_spec=pair_spec,
            key_material_id=sealed.key_material_id,
        )
