"""ECDH key agreement (DeriveSharedSecret): the raw shared secret of NIST SP 800-56A's
cofactor Diffie-Hellman primitive, the x-coordinate of the shared point, as AWS returns it.

The peer's public key is untrusted input: anything that is not a DER
SubjectPublicKeyInfo of a valid point on the key's own curve is a ValidationException.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from meridian.server.domain.crypto import key_pairs
from meridian.server.domain.errors import ValidationException
from meridian.server.domain.model import KeySpec


def derive_shared_secret(spec: KeySpec, private_pkcs8: bytes, peer_public_spki: bytes) -> bytes:
    try:
        peer = key_pairs.load_public(spec, peer_public_spki)
    except ValueError:
        raise ValidationException(
            f"PublicKey must be a DER-encoded SubjectPublicKeyInfo of a {spec.value} public key"
        ) from None
    private = key_pairs.load_private(spec, private_pkcs8)
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
        peer, ec.EllipticCurvePublicKey
    ):
        raise ValueError(f"{spec.value} is not an elliptic-curve spec")
    return private.exchange(ec.ECDH(), peer)
