"""Envelope encryption through the real clients over the scripted in-memory KMS.

Round trips of every size class (streamed, never from disk for the large ones), every
kind of damage to a message, the encryption context, several wrapping keys (each one
alone must open the message), failover while unwrapping, files, and the async twin.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from client_fakes import FakeKeyring, FakeNetwork

from meridian.client import KmsClient, NotFoundException
from meridian.client.envelope import (
    AsyncEnvelope,
    EncryptionContextMismatchError,
    Envelope,
    EnvelopeError,
    InvalidMessageError,
    NoDecryptableKeyError,
)
from meridian.client.errors import ClientConfigError

REGIONS = {"us-east-1": 0.010, "eu-west-1": 0.020, "ap-south-1": 0.030}
CONTEXT = {"tenant": "acme", "purpose": "backup"}


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork(dict(REGIONS))


@pytest.fixture
def keyring(network: FakeNetwork) -> FakeKeyring:
    return FakeKeyring(network)


@pytest.fixture
def kms(network: FakeNetwork) -> Iterator[KmsClient]:
    with network.sync_client() as client:
        yield client


def _pattern(total: int, piece: int = 1024 * 1024) -> Iterator[bytes]:
    """``total`` bytes, piece by piece, each piece different (so a swap would show)."""
    block = hashlib.sha256(b"seed").digest() * (piece // 32)
    for index, start in enumerate(range(0, total, piece)):
        size = min(piece, total - start)
        yield index.to_bytes(8, "big") + block[8:size] if size > 8 else block[:size]


# ---- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 129, 1000])
def test_round_trips_at_frame_boundaries(kms: KmsClient, keyring: FakeKeyring, size: int) -> None:
    key = keyring.add_key("us-east-1")
    envelope = Envelope(kms, [key], frame_length=64)
    plaintext = os.urandom(size)
    message = envelope.encrypt(plaintext, encryption_context=CONTEXT)
    opened = envelope.decrypt(message, expected_context=CONTEXT)
    assert opened.plaintext == plaintext
    assert opened.info.encryption_context == CONTEXT
    assert opened.info.key_arn == key
    assert opened.info.region == "us-east-1"
    assert opened.info.plaintext_bytes == size
    # The same plaintext never gives the same message (fresh data key and message id).
    assert envelope.encrypt(plaintext, encryption_context=CONTEXT) != message


def test_a_multi_gigabyte_stream_round_trips_in_bounded_pieces(
    kms: KmsClient, keyring: FakeKeyring
) -> None:
    """4 GiB and a bit (past 2**32 bytes, so no 32-bit count can hide), generated and
    checked on the fly: every 64 KiB block carries its index, so a lost, repeated or
    swapped block would show, at the cost of a memory compare rather than a hash."""
    envelope = Envelope(kms, [keyring.add_key(None)])
    block = 64 * 1024
    total = 4 * 1024**3 + 12345
    template = hashlib.sha256(b"filler").digest() * (17 * block // 32)

    def stream_bytes(start: int, length: int) -> bytearray:
        """Bytes ``start`` to ``start + length`` of the stream; ``start`` block-aligned."""
        data = bytearray(template[:length])
        for at in range(0, length, block):
            stamp = ((start + at) // block).to_bytes(8, "big")
            data[at : at + min(8, length - at)] = stamp[: length - at]
        return data

    def source() -> Iterator[bytes]:
        for start in range(0, total, 16 * block):
            yield bytes(stream_bytes(start, min(16 * block, total - start)))

    received = 0
    largest = 0
    for piece in envelope.decrypt_chunks(envelope.encrypt_chunks(source())):
        # Plaintext comes out whole frames at a time, never the whole message.
        assert received % block == 0
        assert piece == stream_bytes(received, len(piece)), f"bytes from {received} differ"
        received += len(piece)
        largest = max(largest, len(piece))
    assert received == total
    assert largest <= 17 * block


def test_streaming_memory_is_bounded_by_a_frame_and_a_chunk(
    kms: KmsClient, keyring: FakeKeyring
) -> None:
    envelope = Envelope(kms, [keyring.add_key(None)])

    class Sink:
        def __init__(self) -> None:
            self.size = 0

        def write(self, data: bytes) -> int:
            self.size += len(data)
            return len(data)

    class Source:
        def __init__(self, total: int) -> None:
            self._pieces = _pattern(total)

        def read(self, size: int = -1) -> bytes:
            return next(self._pieces, b"")

    total = 64 * 1024 * 1024
    tracemalloc.start()
    try:
        encrypted = Sink()
        envelope.encrypt_stream(Source(total), encrypted, encryption_context=CONTEXT)
        _, encrypt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert encrypted.size > total
    # A 1 MiB read, a frame or two and their copies; never the 64 MiB message.
    assert encrypt_peak < 8 * 1024 * 1024


# ---- damage --------------------------------------------------------------------------------


def _small_message(kms: KmsClient, keyring: FakeKeyring) -> tuple[Envelope, bytes]:
    envelope = Envelope(kms, [keyring.add_key("us-east-1")], frame_length=16)
    return envelope, envelope.encrypt(b"x" * 40, encryption_context={"k": "v"})


def test_every_changed_bit_is_refused(kms: KmsClient, keyring: FakeKeyring) -> None:
    envelope, message = _small_message(kms, keyring)
    for offset in range(len(message)):
        for bit in (0x01, 0x80):
            damaged = bytearray(message)
            damaged[offset] ^= bit
            with pytest.raises(EnvelopeError):
                envelope.decrypt(bytes(damaged))


def test_every_truncation_is_refused(kms: KmsClient, keyring: FakeKeyring) -> None:
    envelope, message = _small_message(kms, keyring)
    for length in range(len(message)):
        with pytest.raises(InvalidMessageError):
            envelope.decrypt(message[:length])


def test_reordered_repeated_and_extra_frames_are_refused(
    kms: KmsClient, keyring: FakeKeyring
) -> None:
    envelope, message = _small_message(kms, keyring)
    frame = 1 + 16 + 16
    header = len(message) - 2 * frame - (1 + 4 + 8 + 16)
    first, second = message[header : header + frame], message[header + frame : header + 2 * frame]
    final = message[header + 2 * frame :]
    assert envelope.decrypt(message[:header] + first + second + final).plaintext == b"x" * 40
    for damaged in (
        message[:header] + second + first + final,
        message[:header] + first + first + final,
        message[:header] + first + final,
        message[:header] + first + second,
        message + final,
        message + b"\x00",
    ):
        with pytest.raises(InvalidMessageError):
            envelope.decrypt(damaged)


def test_a_message_from_another_data_key_does_not_mix(kms: KmsClient, keyring: FakeKeyring) -> None:
    _, message = _small_message(kms, keyring)
    _, other = _small_message(kms, keyring)
    # The other message's header (with its wrapped key) and this message's frames: the
    # data key unwraps, but belongs to the other message.
    header = len(message) - (2 * 33 + 29)
    with pytest.raises(InvalidMessageError):
        Envelope(kms, discovery=True).decrypt(other[:header] + message[header:])


def test_not_a_message_says_so(kms: KmsClient, keyring: FakeKeyring) -> None:
    envelope, message = _small_message(kms, keyring)
    with pytest.raises(InvalidMessageError, match="not a Meridian envelope"):
        envelope.decrypt(b"PK\x03\x04 a zip file")
    with pytest.raises(InvalidMessageError, match="version 2"):
        envelope.decrypt(message[:4] + b"\x02" + message[5:])
    with pytest.raises(InvalidMessageError, match="empty"):
        envelope.decrypt(b"")


# ---- the encryption context -----------------------------------------------------------------


def test_the_expected_context_must_be_in_the_message(kms: KmsClient, keyring: FakeKeyring) -> None:
    envelope = Envelope(kms, [keyring.add_key("us-east-1")])
    message = envelope.encrypt(b"data", encryption_context=CONTEXT)
    assert envelope.decrypt(message, expected_context={"tenant": "acme"}).plaintext == b"data"
    for wrong in ({"tenant": "other"}, {"missing": "x"}, {**CONTEXT, "extra": "y"}):
        with pytest.raises(EncryptionContextMismatchError):
            envelope.decrypt(message, expected_context=wrong)


def test_a_changed_context_does_not_open(kms: KmsClient, keyring: FakeKeyring) -> None:
    envelope = Envelope(kms, [keyring.add_key("us-east-1")])
    message = envelope.encrypt(b"data", encryption_context={"tenant": "acme"})
    forged = message.replace(b"acme", b"acmf")
    with pytest.raises(EnvelopeError):
        envelope.decrypt(forged)


def test_invalid_contexts_are_refused_before_any_call(
    network: FakeNetwork, kms: KmsClient, keyring: FakeKeyring
) -> None:
    envelope = Envelope(kms, [keyring.add_key("us-east-1")])
    for context in ({"": "v"}, {f"k{index}": "v" for index in range(65)}, {"k": "v" * 9000}):
        with pytest.raises(ClientConfigError):
            envelope.encrypt(b"x", encryption_context=context)
    assert network.api_calls() == []


# ---- several wrapping keys ---------------------------------------------------------------------


def test_each_wrapping_key_alone_opens_the_message(kms: KmsClient, keyring: FakeKeyring) -> None:
    keys = [keyring.add_key(None), keyring.add_key("eu-west-1"), keyring.add_key("ap-south-1")]
    message = Envelope(kms, keys).encrypt(b"three ways in", encryption_context=CONTEXT)
    for key in keys:
        opened = Envelope(kms, [key]).decrypt(message)
        assert opened.plaintext == b"three ways in"
        assert opened.info.key_arn.rsplit("/", 1)[-1] == key.rsplit("/", 1)[-1]
    assert Envelope(kms, discovery=True).decrypt(message).info.wrapped_key_arns == tuple(keys)


def test_an_mrk_opens_the_message_in_any_region(kms: KmsClient, keyring: FakeKeyring) -> None:
    mrk_in_us = keyring.add_key(None)
    mrk_in_eu = mrk_in_us.replace("us-east-1", "eu-west-1")
    message = Envelope(kms, [mrk_in_us]).encrypt(b"anywhere")
    # The reader names the replica in its own region: an MRK matches across regions.
    assert Envelope(kms, [mrk_in_eu]).decrypt(message).plaintext == b"anywhere"
    single = keyring.add_key("eu-west-1")
    other_region = single.replace("eu-west-1", "ap-south-1")
    message = Envelope(kms, [single]).encrypt(b"here only")
    with pytest.raises(NoDecryptableKeyError, match="none of the message's keys"):
        Envelope(kms, [other_region]).decrypt(message)


def test_a_key_the_reader_was_not_given_is_never_used(
    network: FakeNetwork, kms: KmsClient, keyring: FakeKeyring
) -> None:
    message = Envelope(kms, [keyring.add_key("us-east-1")]).encrypt(b"secret")
    calls = len(network.api_calls("Decrypt"))
    with pytest.raises(NoDecryptableKeyError) as caught:
        Envelope(kms, [keyring.add_key("us-east-1")]).decrypt(message)
    assert caught.value.attempts == ()
    assert len(network.api_calls("Decrypt")) == calls


def test_unwrapping_moves_on_when_a_region_is_down(
    network: FakeNetwork, kms: KmsClient, keyring: FakeKeyring
) -> None:
    in_eu, in_ap = keyring.add_key("eu-west-1"), keyring.add_key("ap-south-1")
    message = Envelope(kms, [in_eu, in_ap]).encrypt(b"survives")
    network.regions["eu-west-1"].state = "down"
    opened = Envelope(kms, discovery=True).decrypt(message)
    assert opened.plaintext == b"survives"
    assert opened.info.region == "ap-south-1"


def test_refusals_are_listed_when_nothing_opens(
    network: FakeNetwork, kms: KmsClient, keyring: FakeKeyring
) -> None:
    in_us, in_eu = keyring.add_key("us-east-1"), keyring.add_key("eu-west-1")
    message = Envelope(kms, [in_us, in_eu]).encrypt(b"locked")
    keyring.denied |= {(in_us.rsplit("/", 1)[-1], "us-east-1")}
    network.regions["eu-west-1"].state = "down"
    with pytest.raises(NoDecryptableKeyError) as caught:
        Envelope(kms, discovery=True).decrypt(message, expected_context={})
    assert dict(caught.value.attempts) == {
        in_us: "AccessDeniedException",
        in_eu: "ServiceUnavailableError",
    }


def test_a_failed_wrap_fails_the_message(kms: KmsClient, keyring: FakeKeyring) -> None:
    missing = "arn:meridian:kms:eu-west-1:111122223333:key/00000000-0000-4000-8000-00000000ffff"
    with pytest.raises(NotFoundException):
        Envelope(kms, [keyring.add_key("us-east-1"), missing]).encrypt(b"x")


def test_configuration_is_checked(kms: KmsClient) -> None:
    with pytest.raises(ClientConfigError, match="discovery"):
        Envelope(kms)
    with pytest.raises(ClientConfigError, match="frame_length"):
        Envelope(kms, ["k"], frame_length=0)
    with pytest.raises(ClientConfigError, match="at most 16"):
        Envelope(kms, [f"k{index}" for index in range(17)])
    with pytest.raises(TypeError):
        Envelope(kms, "mrk-1")  # a string is not a list of keys
    with pytest.raises(ClientConfigError, match="key_ids"):
        Envelope(kms, discovery=True).encrypt(b"x")


# ---- streams and files -------------------------------------------------------------------------


def test_streams_report_progress_and_sizes(kms: KmsClient, keyring: FakeKeyring) -> None:
    envelope = Envelope(kms, [keyring.add_key("us-east-1")])
    plaintext = os.urandom(3 * 1024 * 1024 + 5)
    seen: list[int] = []
    sealed = io.BytesIO()
    info = envelope.encrypt_stream(
        io.BytesIO(plaintext), sealed, plaintext_length=len(plaintext), progress=seen.append
    )
    assert seen[-1] == len(plaintext) and seen == sorted(seen)
    assert (info.plaintext_bytes, info.message_bytes) == (len(plaintext), len(sealed.getvalue()))
    opened = io.BytesIO()
    read: list[int] = []
    info = envelope.decrypt_stream(io.BytesIO(sealed.getvalue()), opened, progress=read.append)
    assert opened.getvalue() == plaintext
    assert read[-1] == len(sealed.getvalue())
    with pytest.raises(ValueError, match="not the"):
        envelope.encrypt_stream(io.BytesIO(b"abc"), io.BytesIO(), plaintext_length=4)


def test_files_appear_only_when_complete(
    kms: KmsClient, keyring: FakeKeyring, tmp_path: Path
) -> None:
    envelope = Envelope(kms, [keyring.add_key("us-east-1")], frame_length=1024)
    source = tmp_path / "plain.bin"
    source.write_bytes(os.urandom(10_000))
    sealed, opened = tmp_path / "plain.bin.menv", tmp_path / "opened.bin"
    envelope.encrypt_file(source, sealed, encryption_context=CONTEXT)
    assert envelope.decrypt_file(sealed, opened).encryption_context == CONTEXT
    assert opened.read_bytes() == source.read_bytes()
    assert opened.stat().st_mode & 0o077 == 0
    # A truncated message: no output file, and no temporary file left behind.
    truncated = tmp_path / "truncated.menv"
    truncated.write_bytes(sealed.read_bytes()[:-100])
    target = tmp_path / "never.bin"
    with pytest.raises(InvalidMessageError):
        envelope.decrypt_file(truncated, target)
    assert not target.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["plain.bin", "plain.bin.menv", "opened.bin", "truncated.menv"]
    )


# ---- the async twin ------------------------------------------------------------------------


async def test_the_async_envelope_round_trips(network: FakeNetwork, keyring: FakeKeyring) -> None:
    keys = [keyring.add_key(None), keyring.add_key("eu-west-1")]
    async with network.async_client() as kms:
        envelope = AsyncEnvelope(kms, keys, frame_length=100)
        message = await envelope.encrypt(b"a" * 1000, encryption_context=CONTEXT)
        opened = await AsyncEnvelope(kms, keys[1:]).decrypt(message, expected_context=CONTEXT)
        assert opened.plaintext == b"a" * 1000
        assert opened.info.region == "eu-west-1"

        async def pieces(data: bytes) -> AsyncIterator[bytes]:
            for start in range(0, len(data), 333):
                yield data[start : start + 333]

        plaintext = os.urandom(5000)
        sealed = b"".join([piece async for piece in envelope.encrypt_chunks(pieces(plaintext))])
        opened_pieces = [piece async for piece in envelope.decrypt_chunks(pieces(sealed))]
        assert b"".join(opened_pieces) == plaintext
        with pytest.raises(InvalidMessageError):
            _ = [piece async for piece in envelope.decrypt_chunks(pieces(sealed[:-1]))]
        # Both blocking and async envelopes read each other's messages.
    with network.sync_client() as blocking:
        assert Envelope(blocking, keys).decrypt(message).plaintext == b"a" * 1000


def test_pattern_pieces_differ() -> None:
    pieces = list(itertools.islice(_pattern(5 * 1024 * 1024), 3))
    assert len(set(pieces)) == 3
