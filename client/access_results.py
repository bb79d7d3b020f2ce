"""Typed results of the access-control operations (key policies, grants, identity
policies, simulation), read from the wire like ``results.py``'s: frozen dataclasses
with AWS's member names in snake_case, plus ``region``.

Grant constraints keep their encryption-context maps as read-only mappings, so
results stay immutable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from meridian.proto.kms.v1 import kms_pb2

__all__ = [
    "ContextEntry",
    "CreateGrantResult",
    "EvaluationResult",
    "GetKeyPolicyResult",
    "GetUserPolicyResult",
    "GrantConstraints",
    "GrantListEntry",
    "ListGrantsResult",
    "ListKeyPoliciesResult",
    "ListUserPoliciesResult",
    "MatchedStatement",
    "SimulatePrincipalPolicyResult",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class GetKeyPolicyResult:
    policy: str
    policy_name: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListKeyPoliciesResult:
    policy_names: tuple[str, ...]
    next_marker: str | None
    truncated: bool
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateGrantResult:
    grant_token: str
    grant_id: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantConstraints:
    """Also accepted as input: ``constraints=GrantConstraints(encryption_context_equals=...)``
    (or a plain mapping with AWS's member names)."""

    encryption_context_subset: Mapping[str, str] | None = None
    encryption_context_equals: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantListEntry:
    key_id: str
    grant_id: str
    name: str | None
    creation_date: datetime | None
    grantee_principal: str
    retiring_principal: str | None
    issuing_account: str
    operations: tuple[str, ...]
    constraints: GrantConstraints | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListGrantsResult:
    grants: tuple[GrantListEntry, ...]
    next_marker: str | None
    truncated: bool
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetUserPolicyResult:
    user_name: str
    policy_name: str
    policy_document: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListUserPoliciesResult:
    policy_names: tuple[str, ...]
    is_truncated: bool
    marker: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchedStatement:
    """IAM's ``Statement``: the policy (``default`` for the key policy, an identity
    policy's name, ``grant/<id>``) and, Meridian's addition, the statement's Sid."""

    source_policy_id: str
    source_policy_type: str
    sid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationResult:
    eval_action_name: str
    eval_resource_name: str
    eval_decision: str  # allowed | explicitDeny | implicitDeny
    matched_statements: tuple[MatchedStatement, ...]
    missing_context_values: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatePrincipalPolicyResult:
    evaluation_results: tuple[EvaluationResult, ...]
    is_truncated: bool
    region: str


# ---- reading responses ---------------------------------------------------------------


def _optional(text: str) -> str | None:
    return text or None


def get_key_policy_result(message: kms_pb2.GetKeyPolicyResponse, region: str) -> GetKeyPolicyResult:
    return GetKeyPolicyResult(
        policy=message.policy, policy_name=message.policy_name, region=message.region or region
    )


def list_key_policies_result(
    message: kms_pb2.ListKeyPoliciesResponse, region: str
) -> ListKeyPoliciesResult:
    return ListKeyPoliciesResult(
        policy_names=tuple(message.policy_names),
        next_marker=_optional(message.next_marker),
        truncated=message.truncated,
        region=message.region or region,
    )


def create_grant_result(message: kms_pb2.CreateGrantResponse, region: str) -> CreateGrantResult:
    return CreateGrantResult(
        grant_token=message.grant_token, grant_id=message.grant_id, region=message.region or region
    )


def _constraints(entry: kms_pb2.GrantListEntry) -> GrantConstraints | None:
    if not entry.HasField("constraints"):
        return None
    source = entry.constraints
    return GrantConstraints(
        encryption_context_subset=(
            MappingProxyType(dict(source.encryption_context_subset))
            if source.encryption_context_subset
            else None
        ),
        encryption_context_equals=(
            MappingProxyType(dict(source.encryption_context_equals))
            if source.encryption_context_equals
            else None
        ),
    )


def _grant(entry: kms_pb2.GrantListEntry) -> GrantListEntry:
    return GrantListEntry(
        key_id=entry.key_id,
        grant_id=entry.grant_id,
        name=_optional(entry.name),
        creation_date=(
            entry.creation_date.ToDatetime(tzinfo=UTC) if entry.HasField("creation_date") else None
        ),
        grantee_principal=entry.grantee_principal,
        retiring_principal=_optional(entry.retiring_principal),
        issuing_account=entry.issuing_account,
        operations=tuple(entry.operations),
        constraints=_constraints(entry),
    )


def list_grants_result(
    message: kms_pb2.ListGrantsResponse | kms_pb2.ListRetirableGrantsResponse, region: str
) -> ListGrantsResult:
    return ListGrantsResult(
        grants=tuple(_grant(entry) for entry in message.grants),
        next_marker=_optional(message.next_marker),
        truncated=message.truncated,
        region=message.region or region,
    )


def get_user_policy_result(
    message: kms_pb2.GetUserPolicyResponse, region: str
) -> GetUserPolicyResult:
    return GetUserPolicyResult(
        user_name=message.user_name,
        policy_name=message.policy_name,
        policy_document=message.policy_document,
        region=message.region or region,
    )


def list_user_policies_result(
    message: kms_pb2.ListUserPoliciesResponse, region: str
) -> ListUserPoliciesResult:
    return ListUserPoliciesResult(
        policy_names=tuple(message.policy_names),
        is_truncated=message.is_truncated,
        marker=_optional(message.marker),
        region=message.region or region,
    )


def simulate_principal_policy_result(
    message: kms_pb2.SimulatePrincipalPolicyResponse, region: str
) -> SimulatePrincipalPolicyResult:
    return SimulatePrincipalPolicyResult(
        evaluation_results=tuple(
            EvaluationResult(
                eval_action_name=result.eval_action_name,
                eval_resource_name=result.eval_resource_name,
                eval_decision=result.eval_decision,
                matched_statements=tuple(
                    MatchedStatement(
                        source_policy_id=statement.source_policy_id,
                        source_policy_type=statement.source_policy_type,
                        sid=statement.sid,
                    )
                    for statement in result.matched_statements
                ),
                missing_context_values=tuple(result.missing_context_values),
            )
            for result in message.evaluation_results
        ),
        is_truncated=message.is_truncated,
        region=message.region or region,
    )


def wire_constraints(
    constraints: GrantConstraints | Mapping[str, Mapping[str, str]],
) -> kms_pb2.GrantConstraints:
    """A request's constraints from a GrantConstraints or AWS's JSON shape
    (``{"EncryptionContextEquals": {...}}``)."""
    if isinstance(constraints, GrantConstraints):
        return kms_pb2.GrantConstraints(
            encryption_context_subset=dict(constraints.encryption_context_subset or {}),
            encryption_context_equals=dict(constraints.encryption_context_equals or {}),
        )
    if isinstance(constraints, Mapping):
        unknown = sorted(set(constraints) - {"EncryptionContextSubset", "EncryptionContextEquals"})
        if unknown:
            raise TypeError(f"unknown grant constraints: {', '.join(unknown)}")
        return kms_pb2.GrantConstraints(
            encryption_context_subset=dict(constraints.get("EncryptionContextSubset", {})),
            encryption_context_equals=dict(constraints.get("EncryptionContextEquals", {})),
        )
    raise TypeError(
        f"constraints must be GrantConstraints or a mapping, not {type(constraints).__name__}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextEntry:
    """IAM's ContextEntry, an input of simulate_principal_policy: a condition key and its
    values (``kms:EncryptionContext:tenant`` = ``["acme"]``)."""

    context_key_name: str
    context_key_values: tuple[str, ...]
    context_key_type: str = "string"


def wire_context_entries(
    entries: Sequence[ContextEntry] | Mapping[str, str | Sequence[str]],
) -> list[kms_pb2.ContextEntry]:
    """Context entries from ContextEntry values or a mapping of key -> value(s)."""
    if isinstance(entries, Mapping):
        pairs = [
            (name, (value,) if isinstance(value, str) else tuple(value))
            for name, value in entries.items()
        ]
        return [
            kms_pb2.ContextEntry(
                context_key_name=name,
                context_key_values=list(values),
                context_key_type="string" if len(values) == 1 else "stringList",
            )
            for name, values in pairs
        ]
    wire: list[kms_pb2.ContextEntry] = []
    for entry in entries:
        if not isinstance(entry, ContextEntry):
            raise TypeError(
                f"context_entries must be ContextEntry values or a mapping, not "
                f"{type(entry).__name__}"
            )
        wire.append(
            kms_pb2.ContextEntry(
                context_key_name=entry.context_key_name,
                context_key_values=list(entry.context_key_values),
                context_key_type=entry.context_key_type,
            )
        )
    return wire
