"""The authorization table: for every operation, what it is in AWS's access model.

One row per RPC says which ``kms:`` (or ``iam:``) action the call needs, which request
fields name the keys it acts on (and, for Decrypt and ReEncrypt without a key id, that
the key is the one in the ciphertext blob's header), and which condition keys the
request supplies. The authorization hook reads only this table: an RPC without a row
is refused for everyone (fail closed), and ``tests/unit/test_access_rules.py`` holds
every RPC of every served service to having a row whose fields exist.

Adding an operation: add its row here (and its condition keys, if it has any, in
``server/domain/access/condition_keys.py``). Operations that name no key (CreateKey,
ListKeys, GenerateRandom...) are decided by identity policies alone, as in AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meridian.server.domain.access.authorizer import (
    AuthorizationRequest,
    ConditionValue,
    KeyTarget,
    RetireTarget,
)
from meridian.server.domain.access.grants import (
    GrantConstraints,
    GrantSpec,
    validate_grant_spec,
)
from meridian.server.domain.model import Caller

KMS_SERVICE = "meridian.kms.v1.KeyManagementService"
AUDIT_SERVICE = "meridian.audit.v1.Audit"
REPLICATION_ADMIN_SERVICE = "meridian.replication_admin.v1.ReplicationAdmin"
# Services only peer nodes may call: node-to-node replication (DESIGN.md §4) and the
# exchange of audit digests. A client certificate is refused there whatever the
# policies say.
NODE_ONLY_SERVICE_PREFIXES = ("meridian.replication.", "meridian.audit.v1.AuditExchange")

Values = Mapping[str, ConditionValue]
ValuesOf = Callable[[Any], Values]


def _field(request: Any, name: str) -> Any:
    """A request field's value, or None when the message lacks it or it is unset."""
    descriptor = request.DESCRIPTOR.fields_by_name.get(name)
    if descriptor is None:
        return None
    if descriptor.has_presence and not request.HasField(name):
        return None
    return getattr(request, name)


def _text(request: Any, name: str) -> str | None:
    value = _field(request, name)
    return str(value) if isinstance(value, str) and value else None


def _flag(value: object) -> str:
    return "true" if value else "false"


def _no_values(request: Any) -> Values:
    return {}


def _text_values(**names: str) -> ValuesOf:
    """Condition keys read from string fields: ``kms:SigningAlgorithm=signing_algorithm``."""

    def values(request: Any) -> Values:
        return {key: _text(request, name) for key, name in names.items()}

    return values


def _with_default(condition_key: str, field_name: str, default: str) -> ValuesOf:
    def values(request: Any) -> Values:
        return {condition_key: _text(request, field_name) or default}

    return values


def _number_value(condition_key: str, field_name: str, default: int | None = None) -> ValuesOf:
    def values(request: Any) -> Values:
        value = _field(request, field_name)
        number = default if value is None or isinstance(value, bool) else int(value)
        return {condition_key: None if number is None else str(number)}

    return values


def _request_tags(request: Any) -> dict[str, ConditionValue]:
    values: dict[str, ConditionValue] = {}
    tags = _field(request, "tags") or ()
    keys = [tag.tag_key for tag in tags]
    for tag in tags:
        values[f"aws:RequestTag/{tag.tag_key}"] = tag.tag_value
    if keys:
        values["aws:TagKeys"] = keys
    return values


def _create_key_values(request: Any) -> Values:
    multi_region = bool(_field(request, "multi_region"))
    spec = _text(request, "key_spec") or _text(request, "customer_master_key_spec")
    return {
        "kms:KeySpec": spec or "SYMMETRIC_DEFAULT",
        "kms:KeyUsage": _text(request, "key_usage") or "ENCRYPT_DECRYPT",
        "kms:KeyOrigin": _text(request, "origin") or "AWS_KMS",
        "kms:MultiRegion": _flag(multi_region),
        "kms:MultiRegionKeyType": "PRIMARY" if multi_region else None,
        "kms:BypassPolicyLockoutSafetyCheck": _flag(
            _field(request, "bypass_policy_lockout_safety_check")
        ),
        **_request_tags(request),
    }


def _untag_values(request: Any) -> Values:
    keys = list(_field(request, "tag_keys") or ())
    return {"aws:TagKeys": keys or None}


def _bypass_values(request: Any) -> Values:
    return {
        "kms:BypassPolicyLockoutSafetyCheck": _flag(
            _field(request, "bypass_policy_lockout_safety_check")
        )
    }


def grant_spec(request: Any) -> GrantSpec:
    """The validated grant a CreateGrant request asks for (ValidationException if not)."""
    constraints = GrantConstraints()
    if request.HasField("constraints"):
        constraints = GrantConstraints(
            encryption_context_equals=dict(request.constraints.encryption_context_equals),
            encryption_context_subset=dict(request.constraints.encryption_context_subset),
        )
    return validate_grant_spec(
        grantee_principal=request.grantee_principal,
        retiring_principal=request.retiring_principal,
        operations=list(request.operations),
        constraints=constraints,
        name=request.name,
    )


