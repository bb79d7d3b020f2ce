"""HMAC (RFC 2104) with SHA-224/256/384/512 for GenerateMac and VerifyMac.

Verification compares in constant time (cryptography's ``HMAC.verify``), and every
mismatch, whatever its length, is the one KMSInvalidMacException.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

from meridian.server.domain.errors import KMSInvalidMacException
from meridian.server.domain.key_specs import MacAlgorithm

_HASHES: dict[MacAlgorithm, type[hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    MacAlgorithm.HMAC_SHA_224: hashes.SHA224,
    MacAlgorithm.HMAC_SHA_256: hashes.SHA256,
    MacAlgorithm.HMAC_SHA_384: hashes.SHA384,
    MacAlgorithm.HMAC_SHA_512: hashes.SHA512,
}


def generate(key: bytes, algorithm: MacAlgorithm, message: bytes) -> bytes:
    tag = hmac.HMAC(key, _HASHES[algorithm]())
    tag.update(message)
    return tag.finalize()


def verify(key: bytes, algorithm: MacAlgorithm, message: bytes, mac: bytes) -> None:
    """Return if ``mac`` is the message's HMAC; raise KMSInvalidMacException otherwise."""
    tag = hmac.HMAC(key, _HASHES[algorithm]())
    tag.update(message)
    try:
        tag.verify(mac)
    except InvalidSignature:
        raise KMSInvalidMacException("The MAC is not valid") from None
