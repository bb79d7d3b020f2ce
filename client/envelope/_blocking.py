"""``Envelope``: envelope encryption over a blocking ``KmsClient``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

from meridian.client._sync import KmsClient
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

__all__ = ["Envelope"]

# How much is read from a stream at a time; memory use is about this plus one frame.
CHUNK_BYTES = 1024 * 1024

Progress = Callable[[int], None]
"""Called with the number of input bytes processed so far."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes | bytearray, /) -> object: ...


class Envelope:
    """Encrypt and decrypt data of any size under data keys from a Meridian cluster.

        with KmsClient.from_cluster_file("cluster.json") as kms:
            envelope = Envelope(kms, ["mrk-…", "arn:meridian:kms:eu-west-1:…:key/…"])
            message = envelope.encrypt(b"data", encryption_context={"tenant": "acme"})
            assert envelope.decrypt(message).plaintext == b"data"

    ``key_ids``: the keys every message is wrapped under (the first generates the data
    key), and the only keys decryption may use. ``discovery=True`` lets decryption use
    any key the message names. ``cache``: a ``DataKeyCache`` to reuse data keys (off by
    default). ``frame_length``: plaintext bytes per frame, what a reader holds at once.
    """

    def __init__(
        self,
        kms: KmsClient,
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

    # ---- whole messages ------------------------------------------------------------------

    def encrypt(
        self, plaintext: bytes, *, encryption_context: Mapping[str, str] | None = None
    ) -> bytes:
        encryptor, _ = self._encryptor(encryption_context, len(plaintext))
        return encryptor.header + encryptor.update(plaintext) + encryptor.finish()

    def decrypt(
        self, message: bytes, *, expected_context: Mapping[str, str] | None = None
    ) -> DecryptedMessage:
        parts: list[bytes | bytearray] = []
        info = self.decrypt_stream(
            _BytesReader(message), _ListWriter(parts), expected_context=expected_context
        )
        return DecryptedMessage(plaintext=b"".join(parts), info=info)

    # ---- streams -------------------------------------------------------------------------

    def encrypt_stream(
        self,
        source: Readable,
        destination: Writable,
        *,
        encryption_context: Mapping[str, str] | None = None,
        plaintext_length: int | None = None,
        progress: Progress | None = None,
    ) -> MessageInfo:
        """Read ``source`` to its end, write the message to ``destination``.

        ``plaintext_length``, if known, lets a cache serve the data key (a stream of
        unknown length always gets a fresh one); a stream that turns out to be longer
        or shorter than announced is refused.
        """
        encryptor, info = self._encryptor(encryption_context, plaintext_length)
        written = _write(destination, encryptor.header)
        while chunk := source.read(CHUNK_BYTES):
            written += _write(destination, encryptor.update(chunk))
            if progress is not None:
                progress(encryptor.plaintext_bytes)
        if plaintext_length is not None and encryptor.plaintext_bytes != plaintext_length:
            raise ValueError(
                f"the stream held {encryptor.plaintext_bytes} bytes, not the "
                f"{plaintext_length} announced"
            )
        written += _write(destination, encryptor.finish())
        return _with_sizes(info, encryptor.plaintext_bytes, written)

    def decrypt_stream(
        self,
        source: Readable,
        destination: Writable,
        *,
        expected_context: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> MessageInfo:
        """Read a message from ``source``, write its plaintext to ``destination``.

        Plaintext is written frame by frame as each authenticates; if this raises, what
        was written is not to be trusted (``decrypt_file`` removes it for you).
        """
        decryptor = MessageDecryptor()
        header, read = None, 0
        while header is None:
            chunk = source.read(CHUNK_BYTES)
            if not chunk:
                decryptor.end_of_header_input()
            read += len(chunk)
            header = decryptor.read_header(chunk)
        check_expected_context(header, expected_context)
        data_key, key_arn, region = self._unwrap(header)
        _write(destination, decryptor.begin(data_key))
        while chunk := source.read(CHUNK_BYTES):
            read += len(chunk)
            _write(destination, decryptor.update(chunk))
            if progress is not None:
                progress(read)
        decryptor.finish()
        return MessageInfo(
            encryption_context=header.encryption_context,
            wrapped_key_arns=tuple(wrapped.key_arn for wrapped in header.wrapped_keys),
            plaintext_bytes=decryptor.plaintext_bytes,
            message_bytes=read,
            key_arn=key_arn,
            region=region,
        )

    def encrypt_chunks(
        self,
        chunks: Iterable[bytes],
        *,
        encryption_context: Mapping[str, str] | None = None,
    ) -> Iterator[bytes | bytearray]:
        """The message, piece by piece, for plaintext given piece by piece. Each piece
        is a new object the caller may keep."""
        encryptor, _ = self._encryptor(encryption_context, None)
        yield encryptor.header
        for chunk in chunks:
            if sealed := encryptor.update(chunk):
                yield sealed
        yield encryptor.finish()

    def decrypt_chunks(
        self, chunks: Iterable[bytes], *, expected_context: Mapping[str, str] | None = None
    ) -> Iterator[bytes | bytearray]:
        """The plaintext, frame by frame, of a message given piece by piece. The last
        piece comes only once the message is known to be complete."""
        decryptor = MessageDecryptor()
        pieces = iter(chunks)
        header: Header | None = None
        for chunk in pieces:
            header = decryptor.read_header(chunk)
            if header is not None:
                break
        if header is None:
            decryptor.end_of_header_input()
        check_expected_context(header, expected_context)
        data_key, _, _ = self._unwrap(header)
        if opened := decryptor.begin(data_key):
            yield opened
        for chunk in pieces:
            if opened := decryptor.update(chunk):
                yield opened
        decryptor.finish()

    # ---- files ---------------------------------------------------------------------------

    def encrypt_file(
        self,
        source: str | os.PathLike[str],
        destination: str | os.PathLike[str],
        *,
        encryption_context: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> MessageInfo:
        """Encrypt a file; ``destination`` appears only once the message is complete."""
        with open(source, "rb") as reader:
            length = os.fstat(reader.fileno()).st_size
            with _replacing(Path(destination)) as writer:
                return self.encrypt_stream(
                    reader,
                    writer,
                    encryption_context=encryption_context,
                    plaintext_length=length,
                    progress=progress,
                )

    def decrypt_file(
        self,
        source: str | os.PathLike[str],
        destination: str | os.PathLike[str],
        *,
        expected_context: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> MessageInfo:
        """Decrypt a file; ``destination`` (mode 0600) appears only if the whole message
        authenticated, so a truncated or changed message leaves no partial plaintext."""
        with open(source, "rb") as reader, _replacing(Path(destination)) as writer:
            return self.decrypt_stream(
                reader, writer, expected_context=expected_context, progress=progress
            )

    # ---- data keys -------------------------------------------------------------------------

    def _encryptor(
        self, encryption_context: Mapping[str, str] | None, plaintext_length: int | None
    ) -> tuple[MessageEncryptor, MessageInfo]:
        settings = self._settings
        context, canonical = context_bytes(encryption_context)
        cache_key = settings.encrypt_cache_key(canonical)
        materials = (
            settings.cache.materials_for_encrypt(cache_key, plaintext_length)
            if settings.cache is not None
            else None
        )
        key_arn = region = None
        if materials is None:
            materials, key_arn, region = self._new_data_key(context)
            if settings.cache is not None:
                settings.cache.put_for_encrypt(cache_key, materials, plaintext_length)
        encryptor = MessageEncryptor(
            data_key=materials.data_key,
            wrapped_keys=materials.wrapped_keys,
            encryption_context=context,
            frame_length=settings.frame_length,
            message_id=self._randbytes(MESSAGE_ID_BYTES),
        )
        info = MessageInfo(
            encryption_context=context,
            wrapped_key_arns=tuple(wrapped.key_arn for wrapped in materials.wrapped_keys),
            plaintext_bytes=0,
            message_bytes=0,
            key_arn=key_arn,
            region=region,
        )
        return encryptor, info

    def _new_data_key(self, context: dict[str, str]) -> tuple[EncryptionMaterials, str, str]:
        generator, others = self._settings.wrapping_keys()
        generated = self._kms.generate_data_key(
            key_id=generator, encryption_context=context, key_spec="AES_256"
        )
        data_key = checked_data_key(generated.plaintext, "GenerateDataKey")
        wrapped = [wrapped_from(generated.key_id, generated.ciphertext_blob, "GenerateDataKey")]
        for key_id in others:
            sealed = self._kms.encrypt(
                key_id=key_id, plaintext=data_key, encryption_context=context
            )
            wrapped.append(wrapped_from(sealed.key_id, sealed.ciphertext_blob, "Encrypt"))
        return EncryptionMaterials(data_key, tuple(wrapped)), generated.key_id, generated.region

    def _unwrap(self, header: Header) -> tuple[bytes, str | None, str | None]:
        settings = self._settings
        cache_key = settings.decrypt_cache_key(header)
        if settings.cache is not None:
            cached = settings.cache.data_key_for_decrypt(cache_key)
            if cached is not None:
                return cached, None, None
        attempts: list[tuple[str, str]] = []
        for unwrap in settings.unwraps(header, self._kms.stats()):
            try:
                result = self._kms.decrypt(
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


def _with_sizes(info: MessageInfo, plaintext_bytes: int, message_bytes: int) -> MessageInfo:
    return MessageInfo(
        encryption_context=info.encryption_context,
        wrapped_key_arns=info.wrapped_key_arns,
        plaintext_bytes=plaintext_bytes,
        message_bytes=message_bytes,
        key_arn=info.key_arn,
        region=info.region,
    )


def _write(destination: Writable, data: bytes | bytearray) -> int:
    if data:
        destination.write(data)
    return len(data)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._offset = 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._view) if size < 0 else self._offset + size
        chunk = bytes(self._view[self._offset : end])
        self._offset += len(chunk)
        return chunk


class _ListWriter:
    def __init__(self, parts: list[bytes | bytearray]) -> None:
        self._parts = parts

    def write(self, data: bytes | bytearray, /) -> int:
        self._parts.append(data)
        return len(data)


@contextlib.contextmanager
def _replacing(destination: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``destination`` that replaces it only on success."""
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent or "."
    )
    try:
        with os.fdopen(descriptor, "wb") as writer:
            yield writer
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