def _create_grant_values(request: Any) -> Values:
    spec = grant_spec(request)
    return {
        "kms:GrantOperations": list(spec.operations),
        "kms:GranteePrincipal": spec.grantee_principal,
        "kms:RetiringPrincipal": spec.retiring_principal or None,
        "kms:GrantConstraintType": spec.constraints.kind,
    }


@dataclass(frozen=True, slots=True)
class KeyField:
    """A request field naming a key the operation acts on."""

    name: str
    blob: str = ""  # when ``name`` is empty: the key in this ciphertext blob's header
    action: str = ""  # when this key needs another action than the operation's
    context: str = ""  # the field holding the encryption context used with this key
    values: ValuesOf = _no_values  # condition values that belong to this key

    def target(self, request: Any) -> KeyTarget:
        context = _field(request, self.context) if self.context else None
        blob = _field(request, self.blob) if self.blob else None
        return KeyTarget(
            reference=_text(request, self.name) or "",
            ciphertext_blob=bytes(blob) if isinstance(blob, bytes) else b"",
            action=self.action or None,
            encryption_context=dict(context) if context is not None else None,
            values=self.values(request),
        )

    def fields(self) -> tuple[str, ...]:
        return tuple(name for name in (self.name, self.blob, self.context) if name)


@dataclass(frozen=True, slots=True)
class Rule:
    action: str
    keys: tuple[KeyField, ...] = ()
    alias: str = ""  # field naming an alias that is itself a resource (identity policies)
    alias_key: str = ""  # field naming an alias whose current key is a resource
    user: str = ""  # field naming a user (iam: operations): its principal ARN is the resource
    principal: str = ""  # field holding a principal ARN that is the resource
    values: ValuesOf = _no_values
    grant_tokens: str = ""  # field holding grant tokens, checked for form
    retire: bool = False  # RetireGrant: the grant named by token, or key and grant id
    create_grant: bool = False  # CreateGrant: grants made through a grant only narrow it
    compare_keys: bool = False  # ReEncrypt: kms:ReEncryptOnSameKey
    # Batch operations: the call is only an envelope; each of its items is authorized
    # on its own as the single operation (server/api/batch_servicer.py).
    per_item: bool = False
    extra_fields: tuple[str, ...] = field(default=())  # other fields the row reads

    def fields(self) -> tuple[str, ...]:
        names = [name for key in self.keys for name in key.fields()]
        names += [n for n in (self.alias, self.alias_key, self.user, self.principal) if n]
        names += [n for n in (self.grant_tokens,) if n]
        return (*names, *self.extra_fields)

    def describe(self, request: Any, caller: Caller, *, account_id: str) -> AuthorizationRequest:
        """The authorization request this call makes (validation errors raise)."""
        values = dict(self.values(request))
        principals: list[str] = []
        if self.user:
            user_name = _text(request, self.user) or ""
            principals.append(f"arn:meridian:iam::{account_id}:user/{user_name}")
        if self.principal:
            principals.append(_text(request, self.principal) or "")
        return AuthorizationRequest(
            caller=caller,
            action=self.action,
            keys=tuple(key.target(request) for key in self.keys),
            aliases=(_text(request, self.alias) or "",) if self.alias else (),
            alias_keys=(_text(request, self.alias_key) or "",) if self.alias_key else (),
            principals=tuple(principals),
            values=values,
            grant_tokens=list(_field(request, self.grant_tokens) or ())
            if self.grant_tokens
            else (),
            retiring=(
                RetireTarget(
                    grant_token=_text(request, "grant_token") or "",
                    key_id=_text(request, "key_id") or "",
                    grant_id=_text(request, "grant_id") or "",
                )
                if self.retire
                else None
            ),
            requested_grant=grant_spec(request) if self.create_grant else None,
            compare_keys=self.compare_keys,
        )


_KEY = KeyField("key_id")
_ALGORITHM = _with_default("kms:EncryptionAlgorithm", "encryption_algorithm", "SYMMETRIC_DEFAULT")
_CONTEXT_KEY = KeyField("key_id", context="encryption_context")
_SIGNING = _text_values(
    **{"kms:SigningAlgorithm": "signing_algorithm", "kms:MessageType": "message_type"}
)
_MAC = _text_values(**{"kms:MacAlgorithm": "mac_algorithm"})
_KEY_PAIR = _text_values(**{"kms:DataKeyPairSpec": "key_pair_spec"})


