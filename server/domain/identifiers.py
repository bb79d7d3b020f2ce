"""Key ids, ARNs and alias names: parsing and validation at the boundary.

Every operation that takes a key accepts a key id, a key ARN, an alias name or an
alias ARN where AWS does; this module turns such a string into a
:class:`KeyReference` or raises the error AWS would.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from meridian.server.domain.errors import (
    InvalidAliasNameException,
    InvalidArnException,
    NotFoundException,
    ValidationException,
)

KEY_ID_CHARS_MAX = 2048
ALIAS_NAME_CHARS_MAX = 256
ARN_PARTITION = "meridian"

_REGION = re.compile(r"^([a-z]+-){2,3}\d+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MRK = re.compile(r"^mrk-[0-9a-f]{32}$")
_ALIAS = re.compile(r"^alias/[a-zA-Z0-9/_-]+$")
_RESERVED_ALIAS_PREFIX = "alias/aws/"


def is_valid_region(name: str) -> bool:
    return bool(_REGION.fullmatch(name))


def is_valid_account(account_id: str) -> bool:
    return bool(_ACCOUNT.fullmatch(account_id))


def new_key_id(*, multi_region: bool, randbytes: bytes) -> str:
    """A UUID (single-region) or ``mrk-`` + 32 hex digits (multi-region) from 16 random bytes."""
    if len(randbytes) != 16:
        raise ValueError("a key id needs 16 random bytes")
    if multi_region:
        return "mrk-" + randbytes.hex()
    return str(uuid.UUID(bytes=randbytes, version=4))


def is_key_id(text: str) -> bool:
    return bool(_UUID.fullmatch(text) or _MRK.fullmatch(text))


def key_arn(region: str, account_id: str, key_id: str) -> str:
    return f"arn:{ARN_PARTITION}:kms:{region}:{account_id}:key/{key_id}"


def alias_arn(region: str, account_id: str, alias_name: str) -> str:
    return f"arn:{ARN_PARTITION}:kms:{region}:{account_id}:{alias_name}"


@dataclass(frozen=True, slots=True)
class KeyReference:
    """What a caller's ``key_id`` names: exactly one of ``key_id`` or ``alias_name``."""

    key_id: str | None = None
    alias_name: str | None = None


@dataclass(frozen=True, slots=True)
class Arn:
    region: str
    account_id: str
    resource: str


def parse_arn(text: str) -> Arn:
    parts = text.split(":", 5)
    if (
        len(parts) != 6
        or parts[0] != "arn"
        or parts[1] != ARN_PARTITION
        or parts[2] != "kms"
        or not is_valid_region(parts[3])
        or not is_valid_account(parts[4])
        or not parts[5]
    ):
        raise InvalidArnException(f"Invalid ARN: {_shorten(text)}")
    return Arn(region=parts[3], account_id=parts[4], resource=parts[5])


def parse_key_reference(text: str, *, region: str, account_id: str) -> KeyReference:
    """Parse a KeyId parameter as AWS does.

    An ARN for another region or account cannot name a key in this region, so it is
    NotFoundException, as AWS answers for a key it does not have.
    """
    if not text:
        raise ValidationException("KeyId must not be empty")
    if len(text) > KEY_ID_CHARS_MAX:
        raise ValidationException(f"KeyId must be at most {KEY_ID_CHARS_MAX} characters")
    if text.startswith("arn:"):
        arn = parse_arn(text)
        if arn.region != region or arn.account_id != account_id:
            raise NotFoundException(f"Key '{_shorten(text)}' does not exist in {region}")
        if arn.resource.startswith("key/"):
            key_id = arn.resource[len("key/") :]
            if not is_key_id(key_id):
                raise NotFoundException(f"Invalid keyId '{_shorten(text)}'")
            return KeyReference(key_id=key_id)
        if arn.resource.startswith("alias/"):
            validate_alias_name(arn.resource)
            return KeyReference(alias_name=arn.resource)
        raise InvalidArnException(f"Invalid ARN: {_shorten(text)}")
    if text.startswith("alias/"):
        validate_alias_name(text)
        return KeyReference(alias_name=text)
    if is_key_id(text):
        return KeyReference(key_id=text)
    raise NotFoundException(f"Invalid keyId '{_shorten(text)}'")


def parse_target_key_id(text: str, *, region: str, account_id: str) -> str:
    """TargetKeyId of CreateAlias/UpdateAlias: a key id or key ARN, never an alias."""
    reference = parse_key_reference(text, region=region, account_id=account_id)
    if reference.key_id is None:
        raise ValidationException("TargetKeyId must be a key ID or key ARN, not an alias")
    return reference.key_id


def validate_alias_name(name: str) -> None:
    if not name or len(name) > ALIAS_NAME_CHARS_MAX:
        raise ValidationException(f"AliasName must be 1 to {ALIAS_NAME_CHARS_MAX} characters long")
    if not _ALIAS.fullmatch(name):
        raise InvalidAliasNameException(
            "AliasName must begin with 'alias/' followed by letters, digits, '/', '_' or '-'"
        )


def validate_new_alias_name(name: str) -> None:
    """A name a customer may create: not in the ``alias/aws/`` namespace AWS reserves."""
    validate_alias_name(name)
    if name.startswith(_RESERVED_ALIAS_PREFIX):
        raise InvalidAliasNameException("Alias names beginning with 'alias/aws/' are reserved")


def _shorten(text: str, chars_max: int = 120) -> str:
    """Echo caller input in messages only in a bounded, printable form."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[:chars_max])
    return printable + ("..." if len(text) > chars_max else "")
