"""The condition keys Meridian supplies, and the values of one request.

Condition key names are case-insensitive (IAM's rule), so every key is looked up by its
lower-case form. A policy that names a key Meridian never supplies is refused with
MalformedPolicyDocumentException rather than accepted and silently never matched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

# Every supported condition key with a fixed name: its AWS spelling.
CONDITION_KEYS: dict[str, str] = {
    name.lower(): name
    for name in (
        "aws:CurrentTime",
        "aws:EpochTime",
        "aws:PrincipalArn",
        "aws:PrincipalAccount",
        "aws:SourceIp",
        "aws:TagKeys",
        "kms:BypassPolicyLockoutSafetyCheck",
        "kms:CallerAccount",
        "kms:CallerPrincipal",
        "kms:DataKeyPairSpec",
        "kms:EncryptionAlgorithm",
        "kms:EncryptionContextKeys",
        "kms:ExpirationModel",
        "kms:GrantConstraintType",
        "kms:GranteePrincipal",
        "kms:GrantOperations",
        "kms:KeyAgreementAlgorithm",
        "kms:KeyOrigin",
        "kms:KeySpec",
        "kms:KeyUsage",
        "kms:MacAlgorithm",
        "kms:MessageType",
        "kms:MultiRegion",
        "kms:MultiRegionKeyType",
        "kms:PrimaryRegion",
        "kms:ReEncryptOnSameKey",
        "kms:ReplicaRegion",
        "kms:RequestAlias",
        "kms:ResourceAliases",
        "kms:RetiringPrincipal",
        "kms:RotationPeriodInDays",
        "kms:ScheduleKeyDeletionPendingWindowInDays",
        "kms:SigningAlgorithm",
        "kms:WrappingAlgorithm",
        "kms:WrappingKeySpec",
    )
}

# Families of keys whose last part is a name chosen by the user.
ENCRYPTION_CONTEXT_PREFIX = "kms:encryptioncontext:"
RESOURCE_TAG_PREFIX = "aws:resourcetag/"
REQUEST_TAG_PREFIX = "aws:requesttag/"
CONDITION_KEY_PREFIXES: dict[str, str] = {
    ENCRYPTION_CONTEXT_PREFIX: "kms:EncryptionContext:<key>",
    RESOURCE_TAG_PREFIX: "aws:ResourceTag/<tag-key>",
    REQUEST_TAG_PREFIX: "aws:RequestTag/<tag-key>",
}

# Keys whose values must be looked up in storage; fetched only when a policy names them.
RESOURCE_ALIASES = "kms:resourcealiases"
MULTI_REGION_KEY_TYPE = "kms:multiregionkeytype"


def is_supported_condition_key(lowered: str) -> bool:
    if lowered in CONDITION_KEYS:
        return True
    return any(
        lowered.startswith(prefix) and len(lowered) > len(prefix)
        for prefix in CONDITION_KEY_PREFIXES
    )


def supported_condition_keys() -> list[str]:
    """Every supported key, for messages and the documentation."""
    return sorted(CONDITION_KEYS.values()) + sorted(CONDITION_KEY_PREFIXES.values())


@dataclass(slots=True)
class ConditionContext:
    """The condition key values of one request, by lower-case key name.

    Every value is a tuple of strings: single-valued keys hold one string, multi-valued
    keys (kms:EncryptionContextKeys, kms:GrantOperations, aws:TagKeys,
    kms:ResourceAliases) any number. A key absent from ``values`` is absent from the
    request, which is what ``Null`` and the ``...IfExists`` operators test.
    """

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Values computed only if a policy asks for them (the time, the source address):
    # most policies never do, and the hot path should not pay for them.
    lazy: dict[str, Callable[[], tuple[str, ...] | None]] = field(default_factory=dict)

    def get(self, lowered_key: str) -> tuple[str, ...] | None:
        found = self.values.get(lowered_key)
        if found is None and lowered_key in self.lazy:
            found = self.lazy.pop(lowered_key)()
            if found is not None:
                self.values[lowered_key] = found
        return found

    def set(self, key: str, value: str | Iterable[str] | None) -> None:
        """Set ``key``; None removes it (the request does not have it)."""
        lowered = key.lower()
        self.lazy.pop(lowered, None)
        if value is None:
            self.values.pop(lowered, None)
        elif isinstance(value, str):
            self.values[lowered] = (value,)
        else:
            self.values[lowered] = tuple(value)

    def set_encryption_context(self, encryption_context: Mapping[str, str] | None) -> None:
        """kms:EncryptionContext:<k> for each pair and kms:EncryptionContextKeys.

        An empty context leaves both absent, as AWS does for a request without one.
        """
        for key in [k for k in self.values if k.startswith(ENCRYPTION_CONTEXT_PREFIX)]:
            del self.values[key]
        self.values.pop("kms:encryptioncontextkeys", None)
        if not encryption_context:
            return
        for key, value in encryption_context.items():
            self.values.setdefault(ENCRYPTION_CONTEXT_PREFIX + key.lower(), (value,))
        self.values["kms:encryptioncontextkeys"] = tuple(encryption_context)

    def set_tags(self, prefix: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.values.setdefault(prefix + key.lower(), (value,))

    def copy(self) -> ConditionContext:
        return ConditionContext(dict(self.values), dict(self.lazy))
