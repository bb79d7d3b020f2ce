"""``AsyncEnvelope``: envelope encryption over an ``AsyncKmsClient``.

The same messages as ``Envelope``; KMS calls are awaited (a message wrapped under
several keys has them wrapped concurrently), and streams are async iterables of bytes.
Sealing and opening frames is CPU work done inline: for very large payloads run it in
a worker thread (``asyncio.to_thread``) with the blocking ``Envelope`` instead.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence

from meridian.client._async import AsyncKmsClient
from meridian.client.envelope._core import (
    DecryptedMessage,
    EnvelopeSettings,
    MessageInfo,
    check_expected_context,
    checked_data_key,
    context_bytes,
    no_key_error,
    wrapped_from,
)
from meridian.client.envelope.cache import DataKeyCache, EncryptionMaterials
from meridian.client.envelope.format import FRAME_LENGTH_DEFAULT, MESSAGE_ID_BYTES, Header
from meridian.client.envelope.stream import MessageDecryptor, MessageEncryptor
from meridian.client.errors import ClientConfigError, KmsError

__all__ = ["AsyncEnvelope"]


class AsyncEnvelope:
    """The asyncio twin of ``Envelope``; see there for the arguments."""

    def __init__(
        self,
        kms: AsyncKmsClient,
        key_ids: Sequence[str] = (),
        *,
        discovery: bool = False,
        cache: DataKeyCache | None = None,
        frame_length: int = FRAME_LENGTH_DEFAULT,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._kms = kms
        self._settings = EnvelopeSettings(
            key_ids, discovery=discovery, cache=cache, frame_length=frame_length
        )
        self._randbytes = randbytes

    async def encrypt(
        self, plaintext: bytes, *, encryption_context: Mapping[str, str] | None = None
    ) -> bytes:
        encryptor = await self._encryptor(encryption_context, len(plaintext))
        return encryptor.header + encryptor.update(plaintext) + encryptor.finish()

    async def decrypt(
        self, message: bytes, *, expected_context: Mapping[str, str] | None = None
    ) -> DecryptedMessage:
        decryptor = MessageDecryptor()
        header = decryptor.read_header(message)
        if header is None:
            decryptor.end_of_header_input()
        check_expected_context(header, expected_context)
        data_key, key_arn, region = await self._unwrap(header)
        plaintext = bytes(decryptor.begin(data_key))
        decryptor.finish()
        info = MessageInfo(
            encryption_context=header.encryption_context,
            wrapped_key_arns=tuple(wrapped.key_arn for wrapped in header.wrapped_keys),
            plaintext_bytes=len(plaintext),
            message_bytes=len(message),
            key_arn=key_arn,
            region=region,
        )
        return DecryptedMessage(plaintext=plaintext, info=info)

    async def encrypt_chunks(
        self,
        chunks: AsyncIterable[bytes],
        *,
        encryption_context: Mapping[str, str] | None = None,
    ) -> AsyncIterator[bytes | bytearray]:
        """The message, piece by piece, for plaintext given piece by piece."""
        encryptor = await self._encryptor(encryption_context, None)
        yield encryptor.header
        async for chunk in chunks:
            if sealed := encryptor.update(chunk):
                yield sealed
        yield encryptor.finish()

    async def decrypt_chunks(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected_context: Mapping[str, str] | None = None,
    ) -> AsyncIterator[bytes | bytearray]:
        """The plaintext, frame by frame; the last piece only once the message is known
        to be complete."""
        decryptor = MessageDecryptor()
        pieces = aiter(chunks)
        header: Header | None = None
        async for chunk in pieces:
            header = decryptor.read_header(chunk)
            if header is not None:
                break
        if header is None:
            decryptor.end_of_header_input()
        check_expected_context(header, expected_context)
        data_key, _, _ = await self._unwrap(header)
        if opened := decryptor.begin(data_key):
            yield opened
        async for chunk in pieces:
            if opened := decryptor.update(chunk):
                yield opened
        decryptor.finish()

    # ---- data keys -------------------------------------------------------------------------

    async def _encryptor(
        self, encryption_context: Mapping[str, str] | None, plaintext_length: int | None
    ) -> MessageEncryptor:
        settings = self._settings
        context, canonical = context_bytes(encryption_context)
        cache_key = settings.encrypt_cache_key(canonical)
        materials = (
            settings.cache.materials_for_encrypt(cache_key, plaintext_length)
            if settings.cache is not None
            else None
        )
        if materials is None:
            materials = await self._new_data_key(context)
            if settings.cache is not None:
                settings.cache.put_for_encrypt(cache_key, materials, plaintext_length)
        return MessageEncryptor(
            data_key=materials.data_key,
            wrapped_keys=materials.wrapped_keys,
            encryption_context=context,
            frame_length=settings.frame_length,
            message_id=self._randbytes(MESSAGE_ID_BYTES),
        )

    async def _new_data_key(self, context: dict[str, str]) -> EncryptionMaterials:
        generator, others = self._settings.wrapping_keys()
        generated = await self._kms.generate_data_key(
            key_id=generator, encryption_context=context, key_spec="AES_256"
        )
        data_key = checked_data_key(generated.plaintext, "GenerateDataKey")
        sealed = await asyncio.gather(
            *(
                self._kms.encrypt(key_id=key_id, plaintext=data_key, encryption_context=context)
                for key_id in others
            )
        )
        wrapped = [wrapped_from(generated.key_id, generated.ciphertext_blob, "GenerateDataKey")]
        wrapped += [wrapped_from(item.key_id, item.ciphertext_blob, "Encrypt") for item in sealed]
        return EncryptionMaterials(data_key, tuple(wrapped))

    async def _unwrap(self, header: Header) -> tuple[bytes, str | None, str | None]:
        settings = self._settings
        cache_key = settings.decrypt_cache_key(header)
        if settings.cache is not None:
            cached = settings.cache.data_key_for_decrypt(cache_key)
            if cached is not None:
                return cached, None, None
        attempts: list[tuple[str, str]] = []
        for unwrap in settings.unwraps(header, self._kms.stats()):
            try:
                result = await self._kms.decrypt(
                    ciphertext_blob=unwrap.wrapped.ciphertext_blob,
                    encryption_context=header.encryption_context,
                    key_id=unwrap.key_id,
                )
            except (KmsError, ClientConfigError) as error:
                name = error.error_name if isinstance(error, KmsError) else type(error).__name__
                attempts.append((unwrap.wrapped.key_arn, name))
                continue
            data_key = checked_data_key(result.plaintext, "Decrypt")
            if settings.cache is not None:
                settings.cache.put_for_decrypt(cache_key, data_key)
            return data_key, result.key_id, result.region
        raise no_key_error(attempts, header)
