"""The symmetric ciphertext blob: published vectors, round trips, and every way to fail."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.server.domain.crypto.blob import (
    BLOB_BYTES_MAX,
    FORMAT_VERSION,
    PLAINTEXT_BYTES_MAX,
    BlobHeader,
    blob_overhead_bytes,
    open_blob,
    parse_header,
    seal,
)
from meridian.server.domain.crypto.context import canonical_encryption_context
from meridian.server.domain.errors import InvalidCiphertextException, ValidationException

REPOSITORY = Path(__file__).resolve().parents[2]
VECTORS_PATH = REPOSITORY / "tests" / "vectors" / "ciphertext_v1.json"
DOC_PATH = REPOSITORY / "docs" / "ciphertext-format.md"
VECTOR_FILE: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS: list[dict[str, Any]] = VECTOR_FILE["vectors"]
NEGATIVE_VECTORS: list[dict[str, Any]] = VECTOR_FILE["negative_vectors"]

MATERIAL = bytes(range(32))
OTHER_MATERIAL = bytes(range(1, 33))
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"
KEY_MATERIAL_ID = bytes(range(0x20, 0x40))
CONTEXT = {"purpose": "backup", "tenant": "acme"}


def fixed_randbytes(*chunks: bytes) -> Callable[[int], bytes]:
    """A random source that returns ``chunks`` in order and checks each requested size."""
    queue = list(chunks)

    def randbytes(size: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == size, f"asked for {size} bytes, next chunk has {len(chunk)}"
        return chunk

    return randbytes


def sealed(
    plaintext: bytes = b"attack at dawn",
    context: dict[str, str] | None = None,
    key_id: str = KEY_ID,
) -> bytes:
    return seal(
        MATERIAL,
        key_id=key_id,
        key_material_id=KEY_MATERIAL_ID,
        plaintext=plaintext,
        encryption_context=CONTEXT if context is None else context,
    )


def assert_opaque_failure(blob: bytes, context: dict[str, str], material: bytes = MATERIAL) -> None:
    with pytest.raises(InvalidCiphertextException) as raised:
        open_blob(material, blob, encryption_context=context)
    assert raised.value.message == InvalidCiphertextException.OPAQUE_MESSAGE
    # Not even the exception chain may say why: no cause, and no context shown.
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__ or raised.value.__context__ is None


# Published vectors.


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector_seals_exactly(vector: dict[str, Any]) -> None:
    blob = seal(
        bytes.fromhex(vector["material"]),
        key_id=vector["key_id"],
        key_material_id=bytes.fromhex(vector["key_material_id"]),
        plaintext=bytes.fromhex(vector["plaintext"]),
        encryption_context=vector["encryption_context"],
        randbytes=fixed_randbytes(bytes.fromhex(vector["salt"]), bytes.fromhex(vector["nonce"])),
    )
    assert blob.hex() == vector["blob"]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector_opens_and_names_its_key(vector: dict[str, Any]) -> None:
    blob = bytes.fromhex(vector["blob"])
    plaintext = open_blob(
        bytes.fromhex(vector["material"]), blob, encryption_context=vector["encryption_context"]
    )
    assert plaintext.hex() == vector["plaintext"]
    assert parse_header(blob) == BlobHeader(
        key_id=vector["key_id"], key_material_id=bytes.fromhex(vector["key_material_id"])
    )
    assert parse_header(blob).key_material_id_hex == vector["key_material_id"]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector_matches_an_independent_computation(vector: dict[str, Any]) -> None:
    """Recompute each vector from the spec with cryptography directly, not through seal."""
    material = bytes.fromhex(vector["material"])
    salt = bytes.fromhex(vector["salt"])
    nonce = bytes.fromhex(vector["nonce"])
    key_id = vector["key_id"].encode("ascii")
    context = bytes.fromhex(vector["canonical_encryption_context"])
    assert canonical_encryption_context(vector["encryption_context"]) == context

    message_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=salt,
        info=b"meridian/kms/v1/symmetric-message-key",
    ).derive(material)
    assert message_key.hex() == vector["message_key"]
    header = (
        bytes([0x01, len(key_id)])
        + key_id
        + bytes.fromhex(vector["key_material_id"])
        + salt
        + nonce
    )
    assert len(header) == 78 + len(key_id)
    ciphertext = AESGCM(message_key).encrypt(
        nonce, bytes.fromhex(vector["plaintext"]), header + context
    )
    assert (header + ciphertext).hex() == vector["blob"]


def test_every_vector_is_published_in_the_doc() -> None:
    doc = re.sub(r"\s+", "", DOC_PATH.read_text(encoding="utf-8"))
    for vector in VECTORS:
        for field in ("blob", "message_key", "canonical_encryption_context", "material"):
            assert vector[field] in doc, f"{vector['name']}: {field} is not in {DOC_PATH.name}"
        assert vector["key_id"] in doc


def test_vectors_cover_the_cases_the_doc_promises() -> None:
    assert any(not vector["encryption_context"] for vector in VECTORS)
    assert any(
        len(vector["encryption_context"]) >= 2
        and not "".join(vector["encryption_context"]).isascii()
        and not "".join(vector["encryption_context"].values()).isascii()
        for vector in VECTORS
    )
    assert any(vector["key_id"].startswith("mrk-") for vector in VECTORS)


def test_the_docs_python_snippet_opens_every_vector() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    snippets = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert len(snippets) == 1
    namespace: dict[str, Any] = {}
    exec(snippets[0], namespace)
    for vector in VECTORS:
        plaintext = namespace["open_v1"](
            bytes.fromhex(vector["material"]),
            bytes.fromhex(vector["blob"]),
            bytes.fromhex(vector["canonical_encryption_context"]),
        )
        assert plaintext.hex() == vector["plaintext"]


@pytest.mark.parametrize(
    "negative", NEGATIVE_VECTORS, ids=[negative["name"] for negative in NEGATIVE_VECTORS]
)
def test_negative_vector_fails_to_open(negative: dict[str, Any]) -> None:
    (base,) = [vector for vector in VECTORS if vector["name"] == negative["vector"]]
    assert_opaque_failure(
        bytes.fromhex(negative["blob"]),
        negative["encryption_context"],
        material=bytes.fromhex(base["material"]),
    )


# Round trips.


@settings(max_examples=150, deadline=None)
@given(
    plaintext=st.binary(min_size=1, max_size=PLAINTEXT_BYTES_MAX),
    context=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=6),
    key_id=st.sampled_from([KEY_ID, MRK_ID, "k", "x" * 64]),
    material=st.binary(min_size=32, max_size=32),
)
def test_round_trip(
    plaintext: bytes, context: dict[str, str], key_id: str, material: bytes
) -> None:
    blob = seal(
        material,
        key_id=key_id,
        key_material_id=KEY_MATERIAL_ID,
        plaintext=plaintext,
        encryption_context=context,
    )
    assert len(blob) == blob_overhead_bytes(key_id) + len(plaintext) <= BLOB_BYTES_MAX
    assert parse_header(blob) == BlobHeader(key_id=key_id, key_material_id=KEY_MATERIAL_ID)
    assert open_blob(material, blob, encryption_context=dict(reversed(context.items()))) == (
        plaintext
    )


def test_empty_plaintext_round_trips_at_the_format_level() -> None:
    # The API refuses empty plaintext as AWS does; the format itself allows it.
    assert open_blob(MATERIAL, sealed(b""), encryption_context=CONTEXT) == b""


def test_largest_plaintext_and_key_id_fit_the_blob_limit() -> None:
    blob = sealed(b"\x00" * PLAINTEXT_BYTES_MAX, key_id="k" * 64)
    assert len(blob) == 94 + 64 + PLAINTEXT_BYTES_MAX <= BLOB_BYTES_MAX
    assert open_blob(MATERIAL, blob, encryption_context=CONTEXT) == b"\x00" * PLAINTEXT_BYTES_MAX


def test_each_seal_draws_a_fresh_salt_and_nonce() -> None:
    first, second = sealed(), sealed()
    assert first != second
    header_end = 78 + len(KEY_ID)
    assert first[header_end - 44 : header_end - 12] != second[header_end - 44 : header_end - 12]
    assert first[header_end - 12 : header_end] != second[header_end - 12 : header_end]


def test_overhead_is_94_bytes_plus_the_key_id() -> None:
    assert blob_overhead_bytes(KEY_ID) == 130
    assert blob_overhead_bytes(MRK_ID) == 130
    assert len(sealed(b"12345")) == 135


def test_context_order_is_irrelevant() -> None:
    blob = sealed(context={"a": "1", "b": "2", "c": "3"})
    for context in ({"c": "3", "a": "1", "b": "2"}, {"b": "2", "c": "3", "a": "1"}):
        assert open_blob(MATERIAL, blob, encryption_context=context) == b"attack at dawn"


# Every way to fail.


def test_changing_any_single_byte_fails() -> None:
    blob = sealed(b"short")
    for position in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            assert_opaque_failure(bytes(tampered), CONTEXT)


def test_truncation_at_every_length_fails() -> None:
    blob = sealed(b"short")
    for length in range(len(blob)):
        assert_opaque_failure(blob[:length], CONTEXT)


@pytest.mark.parametrize("suffix", [b"\x00", b"\x00" * 16, b"garbage"])
def test_appended_bytes_fail(suffix: bytes) -> None:
    assert_opaque_failure(sealed() + suffix, CONTEXT)


@pytest.mark.parametrize(
    "context",
    [
        {"purpose": "backup", "tenant": "acme-2"},
        {"purpose": "backup", "tenant": "Acme"},
        {"purpose": "backup", "Tenant": "acme"},
        {"purpose": "backup", "tenant": "acme", "extra": ""},
        {"purpose": "backup"},
        {"purpose": "backup", "tenant": "acme "},
        {"purpose": "acme", "tenant": "backup"},
        {},
    ],
)
def test_any_other_context_fails(context: dict[str, str]) -> None:
    assert_opaque_failure(sealed(), context)


def test_empty_context_blob_fails_with_any_context() -> None:
    assert_opaque_failure(sealed(context={}), {"k": ""})


def test_wrong_material_fails() -> None:
    assert_opaque_failure(sealed(), CONTEXT, material=OTHER_MATERIAL)


def test_changing_the_key_id_in_the_header_fails() -> None:
    # The same length keeps the structure valid, so only authentication can catch it.
    blob = sealed(key_id=KEY_ID)
    moved = blob.replace(KEY_ID.encode(), KEY_ID.replace("1234abcd", "ffffffff").encode())
    assert parse_header(moved).key_id != KEY_ID
    assert_opaque_failure(moved, CONTEXT)


def test_splicing_ciphertexts_between_blobs_fails() -> None:
    first, second = sealed(b"first message"), sealed(b"other message")
    header_end = 78 + len(KEY_ID)
    assert_opaque_failure(first[:header_end] + second[header_end:], CONTEXT)


def test_invalid_context_when_opening_is_a_validation_error() -> None:
    with pytest.raises(ValidationException):
        open_blob(MATERIAL, sealed(), encryption_context={"": "v"})


# Header parsing.


def test_parse_header_reads_without_decrypting() -> None:
    header = parse_header(sealed(key_id=MRK_ID))
    assert header == BlobHeader(key_id=MRK_ID, key_material_id=KEY_MATERIAL_ID)


def valid_blob_with(**changes: int) -> bytes:
    """A sealed blob with single bytes replaced, by offset name."""
    blob = bytearray(sealed())
    offsets = {"version": 0, "key_id_length": 1, "key_id_first": 2}
    for name, value in changes.items():
        blob[offsets[name]] = value
    return bytes(blob)


def padded_to(length: int) -> bytes:
    """A sealed blob with zero bytes appended up to ``length``."""
    blob = sealed()
    return blob + bytes(length - len(blob))


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01", id="version-only"),
        pytest.param(b"\x01\x24" + b"\x7f" * 200, id="key-id-delete-characters"),
        pytest.param(valid_blob_with(version=0), id="version-0"),
        pytest.param(valid_blob_with(version=2), id="version-2"),
        pytest.param(valid_blob_with(version=0xFF), id="version-255"),
        pytest.param(valid_blob_with(key_id_length=0), id="key-id-length-0"),
        pytest.param(valid_blob_with(key_id_length=65), id="key-id-length-65"),
        pytest.param(valid_blob_with(key_id_length=0xFF), id="key-id-length-255"),
        pytest.param(valid_blob_with(key_id_first=0x80), id="key-id-non-ascii"),
        pytest.param(valid_blob_with(key_id_first=0x20), id="key-id-space"),
        pytest.param(valid_blob_with(key_id_first=0x00), id="key-id-nul"),
        pytest.param(sealed()[: 78 + len(KEY_ID) + 15], id="tag-incomplete"),
        pytest.param(padded_to(BLOB_BYTES_MAX + 1), id="longer-than-6144"),
        pytest.param(b"\x01\x01k" + b"\x00" * 91, id="one-byte-short-of-minimum"),
    ],
)
def test_malformed_headers_are_invalid_ciphertext(blob: bytes) -> None:
    with pytest.raises(InvalidCiphertextException) as raised:
        parse_header(blob)
    assert raised.value.message == InvalidCiphertextException.OPAQUE_MESSAGE
    assert_opaque_failure(blob, CONTEXT)


def test_shortest_well_formed_blob_parses() -> None:
    blob = b"\x01\x01k" + bytes(32) + bytes(32) + bytes(12) + bytes(16)
    assert len(blob) == 95
    assert parse_header(blob) == BlobHeader(key_id="k", key_material_id=bytes(32))


def test_blob_of_exactly_the_size_limit_parses() -> None:
    # Structure alone is checked here; the appended zeros then fail authentication.
    assert parse_header(padded_to(BLOB_BYTES_MAX)).key_id == KEY_ID
    assert_opaque_failure(padded_to(BLOB_BYTES_MAX), CONTEXT)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=BLOB_BYTES_MAX + 100))
def test_garbage_never_raises_anything_but_invalid_ciphertext(garbage: bytes) -> None:
    with contextlib.suppress(InvalidCiphertextException):
        parse_header(garbage)
    with pytest.raises(InvalidCiphertextException):
        open_blob(MATERIAL, garbage, encryption_context={})


@settings(max_examples=300, deadline=None)
@given(
    key_id_length=st.integers(min_value=0, max_value=255),
    rest=st.binary(max_size=300),
)
def test_garbage_with_a_valid_version_never_raises_anything_else(
    key_id_length: int, rest: bytes
) -> None:
    garbage = bytes([FORMAT_VERSION, key_id_length]) + rest
    try:
        header = parse_header(garbage)
    except InvalidCiphertextException:
        pass
    else:
        assert len(header.key_id) == key_id_length
        assert len(header.key_material_id) == 32
    with pytest.raises(InvalidCiphertextException):
        open_blob(MATERIAL, garbage, encryption_context={})


# Programming errors and bad input to seal.


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"material": bytes(31)}, "material must be 32 bytes"),
        ({"material": bytes(33)}, "material must be 32 bytes"),
        ({"key_material_id": bytes(16)}, "key_material_id must be 32 bytes"),
        ({"key_id": ""}, "key_id must be"),
        ({"key_id": "k" * 65}, "key_id must be"),
        ({"key_id": "clé"}, "key_id must be"),
        ({"key_id": "has space"}, "key_id must be"),
        ({"randbytes": lambda size: bytes(size - 1)}, r"randbytes\(32\) must be 32 bytes"),
    ],
)
def test_seal_refuses_arguments_only_a_bug_can_produce(
    arguments: dict[str, Any], message: str
) -> None:
    keyword: dict[str, Any] = {
        "key_id": KEY_ID,
        "key_material_id": KEY_MATERIAL_ID,
        "plaintext": b"p",
        "encryption_context": {},
    }
    material = arguments.pop("material", MATERIAL)
    keyword.update(arguments)
    with pytest.raises(ValueError, match=message):
        seal(material, **keyword)


def test_open_refuses_material_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="material must be 32 bytes"):
        open_blob(bytes(16), sealed(), encryption_context=CONTEXT)


def test_seal_refuses_plaintext_over_the_limit() -> None:
    with pytest.raises(ValidationException, match="at most 4096 bytes"):
        sealed(b"x" * (PLAINTEXT_BYTES_MAX + 1))


def test_seal_refuses_an_invalid_context() -> None:
    with pytest.raises(ValidationException, match="must not be empty"):
        sealed(context={"": "v"})
