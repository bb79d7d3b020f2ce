"""The envelope format against its published vectors (docs/envelope-format.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meridian.client.envelope import InvalidMessageError, MessageDecryptor, MessageEncryptor
from meridian.client.envelope.format import WrappedKey

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "envelope_v1.json").read_text("utf-8"))
DOC = (ROOT / "docs" / "envelope-format.md").read_text("utf-8")
BY_NAME = {vector["name"]: vector for vector in VECTORS["vectors"]}


def _open(message: bytes, data_key: bytes, *, chunk: int | None = None) -> bytes:
    decryptor = MessageDecryptor()
    pieces = (
        [message]
        if chunk is None
        else [message[start : start + chunk] for start in range(0, len(message), chunk)]
    )
    header = None
    remaining = iter(pieces)
    for piece in remaining:
        header = decryptor.read_header(piece)
        if header is not None:
            break
    if header is None:
        decryptor.end_of_header_input()
    plaintext = [decryptor.begin(data_key)]
    plaintext += [decryptor.update(piece) for piece in remaining]
    decryptor.finish()
    return b"".join(plaintext)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_the_encryptor_reproduces_each_vector(vector: dict[str, Any]) -> None:
    encryptor = MessageEncryptor(
        data_key=bytes.fromhex(vector["data_key"]),
        wrapped_keys=tuple(
            WrappedKey(item["key_arn"], bytes.fromhex(item["ciphertext_blob"]))
            for item in vector["wrapped_keys"]
        ),
        encryption_context=vector["encryption_context"],
        frame_length=vector["frame_length"],
        message_id=bytes.fromhex(vector["message_id"]),
    )
    plaintext = bytes.fromhex(vector["plaintext"])
    # Fed one byte at a time: framing must not depend on how plaintext arrives.
    message = encryptor.header + b"".join(encryptor.update(bytes([b])) for b in plaintext)
    message += encryptor.finish()
    assert message.hex() == vector["message"]
    assert len(encryptor.header) == vector["header_length"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
@pytest.mark.parametrize("chunk", [None, 1, 7, 4096])
def test_each_vector_opens(vector: dict[str, Any], chunk: int | None) -> None:
    message = bytes.fromhex(vector["message"])
    assert (
        _open(message, bytes.fromhex(vector["data_key"]), chunk=chunk).hex()
        == (vector["plaintext"])
    )


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_vectors_follow_the_documented_derivation(vector: dict[str, Any]) -> None:
    """An independent reading of the spec: HKDF, the header tag and the first frame."""
    data_key = bytes.fromhex(vector["data_key"])
    message_id = bytes.fromhex(vector["message_id"])
    message = bytes.fromhex(vector["message"])

    def derive(label: bytes) -> bytes:
        info = b"meridian/envelope/v1/" + label + b"\x01"
        return HKDF(hashes.SHA512(), 32, message_id, info).derive(data_key)

    key, commitment = derive(b"encryption-key"), derive(b"commitment")
    assert (key.hex(), commitment.hex()) == (vector["encryption_key"], vector["commitment"])
    header_length = vector["header_length"]
    assert message[:6] == b"MENV\x01\x01"
    assert message[header_length - 48 : header_length - 16] == commitment
    aead = AESGCM(key)
    tag = aead.encrypt(bytes(12), b"", message[: header_length - 16])
    assert message[header_length - 16 : header_length] == tag
    frames = message[header_length:]
    frame_length = vector["frame_length"]
    plaintext = bytes.fromhex(vector["plaintext"])
    if len(plaintext) > frame_length:
        aad = bytes([0]) + (1).to_bytes(8, "big") + frame_length.to_bytes(4, "big")
        first = aead.decrypt((1).to_bytes(12, "big"), frames[1 : 1 + frame_length + 16], aad)
        assert first == plaintext[:frame_length]


@pytest.mark.parametrize("vector", VECTORS["negative"], ids=lambda vector: vector["name"])
def test_negative_vectors_do_not_open(vector: dict[str, Any]) -> None:
    data_key = vector.get("data_key", BY_NAME["three-frames-two-keys"]["data_key"])
    for chunk in (None, 5):
        with pytest.raises(InvalidMessageError):
            _open(bytes.fromhex(vector["message"]), bytes.fromhex(data_key), chunk=chunk)


def test_the_document_shows_every_vector() -> None:
    for vector in VECTORS["vectors"]:
        block = "\n".join(textwrap.wrap(vector["message"], 64))
        assert block in DOC, f"docs/envelope-format.md lacks vector {vector['name']}"
        assert vector["encryption_key"] in DOC
        assert vector["commitment"] in DOC


def test_the_vector_file_is_what_the_generator_makes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-envelope-vectors"), "--check"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, "tests/vectors/envelope_v1.json is stale"
