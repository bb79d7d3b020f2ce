"""The replication crypto recipes: ML-DSA-65 node signatures and hybrid peer wrapping.

Every negative case must fail with the recipe's one opaque error, whatever was changed.
"""

from __future__ import annotations

import os

import pytest

from meridian.server.domain.crypto import signing
from meridian.server.domain.crypto.peer_wrap import (
    HEADER_BYTES,
    PeerKeyPair,
    PeerPublicKey,
    PeerWrapError,
    check_commitment,
    material_commitment,
    seal_bundle,
)

CONTEXT = b"origin\x00destination"
ITEMS = [(b"aad-1", os.urandom(32)), (b"aad-2", os.urandom(32)), (b"aad-3", os.urandom(2000))]


def _pair(seed: int = 1) -> PeerKeyPair:
    return PeerKeyPair(x25519_seed=bytes([seed]) * 32, mlkem_seed=bytes([seed]) * 64)


def test_a_bundle_opens_for_its_recipient_only() -> None:
    recipient = _pair(1)
    header, sealed = seal_bundle(
        recipient.public_key, ITEMS, context=CONTEXT, ephemeral_seed=os.urandom(32)
    )
    assert len(header) == HEADER_BYTES
    assert all(plaintext not in item for (_, plaintext), item in zip(ITEMS, sealed, strict=True))
    opened = recipient.open_bundle(
        header, [(aad, item) for (aad, _), item in zip(ITEMS, sealed, strict=True)], context=CONTEXT
    )
    assert opened == [plaintext for _, plaintext in ITEMS]
    with pytest.raises(PeerWrapError):
        _pair(2).open_bundle(header, [(ITEMS[0][0], sealed[0])], context=CONTEXT)


def _sealed() -> tuple[PeerKeyPair, bytes, list[bytes]]:
    recipient = _pair(3)
    header, sealed = seal_bundle(
        recipient.public_key, ITEMS, context=CONTEXT, ephemeral_seed=os.urandom(32)
    )
    return recipient, header, sealed


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        "x25519 half of the header",
        "ml-kem half of the header",
        "version byte",
        "item byte",
        "aad",
        "context",
        "order of items",
        "truncated item",
    ],
)
def test_any_change_fails_opaquely(tamper: str) -> None:
    recipient, header, sealed = _sealed()
    items = [(aad, item) for (aad, _), item in zip(ITEMS, sealed, strict=True)]
    context = CONTEXT
    if tamper == "x25519 half of the header":
        header = _flip(header, 5)
    elif tamper == "ml-kem half of the header":
        header = _flip(header, 100)
    elif tamper == "version byte":
        header = b"\x02" + header[1:]
    elif tamper == "item byte":
        items[1] = (items[1][0], _flip(items[1][1], 3))
    elif tamper == "aad":
        items[0] = (b"other", items[0][1])
    elif tamper == "context":
        context = b"origin\x00elsewhere"
    elif tamper == "order of items":
        items[0], items[1] = (items[0][0], items[1][1]), (items[1][0], items[0][1])
    else:
        items[2] = (items[2][0], items[2][1][:10])
    with pytest.raises(PeerWrapError) as caught:
        recipient.open_bundle(header, items, context=context)
    assert str(caught.value) == "peer-wrapped material failed to open"


def test_public_keys_are_checked() -> None:
    good = _pair(4).public_key
    with pytest.raises(PeerWrapError):
        PeerPublicKey(x25519=good.x25519[:31], mlkem=good.mlkem)
    with pytest.raises(PeerWrapError):
        PeerPublicKey(x25519=good.x25519, mlkem=b"\x00" * 10)


def test_commitment_binds_material_key_and_version() -> None:
    material, material_id = os.urandom(32), os.urandom(32)
    commitment = material_commitment(material, key_id="mrk-" + "a" * 32, material_id=material_id)
    assert len(commitment) == 32 and commitment != material
    check_commitment(material, commitment, key_id="mrk-" + "a" * 32, material_id=material_id)
    for material_, key_id, material_id_ in (
        (os.urandom(32), "mrk-" + "a" * 32, material_id),
        (material, "mrk-" + "b" * 32, material_id),
        (material, "mrk-" + "a" * 32, os.urandom(32)),
    ):
        with pytest.raises(PeerWrapError):
            check_commitment(material_, commitment, key_id=key_id, material_id=material_id_)


def test_signatures_verify_and_refuse_everything_else() -> None:
    signer = signing.NodeSigner(b"\x07" * 32)
    other = signing.NodeSigner(b"\x08" * 32)
    message = b"batch bytes"
    signature = signer.sign(message, context=b"ctx")
    assert len(signature) == signing.SIGNATURE_BYTES
    signing.verify(signer.public_key, signature, message, context=b"ctx")
    for public_key, signature_, message_, context in (
        (other.public_key, signature, message, b"ctx"),
        (signer.public_key, signature, message + b"!", b"ctx"),
        (signer.public_key, signature, message, b"other"),
        (signer.public_key, _flip(signature, 10), message, b"ctx"),
        (signer.public_key, b"", message, b"ctx"),
        (signer.public_key[:-1], signature, message, b"ctx"),
    ):
        with pytest.raises(signing.SignatureError):
            signing.verify(public_key, signature_, message_, context=context)
    signing.check_public_key(signer.public_key)
    with pytest.raises(signing.SignatureError):
        signing.check_public_key(b"\x00" * 5)


def test_private_keys_stay_out_of_reprs() -> None:
    assert "seed" not in repr(signing.NodeSigner(b"\x07" * 32))
    assert repr(_pair(5)).startswith("PeerKeyPair(x25519=")
