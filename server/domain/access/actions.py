"""The actions a policy can name, and the operations a grant can allow.

Action names are case-insensitive, as in IAM. ``kms:`` actions are AWS KMS's (one per
operation, plus ReEncryptFrom/ReEncryptTo for the two halves of ReEncrypt). ``iam:``
actions are Meridian's administration of identity policies, named after the AWS IAM
operations they mirror. ``meridian:`` is reserved for Meridian-only operations that
other features add (for example audit queries); any name is accepted there.
"""

from __future__ import annotations

KMS_ACTIONS: frozenset[str] = frozenset(
    f"kms:{name}"
    for name in (
        "CancelKeyDeletion",
        "ConnectCustomKeyStore",
        "CreateAlias",
        "CreateCustomKeyStore",
        "CreateGrant",
        "CreateKey",
        "Decapsulate",
        "Decrypt",
        "DeleteAlias",
        "DeleteCustomKeyStore",
        "DeleteImportedKeyMaterial",
        "DeriveSharedSecret",
        "DescribeCustomKeyStores",
        "DescribeKey",
        "DisableKey",
        "DisableKeyRotation",
        "DisconnectCustomKeyStore",
        "EnableKey",
        "EnableKeyRotation",
        "Encapsulate",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "GenerateRandom",
        "GetKeyLastUsage",
        "GetKeyPolicy",
        "GetKeyRotationStatus",
        "GetParametersForImport",
        "GetPublicKey",
        "ImportKeyMaterial",
        "ListAliases",
        "ListGrants",
        "ListKeyPolicies",
        "ListKeyRotations",
        "ListKeys",
        "ListResourceTags",
        "ListRetirableGrants",
        "PutKeyPolicy",
        "ReEncryptFrom",
        "ReEncryptTo",
        "ReplicateKey",
        "RetireGrant",
        "RevokeGrant",
        "RotateKeyOnDemand",
        "ScheduleKeyDeletion",
        "Sign",
        "SynchronizeMultiRegionKey",
        "TagResource",
        "UntagResource",
        "UpdateAlias",
        "UpdateCustomKeyStore",
        "UpdateKeyDescription",
        "UpdatePrimaryRegion",
        "Verify",
        "VerifyMac",
    )
)

IAM_ACTIONS: frozenset[str] = frozenset(
    f"iam:{name}"
    for name in (
        "PutUserPolicy",
        "GetUserPolicy",
        "ListUserPolicies",
        "DeleteUserPolicy",
        "SimulatePrincipalPolicy",
    )
)

# Namespaces a key policy may name; identity policies may also name iam: and meridian:.
KEY_POLICY_SERVICES = frozenset({"kms"})
IDENTITY_POLICY_SERVICES = frozenset({"kms", "iam", "meridian"})

_KNOWN_BY_LOWER: dict[str, str] = {name.lower(): name for name in KMS_ACTIONS | IAM_ACTIONS}

# AWS's GrantOperation enum: what a grant can allow. Each allows the kms: action of the
# same name.
GRANT_OPERATIONS: tuple[str, ...] = (
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
    "Encapsulate",
    "Decapsulate",
)
GRANT_OPERATION_BY_ACTION: dict[str, str] = {
    f"kms:{operation}".lower(): operation for operation in GRANT_OPERATIONS
}

# Grant constraints (encryption context) apply only to operations that take a context;
# for the others AWS ignores them ("management operations, such as DescribeKey").
CONTEXT_OPERATIONS = frozenset(
    {
        "Decrypt",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    }
)


def canonical_action(name: str) -> str | None:
    """The canonical spelling of a known kms:/iam: action, or None if unknown."""
    return _KNOWN_BY_LOWER.get(name.lower())


def grant_operation_for(action: str) -> str | None:
    """The grant operation that allows ``action`` (``kms:Encrypt`` -> ``Encrypt``)."""
    return GRANT_OPERATION_BY_ACTION.get(action.lower())
