"""The evaluator: AWS's order of explicit deny, key policy, delegation, grants, default
deny — by example, and as properties over generated policies (hypothesis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.server.domain.access.condition_keys import ConditionContext
from meridian.server.domain.access.evaluator import (
    DecisionKind,
    EvaluationRequest,
    NamedPolicy,
    SourceType,
    evaluate,
    missing_context_keys,
)
from meridian.server.domain.access.grants import (
    Grant,
    GrantConstraints,
    GrantSpec,
    decode_grant_token,
    encode_grant_token,
)
from meridian.server.domain.access.policy import parse_identity_policy, parse_key_policy
from meridian.server.domain.validation import default_key_policy

ACCOUNT = "111122223333"
BOB = f"arn:meridian:iam::{ACCOUNT}:user/bob"
ALICE = f"arn:meridian:iam::{ACCOUNT}:user/alice"
KEY = f"arn:meridian:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def key_policy(*statements: dict[str, Any]) -> Any:
    return parse_key_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def identity(name: str, *statements: dict[str, Any]) -> NamedPolicy:
    return NamedPolicy(name, parse_identity_policy(json.dumps({"Statement": list(statements)})))


def statement(effect: str = "Allow", principal: Any = BOB, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"Effect": effect, "Action": "kms:Decrypt", "Resource": "*"}
    if principal is not None:
        result["Principal"] = principal if principal == "*" else {"AWS": principal}
    result.update(extra)
    return result


def context(**values: str) -> ConditionContext:
    result = ConditionContext()
    result.set("aws:PrincipalArn", BOB)
    for key, value in values.items():
        result.set(key.replace("__", ":"), value)
    return result


def decide(
    policy: Any,
    identities: tuple[NamedPolicy, ...] = (),
    grants: tuple[Grant, ...] = (),
    *,
    action: str = "kms:Decrypt",
    principal: str = BOB,
    values: ConditionContext | None = None,
    encryption_context: dict[str, str] | None = None,
    requested_grant: GrantSpec | None = None,
) -> Any:
    return evaluate(
        EvaluationRequest(
            principal_arn=principal,
            action=action,
            resource=KEY,
            context=values or context(),
            key_policy=policy,
            identity_policies=identities,
            grants=grants,
            encryption_context=encryption_context,
            requested_grant=requested_grant,
        )
    )


def grant(
    operations: tuple[str, ...] = ("Decrypt",),
    grantee: str = BOB,
    constraints: GrantConstraints | None = None,
) -> Grant:
    return Grant(
        grant_id="ab" * 32,
        key_id="1234abcd-12ab-34cd-56ef-1234567890ab",
        name="batch",
        grantee_principal=grantee,
        retiring_principal="",
        issuing_account=f"arn:meridian:iam::{ACCOUNT}:root",
        operations=operations,
        constraints=constraints or GrantConstraints(),
        created_at=NOW,
    )


ALLOW_DECRYPT = identity("app", {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"})
DEFAULT = parse_key_policy(default_key_policy(ACCOUNT))


def test_default_deny() -> None:
    assert decide(DEFAULT).kind is DecisionKind.IMPLICIT_DENY


def test_key_policy_allows_the_named_principal() -> None:
    decision = decide(key_policy(statement(Sid="Bob")))
    assert decision.allowed
    assert decision.matched[0].sid == "Bob"
    assert decision.matched[0].source_type is SourceType.KEY_POLICY
    assert not decide(key_policy(statement()), principal=ALICE).allowed


def test_anyone() -> None:
    assert decide(key_policy(statement(principal="*")), principal=ALICE).allowed
    assert decide(key_policy(statement(principal=["*"])), principal=ALICE).allowed


def test_identity_policies_count_only_where_the_key_policy_delegates() -> None:
    delegated = decide(DEFAULT, (ALLOW_DECRYPT,))
    assert delegated.allowed
    assert [m.source_type for m in delegated.matched] == [
        SourceType.KEY_POLICY,
        SourceType.IDENTITY_POLICY,
    ]
    not_delegated = key_policy(statement(principal=ALICE, Action="kms:*"))
    assert decide(not_delegated, (ALLOW_DECRYPT,)).kind is DecisionKind.IMPLICIT_DENY


def test_delegation_covers_only_the_delegated_actions() -> None:
    encrypt_only = key_policy(statement(principal=ACCOUNT, Action="kms:Encrypt"))
    assert not decide(encrypt_only, (ALLOW_DECRYPT,)).allowed
    assert decide(encrypt_only, (ALLOW_DECRYPT,), action="kms:Encrypt").kind is (
        DecisionKind.IMPLICIT_DENY
    )


def test_explicit_deny_wins_everywhere() -> None:
    deny_in_key = key_policy(statement(), statement("Deny", Sid="NoBob"))
    decision = decide(deny_in_key, (ALLOW_DECRYPT,), (grant(),))
    assert decision.kind is DecisionKind.EXPLICIT_DENY
    assert decision.matched[0].sid == "NoBob"
    deny_in_identity = identity("fence", {"Effect": "Deny", "Action": "kms:*", "Resource": "*"})
    assert decide(key_policy(statement()), (deny_in_identity,)).kind is (DecisionKind.EXPLICIT_DENY)
    # A deny that names the account applies to its principals without any delegation.
    deny_account = key_policy(statement(), statement("Deny", principal=ACCOUNT))
    assert decide(deny_account).kind is DecisionKind.EXPLICIT_DENY


def test_not_principal_deny_spares_those_named() -> None:
    policy = key_policy(
        statement(principal="*"), statement("Deny", principal=None, NotPrincipal={"AWS": BOB})
    )
    assert decide(policy).allowed
    assert decide(policy, principal=ALICE).kind is DecisionKind.EXPLICIT_DENY


def test_not_action_and_not_resource() -> None:
    deny_all_but_describe = {
        "Effect": "Deny",
        "Principal": {"AWS": BOB},
        "NotAction": "kms:Describe*",
        "Resource": "*",
    }
    policy = key_policy(statement(Action="kms:*"), deny_all_but_describe)
    assert decide(policy).kind is DecisionKind.EXPLICIT_DENY
    assert decide(policy, action="kms:DescribeKey").allowed
    elsewhere = {
        "Effect": "Allow",
        "Principal": {"AWS": BOB},
        "Action": "kms:*",
        "NotResource": KEY,
    }
    assert not decide(key_policy(elsewhere)).allowed


def test_conditions_decide() -> None:
    policy = key_policy(
        statement(Condition={"StringEquals": {"kms:EncryptionContext:tenant": "acme"}})
    )
    assert decide(policy, values=context(**{"kms__EncryptionContext__tenant": "acme"})).allowed
    assert not decide(policy, values=context(**{"kms__EncryptionContext__tenant": "x"})).allowed
    assert not decide(policy).allowed


def test_grants_allow_their_operations_for_their_grantee() -> None:
    assert decide(DEFAULT, grants=(grant(),)).allowed
    assert decide(DEFAULT, grants=(grant(),)).matched[0].source_type is SourceType.GRANT
    assert not decide(DEFAULT, grants=(grant(),), action="kms:Encrypt").allowed
    assert not decide(DEFAULT, grants=(grant(grantee=ALICE),)).allowed
    # Grants apply to keys only; identity-only resources never consult them.
    assert not evaluate(
        EvaluationRequest(BOB, "kms:Decrypt", "*", context(), None, (), (grant(),))
    ).allowed


def test_grant_constraints() -> None:
    subset = grant(constraints=GrantConstraints(encryption_context_subset={"tenant": "acme"}))
    assert decide(
        DEFAULT, grants=(subset,), encryption_context={"tenant": "acme", "x": "1"}
    ).allowed
    assert not decide(DEFAULT, grants=(subset,), encryption_context={"tenant": "other"}).allowed
    assert not decide(DEFAULT, grants=(subset,)).allowed
    equals = grant(constraints=GrantConstraints(encryption_context_equals={"tenant": "acme"}))
    assert decide(DEFAULT, grants=(equals,), encryption_context={"tenant": "acme"}).allowed
    assert not decide(
        DEFAULT, grants=(equals,), encryption_context={"tenant": "acme", "x": "1"}
    ).allowed
    # Operations without an encryption context ignore the constraints (AWS's rule).
    describe = grant(("DescribeKey",), constraints=GrantConstraints({"tenant": "acme"}))
    assert decide(DEFAULT, grants=(describe,), action="kms:DescribeKey").allowed


def test_a_grant_can_make_only_narrower_grants() -> None:
    parent = grant(
        ("Decrypt", "Encrypt", "CreateGrant"),
        constraints=GrantConstraints(encryption_context_subset={"tenant": "acme"}),
    )

    def child(operations: tuple[str, ...], constraints: GrantConstraints) -> GrantSpec:
        return GrantSpec(ALICE, "", operations, constraints, "")

    narrower = child(("Decrypt",), GrantConstraints(encryption_context_equals={"tenant": "acme"}))
    wider_operations = child(
        ("Sign",), GrantConstraints(encryption_context_subset={"tenant": "acme"})
    )
    looser = child(("Decrypt",), GrantConstraints())
    for spec, allowed in ((narrower, True), (wider_operations, False), (looser, False)):
        decision = decide(DEFAULT, grants=(parent,), action="kms:CreateGrant", requested_grant=spec)
        assert decision.allowed is allowed


def test_a_retire_grant_operation_does_not_retire_other_grants() -> None:
    assert not decide(DEFAULT, grants=(grant(("RetireGrant",)),), action="kms:RetireGrant").allowed


def test_grant_tokens_name_their_grant() -> None:
    token = encode_grant_token("cd" * 32, b"\x01" * 16)
    assert decode_grant_token(token) == "cd" * 32
    assert encode_grant_token("cd" * 32, b"\x02" * 16) != token


def test_missing_context_keys_of_relevant_statements() -> None:
    policy = key_policy(
        statement(Condition={"StringEquals": {"kms:EncryptionContext:tenant": "acme"}}),
        statement(principal=ALICE, Sid="Alice", Condition={"Bool": {"kms:MultiRegion": "true"}}),
    )
    request = EvaluationRequest(BOB, "kms:Decrypt", KEY, context(), policy, ())
    assert missing_context_keys(request) == ["kms:encryptioncontext:tenant"]


# ---- properties ------------------------------------------------------------------------

PRINCIPALS = [BOB, ALICE, ACCOUNT, "*"]
ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:*", "kms:De*", "kms:Generate*"]
RESOURCES = ["*", KEY, "arn:meridian:kms:*:*:key/other"]
CONDITIONS: list[dict[str, Any] | None] = [
    None,
    {"StringEquals": {"kms:EncryptionContext:tenant": "acme"}},
    {"StringNotEquals": {"kms:EncryptionContext:tenant": "acme"}},
    {"Null": {"kms:EncryptionContext:tenant": "true"}},
    {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant"]}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
]


@st.composite
def statements(
    draw: st.DrawFn, *, key: bool, principals: tuple[str, ...] = tuple(PRINCIPALS)
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "Effect": draw(st.sampled_from(["Allow", "Deny"])),
        "Action": draw(st.sampled_from(ACTIONS)),
        "Resource": draw(st.sampled_from(RESOURCES)),
    }
    if key:
        who = draw(st.sampled_from(principals))
        result["Principal"] = "*" if who == "*" else {"AWS": who}
    condition = draw(st.sampled_from(CONDITIONS))
    if condition is not None:
        result["Condition"] = condition
    return result


contexts = st.builds(
    lambda tenant, ip: context(
        **{
            **({"kms__EncryptionContext__tenant": tenant} if tenant else {}),
            "aws__SourceIp": ip,
        }
    ),
    st.sampled_from([None, "acme", "other"]),
    st.sampled_from(["10.1.1.1", "192.168.0.1"]),
)
actions = st.sampled_from(["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"])
grant_sets = st.lists(
    st.builds(grant, st.sampled_from([("Decrypt",), ("Encrypt", "Decrypt"), ("DescribeKey",)])),
    max_size=2,
)
key_statements = st.lists(statements(key=True), min_size=1, max_size=5)
identity_statements = st.lists(statements(key=False), max_size=3)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


def build(key_list: list[dict[str, Any]], identity_list: list[dict[str, Any]]) -> tuple[Any, Any]:
    identities = (identity("generated", *identity_list),) if identity_list else ()
    return key_policy(*key_list), identities


@PROPERTY_SETTINGS
@given(key_statements, identity_statements, grant_sets, actions, contexts)
def test_property_explicit_deny_always_wins(
    key_list: list[dict[str, Any]],
    identity_list: list[dict[str, Any]],
    grants: list[Grant],
    action: str,
    values: ConditionContext,
) -> None:
    deny = {"Effect": "Deny", "Principal": {"AWS": BOB}, "Action": action, "Resource": "*"}
    policy, identities = build([*key_list, deny], identity_list)
    decision = decide(policy, identities, tuple(grants), action=action, values=values)
    assert decision.kind is DecisionKind.EXPLICIT_DENY


@PROPERTY_SETTINGS
@given(key_statements, identity_statements, grant_sets, actions, contexts, statements(key=True))
def test_property_adding_an_allow_never_removes_access(
    key_list: list[dict[str, Any]],
    identity_list: list[dict[str, Any]],
    grants: list[Grant],
    action: str,
    values: ConditionContext,
    extra: dict[str, Any],
) -> None:
    before = decide(*build(key_list, identity_list), tuple(grants), action=action, values=values)
    extra = {**extra, "Effect": "Allow"}
    after_key = decide(
        *build([*key_list, extra], identity_list), tuple(grants), action=action, values=values
    )
    identity_extra = {k: v for k, v in extra.items() if k != "Principal"}
    after_identity = decide(
        *build(key_list, [*identity_list, identity_extra]),
        tuple(grants),
        action=action,
        values=values,
    )
    after_grant = decide(
        *build(key_list, identity_list),
        (*grants, grant((action.removeprefix("kms:"),))),
        action=action,
        values=values,
    )
    if before.allowed:
        assert after_key.allowed and after_identity.allowed and after_grant.allowed


@PROPERTY_SETTINGS
@given(
    st.lists(statements(key=True, principals=(ALICE,)), min_size=1, max_size=5),
    actions,
    contexts,
)
def test_property_no_statement_for_the_principal_denies(
    key_list: list[dict[str, Any]], action: str, values: ConditionContext
) -> None:
    decision = decide(key_policy(*key_list), action=action, values=values)
    assert not decision.allowed
