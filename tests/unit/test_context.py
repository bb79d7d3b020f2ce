"""The canonical encryption context: encoding, order independence, and validation."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meridian.server.domain.crypto.context import (
    ENCRYPTION_CONTEXT_BYTES_MAX,
    ENCRYPTION_CONTEXT_PAIRS_MAX,
    canonical_encryption_context,
    validate_encryption_context,
)
from meridian.server.domain.errors import ValidationException

# Small enough that any such context stays inside the size limit: 8 pairs of at most
# 4 * (16 + 32) bytes each.
contexts = st.dictionaries(
    keys=st.text(min_size=1, max_size=16),
    values=st.text(max_size=32),
    max_size=8,
)


def decode_canonical(encoded: bytes) -> list[tuple[str, str]]:
    """An independent reader of the encoding, so the tests do not trust the writer."""
    if not encoded:
        return []
    count = int.from_bytes(encoded[0:2], "big")
    offset = 2
    pairs = []
    for _ in range(count):
        fields = []
        for _ in range(2):
            length = int.from_bytes(encoded[offset : offset + 2], "big")
            fields.append(encoded[offset + 2 : offset + 2 + length].decode("utf-8"))
            offset += 2 + length
        pairs.append((fields[0], fields[1]))
    assert offset == len(encoded), "trailing bytes after the last pair"
    return pairs


def test_empty_context_encodes_as_no_bytes() -> None:
    assert canonical_encryption_context({}) == b""


def test_encoding_of_one_pair_is_count_then_lengths_and_utf8() -> None:
    assert canonical_encryption_context({"a": "é"}) == bytes.fromhex("0001 0001 61 0002 c3a9")


def test_pairs_are_sorted_by_utf8_bytes_of_the_key_not_by_utf16() -> None:
    # U+FF21 sorts before U+1F511 in UTF-8 (ef.. < f0..), but after it in UTF-16, where
    # U+1F511 is the surrogate pair d83d dd11.
    encoded = canonical_encryption_context({"\U0001f511": "2", "\uff21": "1", "b": "", "a": ""})
    assert [key for key, _ in decode_canonical(encoded)] == ["a", "b", "\uff21", "\U0001f511"]


def test_empty_value_is_allowed() -> None:
    assert decode_canonical(canonical_encryption_context({"k": ""})) == [("k", "")]


@given(contexts, st.randoms(use_true_random=False))
def test_order_of_the_input_does_not_matter(context: dict[str, str], rng: random.Random) -> None:
    items = list(context.items())
    rng.shuffle(items)
    assert canonical_encryption_context(dict(items)) == canonical_encryption_context(context)


@given(contexts)
def test_encoding_decodes_to_the_sorted_pairs(context: dict[str, str]) -> None:
    decoded = decode_canonical(canonical_encryption_context(context))
    assert decoded == sorted(context.items(), key=lambda pair: pair[0].encode("utf-8"))


@given(contexts, contexts)
def test_different_contexts_encode_differently(
    first: dict[str, str], second: dict[str, str]
) -> None:
    if first != second:
        assert canonical_encryption_context(first) != canonical_encryption_context(second)


def test_context_of_exactly_the_byte_limit_is_accepted() -> None:
    # Count (2 bytes), key length and key (2 + 1), value length and value (2 + rest).
    value_chars = ENCRYPTION_CONTEXT_BYTES_MAX - 2 - 3 - 2
    encoded = canonical_encryption_context({"k": "v" * value_chars})
    assert len(encoded) == ENCRYPTION_CONTEXT_BYTES_MAX


def test_context_one_byte_over_the_limit_is_refused() -> None:
    value_chars = ENCRYPTION_CONTEXT_BYTES_MAX - 2 - 3 - 2 + 1
    with pytest.raises(ValidationException, match="at most 8192 bytes"):
        canonical_encryption_context({"k": "v" * value_chars})


def test_limit_counts_utf8_bytes_not_characters() -> None:
    # Each "é" is two bytes, so half the characters already reach the byte limit.
    with pytest.raises(ValidationException, match="at most 8192 bytes"):
        validate_encryption_context({"k": "é" * (ENCRYPTION_CONTEXT_BYTES_MAX // 2)})


def test_huge_value_is_refused_without_encoding_it() -> None:
    with pytest.raises(ValidationException, match="at most 8192 bytes"):
        validate_encryption_context({"k": "v" * 10_000_000})


def test_limit_on_the_number_of_pairs() -> None:
    largest = {f"k{index}": "" for index in range(ENCRYPTION_CONTEXT_PAIRS_MAX)}
    validate_encryption_context(largest)
    with pytest.raises(ValidationException, match="at most 64 pairs"):
        validate_encryption_context({**largest, "one-more": ""})


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"": "v"}, "Encryption context key at position 0 must not be empty"),
        ({"ok": "v", 7: "v"}, "Encryption context key at position 1 must be a string"),
        ({"purpose": 7}, 'The value of encryption context key "purpose" must be a string'),
        ({"bad\ud800": "v"}, "Encryption context key at position 0 must be valid UTF-8"),
        (
            {"purpose": "bad\udfff"},
            'The value of encryption context key "purpose" must be valid UTF-8',
        ),
        ({"x" * 65: 1}, "The value of encryption context key at position 0 must be a string"),
        ({"a\nb": 1}, "The value of encryption context key at position 0 must be a string"),
        ({"Zürich": 1}, "The value of encryption context key at position 0 must be a string"),
    ],
)
def test_invalid_contexts_raise_a_precise_validation_error(
    context: Mapping[str, str], message: str
) -> None:
    with pytest.raises(ValidationException) as raised:
        validate_encryption_context(context)
    assert raised.value.message == message
    # The same checks guard the encoder, which the blob module relies on.
    with pytest.raises(ValidationException):
        canonical_encryption_context(context)


def test_a_context_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ValidationException, match="must be a map"):
        validate_encryption_context([("k", "v")])  # type: ignore[arg-type]


def test_messages_never_quote_values() -> None:
    secretish = "do-not-echo-this-value"
    for context in ({"k": secretish + "\ud800"}, {"k": secretish * 1000}):
        with pytest.raises(ValidationException) as raised:
            validate_encryption_context(context)
        assert secretish not in raised.value.message
