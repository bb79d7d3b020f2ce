"""Sealing and opening messages frame by frame, without I/O (sans-IO).

``MessageEncryptor`` turns plaintext pushed in any pieces into the message's bytes;
``MessageDecryptor`` does the reverse. Neither holds more than one frame (plus the
piece it was given), so messages of any size stream in bounded memory. Both are pure
computation: the KMS calls that produce or unwrap the data key, and the reading and
writing, are the caller's (``Envelope``/``AsyncEnvelope``), which keeps this code the
same for the blocking and the asyncio API and lets the test vectors drive it directly.

Speed: frames are sealed and opened in place (AES-GCM reads from a view of the input
and writes into one output buffer per call), because at these rates the cost of a
large buffer is its allocation, not the cipher. ``update`` therefore returns a
``bytearray`` (a fresh one each time, the caller's to keep).

A decryptor hands out each frame's plaintext as soon as that frame authenticates, but
only ``finish()`` proves that the message was complete: a consumer of a stream must
treat everything it received as untrusted until then (the file API writes to a
temporary file and renames it only after ``finish()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from meridian.client.envelope._recipe import Buffer, MessageKeys, frame_aad
from meridian.client.envelope.errors import InvalidMessageError
from meridian.client.envelope.format import (
    FRAME_FINAL,
    FRAME_REGULAR,
    FRAMES_MAX,
    SUITE_AES256_GCM_HKDF_SHA512_COMMIT,
    TAG_BYTES,
    Header,
    HeaderReader,
    WrappedKey,
    canonical_context,
    header_body,
)

__all__ = ["MessageDecryptor", "MessageEncryptor"]

_LENGTH_BYTES = 4


class MessageEncryptor:
    def __init__(
        self,
        *,
        data_key: bytes,
        wrapped_keys: tuple[WrappedKey, ...],
        encryption_context: Mapping[str, str],
        frame_length: int,
        message_id: bytes,
    ) -> None:
        suite = SUITE_AES256_GCM_HKDF_SHA512_COMMIT
        self._keys = MessageKeys(data_key, message_id, suite)
        body = header_body(
            message_id=message_id,
            frame_length=frame_length,
            canonical=canonical_context(encryption_context),
            wrapped_keys=wrapped_keys,
            commitment=self._keys.commitment,
        )
        self.header = body + self._keys.seal(0, b"", body)
        self._frame_length = frame_length
        self._buffer = bytearray()
        self._sequence = 0
        self._finished = False
        self.plaintext_bytes = 0

    def update(self, plaintext: Buffer) -> bytearray:
        """Take plaintext; return the frames it completed (possibly none).

        A frame is sealed only once more plaintext follows it: the last frame must be
        the final one, and only ``finish()`` knows which that is. Whole frames are
        sealed straight from ``plaintext``; at most one frame waits in a buffer.
        """
        if self._finished:
            raise ValueError("the message is already finished")
        self.plaintext_bytes += len(plaintext)
        view = memoryview(plaintext)
        frame_length = self._frame_length
        contents: list[Buffer] = []
        offset = 0
        if self._buffer:
            missing = frame_length - len(self._buffer)
            if len(view) <= missing:
                self._buffer += view
                return bytearray()
            self._buffer += view[:missing]
            offset = missing
            contents.append(self._buffer)
            self._buffer = bytearray()
        while len(view) - offset > frame_length:
            contents.append(view[offset : offset + frame_length])
            offset += frame_length
        self._buffer += view[offset:]
        return self._seal(FRAME_REGULAR, contents)

    def finish(self) -> bytearray:
        """The final frame: whatever plaintext is left, up to one frame (none if empty)."""
        if self._finished:
            raise ValueError("the message is already finished")
        self._finished = True
        content, self._buffer = self._buffer, bytearray()
        return self._seal(FRAME_FINAL, [content])

    def _seal(self, frame_type: int, contents: list[Buffer]) -> bytearray:
        prefix_bytes = 1 if frame_type == FRAME_REGULAR else 1 + _LENGTH_BYTES
        output = bytearray(sum(prefix_bytes + len(item) + TAG_BYTES for item in contents))
        target = memoryview(output)
        position = 0
        for content in contents:
            self._sequence += 1
            if self._sequence > FRAMES_MAX:
                raise ValueError(f"a message holds at most {FRAMES_MAX} frames")
            output[position] = frame_type
            if frame_type == FRAME_FINAL:
                output[position + 1 : position + prefix_bytes] = len(content).to_bytes(
                    _LENGTH_BYTES, "big"
                )
            start = position + prefix_bytes
            end = start + len(content) + TAG_BYTES
            aad = frame_aad(frame_type, self._sequence, len(content))
            self._keys.seal_into(self._sequence, content, aad, target[start:end])
            position = end
        return output


class MessageDecryptor:
    """Open a message: ``read_header`` until it returns the header, ``begin`` with the
    data key, then ``update`` with the rest and ``finish`` at the end of input."""

    def __init__(self) -> None:
        self._header_reader = HeaderReader()
        self.header: Header | None = None
        self._keys: MessageKeys | None = None
        self._pending = bytearray()  # a frame cut between two pieces of input
        self._rest = b""  # what followed the header, until begin()
        self._sequence = 0
        self._final_read = False  # the final frame is among those taken in
        self._final_opened = False  # ... and it authenticated
        self.plaintext_bytes = 0

    def read_header(self, data: bytes) -> Header | None:
        if self.header is not None:
            raise ValueError("the header was already read")
        parsed = self._header_reader.feed(data)
        if parsed is None:
            return None
        self.header, self._rest = parsed
        return self.header

    def end_of_header_input(self) -> NoReturn:
        """The input ended before the header was complete: raise."""
        self._header_reader.finish()

    def begin(self, data_key: bytes) -> bytearray:
        """Check the data key against the header (commitment, then header tag); returns
        the plaintext of frames already read with the header."""
        header = self.header
        if header is None:
            raise ValueError("read the header first")
        keys = MessageKeys(data_key, header.message_id, header.suite)
        keys.check_commitment(header.commitment)
        keys.open(0, header.tag, header.authenticated)
        self._keys = keys
        rest, self._rest = self._rest, b""
        return self.update(rest)

    def update(self, data: Buffer) -> bytearray:
        """Take message bytes; return the plaintext of every frame they completed.

        Whole frames are opened straight from ``data``; only a frame cut between two
        pieces is copied, into a buffer of at most one frame.
        """
        if self._keys is None:
            raise ValueError("begin() with the data key first")
        view = memoryview(data)
        frames: list[memoryview] = []
        offset = 0
        while self._pending:
            size = self._frame_size(self._pending)
            wanted = (size if size is not None else 1 + _LENGTH_BYTES) - len(self._pending)
            taken = view[offset : offset + wanted]
            self._pending += taken
            offset += len(taken)
            if size is None and self._frame_size(self._pending) is not None:
                continue  # the frame's length is known now: take the rest of it
            if size is None or len(self._pending) < size:
                return self._open(frames)  # this piece ended inside the frame
            frames.append(memoryview(self._pending))
            self._pending = bytearray()
            self._take(frames[-1])
        while offset < len(view):
            size = self._frame_size(view[offset:])
            if size is None or offset + size > len(view):
                self._pending += view[offset:]
                break
            frames.append(view[offset : offset + size])
            self._take(frames[-1])
            offset += size
        return self._open(frames)

    def finish(self) -> None:
        """The input ended: raise unless the message ended with its final frame."""
        if not self._final_opened:
            raise InvalidMessageError("The message is truncated: it has no final frame.")

    def _frame_size(self, head: Buffer) -> int | None:
        """The size of the frame ``head`` starts, or None if ``head`` is too short to tell."""
        if self._final_read:
            raise InvalidMessageError("The message has bytes after its final frame.")
        assert self.header is not None
        if not head:
            return None
        if head[0] == FRAME_REGULAR:
            return 1 + self.header.frame_length + TAG_BYTES
        if head[0] != FRAME_FINAL:
            raise InvalidMessageError()
        if len(head) < 1 + _LENGTH_BYTES:
            return None
        content_length = int.from_bytes(head[1 : 1 + _LENGTH_BYTES], "big")
        if content_length > self.header.frame_length:
            raise InvalidMessageError()
        return 1 + _LENGTH_BYTES + content_length + TAG_BYTES

    def _take(self, frame: memoryview) -> None:
        self._final_read = frame[0] == FRAME_FINAL

    def _open(self, frames: list[memoryview]) -> bytearray:
        """Authenticate and decrypt whole frames (as ``_frame_size`` measured them)."""
        assert self._keys is not None
        starts = [1 if frame[0] == FRAME_REGULAR else 1 + _LENGTH_BYTES for frame in frames]
        lengths = [
            len(frame) - start - TAG_BYTES for frame, start in zip(frames, starts, strict=True)
        ]
        output = bytearray(sum(lengths))
        target = memoryview(output)
        position = 0
        for frame, start, length in zip(frames, starts, lengths, strict=True):
            sequence = self._sequence + 1
            if sequence > FRAMES_MAX:
                raise InvalidMessageError()
            aad = frame_aad(frame[0], sequence, length)
            self._keys.open_into(sequence, frame[start:], aad, target[position : position + length])
            self._sequence = sequence
            self._final_opened = frame[0] == FRAME_FINAL
            position += length
        self.plaintext_bytes += len(output)
        return output