def _key(action: str, *, values: ValuesOf = _no_values, tokens: bool = False) -> Rule:
    """The common row: one key in ``key_id``."""
    return Rule(action, keys=(_KEY,), values=values, grant_tokens="grant_tokens" if tokens else "")


# ---- the table: one row per operation of KeyManagementService ---------------------------

KMS_RULES: dict[str, Rule] = {
    # Keys: creating and listing name no key, so identity policies decide.
    "CreateKey": Rule("kms:CreateKey", values=_create_key_values),
    "ListKeys": Rule("kms:ListKeys"),
    "DescribeKey": _key("kms:DescribeKey", tokens=True),
    "UpdateKeyDescription": _key("kms:UpdateKeyDescription"),
    "EnableKey": _key("kms:EnableKey"),
    "DisableKey": _key("kms:DisableKey"),
    "ScheduleKeyDeletion": _key(
        "kms:ScheduleKeyDeletion",
        values=_number_value(
            "kms:ScheduleKeyDeletionPendingWindowInDays", "pending_window_in_days", default=30
        ),
    ),
    "CancelKeyDeletion": _key("kms:CancelKeyDeletion"),
    "GetKeyLastUsage": _key("kms:GetKeyLastUsage"),
    # Symmetric cryptography.
    "Encrypt": Rule(
        "kms:Encrypt", keys=(_CONTEXT_KEY,), values=_ALGORITHM, grant_tokens="grant_tokens"
    ),
    "Decrypt": Rule(
        "kms:Decrypt",
        keys=(KeyField("key_id", blob="ciphertext_blob", context="encryption_context"),),
        values=_ALGORITHM,
        grant_tokens="grant_tokens",
    ),
    "ReEncrypt": Rule(
        "kms:ReEncryptFrom",
        keys=(
            KeyField(
                "source_key_id",
                blob="ciphertext_blob",
                action="kms:ReEncryptFrom",
                context="source_encryption_context",
                values=_with_default(
                    "kms:EncryptionAlgorithm", "source_encryption_algorithm", "SYMMETRIC_DEFAULT"
                ),
            ),
            KeyField(
                "destination_key_id",
                action="kms:ReEncryptTo",
                context="destination_encryption_context",
                values=_with_default(
                    "kms:EncryptionAlgorithm",
                    "destination_encryption_algorithm",
                    "SYMMETRIC_DEFAULT",
                ),
            ),
        ),
        grant_tokens="grant_tokens",
        compare_keys=True,
    ),
    "GenerateDataKey": Rule(
        "kms:GenerateDataKey", keys=(_CONTEXT_KEY,), grant_tokens="grant_tokens"
    ),
    "GenerateDataKeyWithoutPlaintext": Rule(
        "kms:GenerateDataKeyWithoutPlaintext", keys=(_CONTEXT_KEY,), grant_tokens="grant_tokens"
    ),
    "GenerateRandom": Rule("kms:GenerateRandom"),
    # Asymmetric cryptography, MACs, key agreement, KEMs (key types feature).
    "GenerateDataKeyPair": Rule(
        "kms:GenerateDataKeyPair",
        keys=(_CONTEXT_KEY,),
        values=_KEY_PAIR,
        grant_tokens="grant_tokens",
    ),
    "GenerateDataKeyPairWithoutPlaintext": Rule(
        "kms:GenerateDataKeyPairWithoutPlaintext",
        keys=(_CONTEXT_KEY,),
        values=_KEY_PAIR,
        grant_tokens="grant_tokens",
    ),
    "Sign": _key("kms:Sign", values=_SIGNING, tokens=True),
    "Verify": _key("kms:Verify", values=_SIGNING, tokens=True),
    "GetPublicKey": _key("kms:GetPublicKey", tokens=True),
    "GenerateMac": _key("kms:GenerateMac", values=_MAC, tokens=True),
    "VerifyMac": _key("kms:VerifyMac", values=_MAC, tokens=True),
    "DeriveSharedSecret": _key(
        "kms:DeriveSharedSecret",
        values=_text_values(**{"kms:KeyAgreementAlgorithm": "key_agreement_algorithm"}),
        tokens=True,
    ),
    "Encapsulate": _key("kms:Encapsulate", tokens=True),
    "Decapsulate": _key("kms:Decapsulate", tokens=True),
    # Rotation and imported material (key types feature).
    "EnableKeyRotation": _key(
        "kms:EnableKeyRotation",
        values=_number_value("kms:RotationPeriodInDays", "rotation_period_in_days"),
    ),
    "DisableKeyRotation": _key("kms:DisableKeyRotation"),
    "GetKeyRotationStatus": _key("kms:GetKeyRotationStatus"),
    "RotateKeyOnDemand": _key("kms:RotateKeyOnDemand"),
    "ListKeyRotations": _key("kms:ListKeyRotations"),
    "GetParametersForImport": _key(
        "kms:GetParametersForImport",
        values=_text_values(
            **{
                "kms:WrappingAlgorithm": "wrapping_algorithm",
                "kms:WrappingKeySpec": "wrapping_key_spec",
            }
        ),
    ),
    "ImportKeyMaterial": _key(
        "kms:ImportKeyMaterial",
        values=_text_values(**{"kms:ExpirationModel": "expiration_model"}),
    ),
    "DeleteImportedKeyMaterial": _key("kms:DeleteImportedKeyMaterial"),
    # Multi-Region keys (replication feature).
    "ReplicateKey": _key(
        "kms:ReplicateKey", values=_text_values(**{"kms:ReplicaRegion": "replica_region"})
    ),
    "UpdatePrimaryRegion": _key(
        "kms:UpdatePrimaryRegion", values=_text_values(**{"kms:PrimaryRegion": "primary_region"})
    ),
    # Aliases: the alias is a resource of identity policies, its key one of the key policy.
    "CreateAlias": Rule("kms:CreateAlias", keys=(KeyField("target_key_id"),), alias="alias_name"),
    "UpdateAlias": Rule(
        "kms:UpdateAlias",
        keys=(KeyField("target_key_id"),),
        alias="alias_name",
        alias_key="alias_name",
    ),
    "DeleteAlias": Rule("kms:DeleteAlias", alias="alias_name", alias_key="alias_name"),
    "ListAliases": Rule("kms:ListAliases"),
    # Tags.
    "TagResource": _key("kms:TagResource", values=_request_tags),
    "UntagResource": _key("kms:UntagResource", values=_untag_values),
    "ListResourceTags": _key("kms:ListResourceTags"),
    # Key policies.
    "PutKeyPolicy": _key("kms:PutKeyPolicy", values=_bypass_values),
    "GetKeyPolicy": _key("kms:GetKeyPolicy"),
    "ListKeyPolicies": _key("kms:ListKeyPolicies"),
    # Grants.
    "CreateGrant": Rule(
        "kms:CreateGrant",
        keys=(_KEY,),
        values=_create_grant_values,
        grant_tokens="grant_tokens",
        create_grant=True,
        extra_fields=("grantee_principal", "retiring_principal", "operations", "constraints"),
    ),
    "ListGrants": _key("kms:ListGrants"),
    "RevokeGrant": _key("kms:RevokeGrant"),
    "RetireGrant": Rule(
        "kms:RetireGrant", retire=True, extra_fields=("grant_token", "key_id", "grant_id")
    ),
    "ListRetirableGrants": Rule("kms:ListRetirableGrants"),
    # Identity policies and simulation (Meridian's IAM-shaped additions).
    "PutUserPolicy": Rule("iam:PutUserPolicy", user="user_name"),
    "GetUserPolicy": Rule("iam:GetUserPolicy", user="user_name"),
    "ListUserPolicies": Rule("iam:ListUserPolicies", user="user_name"),
    "DeleteUserPolicy": Rule("iam:DeleteUserPolicy", user="user_name"),
    "SimulatePrincipalPolicy": Rule("iam:SimulatePrincipalPolicy", principal="policy_source_arn"),
    # Meridian's batch extensions (docs/batch-operations.md): every item passes this
    # table's row of its single operation (Encrypt, Decrypt, GenerateDataKey) and the
    # whole hook pipeline as a call of its own, so the envelope itself grants nothing.
    "BatchEncrypt": Rule("meridian:BatchEncrypt", per_item=True),
    "BatchDecrypt": Rule("meridian:BatchDecrypt", per_item=True),
    "BatchGenerateDataKey": Rule("meridian:BatchGenerateDataKey", per_item=True),
}

# ---- Meridian's own services: "meridian:" actions, decided by identity policies ----------

AUDIT_RULES: dict[str, Rule] = {
    name: Rule(f"meridian:{name}")
    for name in (
        "GetAuditTrailInfo",
        "ListAuditRecords",
        "ListAuditDigests",
        "SealAuditDigest",
        "GetUsageReport",
    )
}

# Operators' view of replication (replication/DESIGN.md). A forced promotion moves the
# primary, so it needs kms:UpdatePrimaryRegion on the key in the promoted region.
REPLICATION_ADMIN_RULES: dict[str, Rule] = {
    "GetReplicationStatus": Rule("meridian:GetReplicationStatus"),
    "ForcePrimaryRegion": _key(
        "kms:UpdatePrimaryRegion", values=_text_values(**{"kms:PrimaryRegion": "primary_region"})
    ),
}

RULES_BY_SERVICE: dict[str, dict[str, Rule]] = {
    KMS_SERVICE: KMS_RULES,
    AUDIT_SERVICE: AUDIT_RULES,
    REPLICATION_ADMIN_SERVICE: REPLICATION_ADMIN_RULES,
}
