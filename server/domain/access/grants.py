"""Grants: AWS's delegation of a key's operations to one principal, with constraints.

A grant names a key, a grantee principal, the operations it allows, an optional
retiring principal and optional encryption-context constraints. Grants only ever allow;
they cannot deny. Here they are visible to the evaluator as soon as CreateGrant commits
(a region reads its own writes), so a grant token is honoured immediately and its only
job is to name a grant (RetireGrant) and to be checked for form.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from meridian.server.domain.access import actions
from meridian.server.domain.errors import (
    InvalidGrantIdException,
    InvalidGrantTokenException,
    ValidationException,
)

GRANTS_PER_KEY_MAX = 50_000
GRANT_NAME_CHARS_MAX = 256
GRANT_ID_BYTES = 32
GRANT_TOKEN_NONCE_BYTES = 16
GRANT_LIST_LIMIT_DEFAULT = 50
GRANT_LIST_LIMIT_MAX = 100
_TOKEN_MAGIC = b"MGT1"
_GRANT_NAME = re.compile(r"[a-zA-Z0-9:/_-]+")
_GRANT_ID = re.compile(r"[0-9a-f]{64}")
_PRINCIPAL = re.compile(
    r"arn:meridian:iam::\d{12}:((user|role|node)/[A-Za-z0-9+=,.@_/-]{1,128}|root)"
)
EQUALS = "EncryptionContextEquals"
SUBSET = "EncryptionContextSubset"


@dataclass(frozen=True, slots=True)
class GrantConstraints:
    """At most one of the two maps is set; an empty map is the same as none (proto3
    cannot tell them apart on the wire)."""

    encryption_context_equals: Mapping[str, str] = field(default_factory=dict)
    encryption_context_subset: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        if self.encryption_context_equals:
            return EQUALS
        if self.encryption_context_subset:
            return SUBSET
        return None

    def allow(self, encryption_context: Mapping[str, str] | None) -> bool:
        """Whether a request with ``encryption_context`` satisfies the constraints."""
        context = encryption_context or {}
        if self.encryption_context_equals:
            return dict(context) == dict(self.encryption_context_equals)
        return all(
            context.get(key) == value for key, value in self.encryption_context_subset.items()
        )

    def at_least_as_strict_as(self, parent: GrantConstraints) -> bool:
        """A grant made through a parent grant may only narrow it (AWS's rule)."""
        if parent.encryption_context_equals:
            return dict(self.encryption_context_equals) == dict(parent.encryption_context_equals)
        if parent.encryption_context_subset:
            mine = self.encryption_context_equals or self.encryption_context_subset
            return all(
                mine.get(key) == value for key, value in parent.encryption_context_subset.items()
            )
        return True


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    key_id: str
    name: str
    grantee_principal: str
    retiring_principal: str
    issuing_account: str
    operations: tuple[str, ...]
    constraints: GrantConstraints
    created_at: datetime

    def same_terms(self, other: GrantSpec) -> bool:
        """Whether ``other`` asks for exactly this grant (CreateGrant's idempotency)."""
        return (
            self.grantee_principal == other.grantee_principal
            and self.retiring_principal == other.retiring_principal
            and set(self.operations) == set(other.operations)
            and self.constraints == other.constraints
        )


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """What a CreateGrant request asks for, once validated."""

    grantee_principal: str
    retiring_principal: str
    operations: tuple[str, ...]
    constraints: GrantConstraints
    name: str

    def within(self, parent: Grant) -> bool:
        return set(self.operations) <= set(parent.operations) and (
            self.constraints.at_least_as_strict_as(parent.constraints)
        )


def validate_grant_spec(
    *,
    grantee_principal: str,
    retiring_principal: str,
    operations: Sequence[str],
    constraints: GrantConstraints,
    name: str,
) -> GrantSpec:
    if not grantee_principal:
        raise ValidationException("GranteePrincipal is required")
    validate_principal(grantee_principal, "GranteePrincipal")
    if retiring_principal:
        validate_principal(retiring_principal, "RetiringPrincipal")
    if not operations:
        raise ValidationException("Operations must list at least one grant operation")
    unknown = [operation for operation in operations if operation not in actions.GRANT_OPERATIONS]
    if unknown:
        raise ValidationException(
            f"Value '{_short(unknown[0])}' at 'operations' failed to satisfy constraint: Member "
            f"must satisfy enum value set: [{', '.join(actions.GRANT_OPERATIONS)}]"
        )
    if constraints.encryption_context_equals and constraints.encryption_context_subset:
        raise ValidationException(
            "Constraints may have EncryptionContextEquals or EncryptionContextSubset, not both"
        )
    if name and (len(name) > GRANT_NAME_CHARS_MAX or not _GRANT_NAME.fullmatch(name)):
        raise ValidationException(
            f"Name must be 1 to {GRANT_NAME_CHARS_MAX} characters from a-z, A-Z, 0-9, ':', '/',"
            " '_' and '-'"
        )
    # Sorted and without repeats, so equal requests compare equal.
    ordered = tuple(sorted(set(operations), key=actions.GRANT_OPERATIONS.index))
    return GrantSpec(
        grantee_principal=grantee_principal,
        retiring_principal=retiring_principal,
        operations=ordered,
        constraints=constraints,
        name=name,
    )


def validate_principal(principal: str, field_name: str) -> None:
    if not _PRINCIPAL.fullmatch(principal):
        raise ValidationException(
            f"{field_name} must be a principal ARN such as "
            f"arn:meridian:iam::111122223333:user/NAME, not '{_short(principal)}'"
        )


def validate_grant_id(grant_id: str) -> None:
    if not _GRANT_ID.fullmatch(grant_id):
        raise InvalidGrantIdException(f"Invalid grant id '{_short(grant_id)}'")


def new_grant_id(randbytes: bytes) -> str:
    if len(randbytes) != GRANT_ID_BYTES:
        raise ValueError(f"a grant id needs {GRANT_ID_BYTES} random bytes")
    return randbytes.hex()


def encode_grant_token(grant_id: str, nonce: bytes) -> str:
    """An opaque token naming the grant; a fresh nonce makes each token distinct."""
    if len(nonce) != GRANT_TOKEN_NONCE_BYTES:
        raise ValueError(f"a grant token needs {GRANT_TOKEN_NONCE_BYTES} random bytes")
    raw = _TOKEN_MAGIC + bytes.fromhex(grant_id) + nonce
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_grant_token(token: str) -> str:
    """The grant id a token names; InvalidGrantTokenException if it is not a token."""
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidGrantTokenException("The grant token is not valid") from None
    expected = len(_TOKEN_MAGIC) + GRANT_ID_BYTES + GRANT_TOKEN_NONCE_BYTES
    if len(raw) != expected or not raw.startswith(_TOKEN_MAGIC):
        raise InvalidGrantTokenException("The grant token is not valid")
    return raw[len(_TOKEN_MAGIC) : len(_TOKEN_MAGIC) + GRANT_ID_BYTES].hex()


def grant_allows(
    grant: Grant,
    *,
    principal_arn: str,
    action: str,
    encryption_context: Mapping[str, str] | None,
    requested_grant: GrantSpec | None,
) -> bool:
    """Whether ``grant`` lets ``principal_arn`` perform ``action`` on its key.

    RetireGrant is not allowed through here: a grant's RetireGrant operation lets its
    grantee retire that grant only, which the authorizer checks against the grant named
    in the request.
    """
    if grant.grantee_principal != principal_arn:
        return False
    operation = actions.grant_operation_for(action)
    if operation is None or operation == "RetireGrant" or operation not in grant.operations:
        return False
    if operation in actions.CONTEXT_OPERATIONS and not grant.constraints.allow(encryption_context):
        return False
    return not (
        operation == "CreateGrant"
        and requested_grant is not None
        and not requested_grant.within(grant)
    )


def _short(text: str, chars_max: int = 80) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[:chars_max])
    return printable + ("..." if len(text) > chars_max else "")
