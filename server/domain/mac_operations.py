"""GenerateMac and VerifyMac for HMAC keys (RFC 2104), with AWS's limits and errors.

The MAC algorithm must be the one of the key's spec (an HMAC_256 key computes
HMAC_SHA_256 only); messages are 1 to 4096 bytes and are never treated as digests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meridian.server.domain import validation
from meridian.server.domain.crypto import mac
from meridian.server.domain.errors import InvalidKeyUsageException, ValidationException
from meridian.server.domain.key_context import KeyContext
from meridian.server.domain.key_specs import (
    MacAlgorithm,
    algorithms_for,
    parse_required,
    require_usage,
)
from meridian.server.domain.model import Caller, Key, KeyUsage

MESSAGE_BYTES_MAX = 4096
MAC_BYTES_MAX = 6144


@dataclass(frozen=True, slots=True)
class MacResult:
    key_arn: str
    mac: bytes
    mac_algorithm: MacAlgorithm


class MacOperations:
    def __init__(self, context: KeyContext) -> None:
        self._context = context

    async def generate_mac(
        self,
        caller: Caller,
        *,
        key_id: str,
        message: bytes,
        mac_algorithm: str,
        grant_tokens: Sequence[str] = (),
    ) -> MacResult:
        algorithm = _checked_request(message, mac_algorithm, grant_tokens)
        key = await self._mac_key(key_id, algorithm)
        secret = await self._context.private_material(key)
        return MacResult(key.arn, mac.generate(secret, algorithm, message), algorithm)

    async def verify_mac(
        self,
        caller: Caller,
        *,
        key_id: str,
        message: bytes,
        mac_algorithm: str,
        mac_value: bytes,
        grant_tokens: Sequence[str] = (),
    ) -> MacResult:
        """Return if ``mac_value`` is right; KMSInvalidMacException otherwise."""
        algorithm = _checked_request(message, mac_algorithm, grant_tokens)
        if not 1 <= len(mac_value) <= MAC_BYTES_MAX:
            raise ValidationException(f"Mac must be 1 to {MAC_BYTES_MAX} bytes")
        key = await self._mac_key(key_id, algorithm)
        secret = await self._context.private_material(key)
        mac.verify(secret, algorithm, message, mac_value)
        return MacResult(key.arn, mac_value, algorithm)

    async def _mac_key(self, key_id: str, algorithm: MacAlgorithm) -> Key:
        key = await self._context.usable_key(key_id)
        require_usage(key, KeyUsage.GENERATE_VERIFY_MAC)
        if algorithm.value not in algorithms_for(key.key_spec, key.key_usage).mac:
            raise InvalidKeyUsageException(
                f"The MAC algorithm {algorithm.value} is not valid for {key.arn}"
            )
        return key


def _checked_request(
    message: bytes, mac_algorithm: str, grant_tokens: Sequence[str]
) -> MacAlgorithm:
    if not 1 <= len(message) <= MESSAGE_BYTES_MAX:
        raise ValidationException(f"Message must be 1 to {MESSAGE_BYTES_MAX} bytes")
    validation.validate_grant_tokens(grant_tokens)
    return parse_required(MacAlgorithm, mac_algorithm, "MacAlgorithm")
