"""The one evaluator: may this principal perform this action on this resource, now?

AWS KMS's logic, in order:

1. An explicit ``Deny`` that applies — in the key policy (to the principal directly, to
   its account, or through ``NotPrincipal``) or in any of the principal's identity
   policies — refuses the request. Nothing overrides it.
2. An ``Allow`` in the key policy that names the principal (or ``"*"``) allows it.
3. An ``Allow`` in the key policy that names the principal's *account* delegates to
   identity policies: it allows only if an identity policy of the principal allows too.
   This is AWS's rule that identity (IAM) policies count for a key only when its key
   policy delegates to the account.
4. A grant on the key for the principal, covering the operation and satisfied by the
   request's encryption context, allows it.
5. Otherwise the request is refused (default deny).

A resource that is not a key (an alias ARN, a principal ARN, ``"*"`` for operations
like CreateKey or ListKeys) has no key policy and no grants: identity policies alone
decide, explicit deny still first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from meridian.server.domain.access.condition_keys import ConditionContext
from meridian.server.domain.access.grants import Grant, GrantSpec, grant_allows
from meridian.server.domain.access.policy import Effect, Policy, PrincipalMatch, Statement


class DecisionKind(StrEnum):
    # IAM's EvalDecision values, so simulation results read as AWS's do.
    ALLOWED = "allowed"
    EXPLICIT_DENY = "explicitDeny"
    IMPLICIT_DENY = "implicitDeny"


class SourceType(StrEnum):
    KEY_POLICY = "key-policy"
    IDENTITY_POLICY = "identity-policy"
    GRANT = "grant"


@dataclass(frozen=True, slots=True)
class MatchedStatement:
    """What decided: a statement of a named policy, or a grant (``sid`` = grant id)."""

    source_type: SourceType
    source_id: str  # "default" for the key policy, the identity policy name, the grant id
    sid: str

    def describe(self) -> str:
        return f"{self.source_type.value}:{self.source_id}:{self.sid}"


@dataclass(frozen=True, slots=True)
class NamedPolicy:
    name: str
    policy: Policy


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    principal_arn: str
    action: str  # canonical spelling, e.g. kms:Encrypt
    resource: str  # key ARN, alias ARN, principal ARN, or "*"
    context: ConditionContext
    key_policy: Policy | None  # None: the resource is not a key
    identity_policies: Sequence[NamedPolicy] = ()
    grants: Sequence[Grant] = ()
    encryption_context: Mapping[str, str] | None = None  # for grant constraints
    requested_grant: GrantSpec | None = None  # CreateGrant through a grant must narrow it


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    matched: tuple[MatchedStatement, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.kind is DecisionKind.ALLOWED


KEY_POLICY_NAME = "default"


def principal_account(principal_arn: str) -> str:
    """The account of ``arn:meridian:iam::<account>:...``; "" if it is not such an ARN."""
    parts = principal_arn.split(":", 5)
    return parts[4] if len(parts) == 6 and parts[0] == "arn" and parts[2] == "iam" else ""


def _applies(statement: Statement, request: EvaluationRequest) -> bool:
    return (
        statement.action_matches(request.action)
        and statement.resource_matches(request.resource)
        and statement.conditions_hold(request.context)
    )


def evaluate(request: EvaluationRequest) -> Decision:
    account = principal_account(request.principal_arn)
    denies: list[MatchedStatement] = []
    direct: list[MatchedStatement] = []
    delegated: list[MatchedStatement] = []
    if request.key_policy is not None:
        for statement in request.key_policy.statements:
            match = statement.principal_match(request.principal_arn, account)
            if match is PrincipalMatch.NONE or not _applies(statement, request):
                continue
            found = MatchedStatement(SourceType.KEY_POLICY, KEY_POLICY_NAME, statement.label)
            if statement.effect is Effect.DENY:
                denies.append(found)
            elif match is PrincipalMatch.DIRECT:
                direct.append(found)
            else:
                delegated.append(found)
    identity_allows: list[MatchedStatement] = []
    for named in request.identity_policies:
        for statement in named.policy.statements:
            if not _applies(statement, request):
                continue
            found = MatchedStatement(SourceType.IDENTITY_POLICY, named.name, statement.label)
            (denies if statement.effect is Effect.DENY else identity_allows).append(found)
    if denies:
        return Decision(DecisionKind.EXPLICIT_DENY, tuple(denies))
    if direct:
        return Decision(DecisionKind.ALLOWED, (direct[0],))
    if request.key_policy is None:
        if identity_allows:
            return Decision(DecisionKind.ALLOWED, (identity_allows[0],))
        return Decision(DecisionKind.IMPLICIT_DENY)
    if delegated and identity_allows:
        return Decision(DecisionKind.ALLOWED, (delegated[0], identity_allows[0]))
    for grant in request.grants:
        if grant_allows(
            grant,
            principal_arn=request.principal_arn,
            action=request.action,
            encryption_context=request.encryption_context,
            requested_grant=request.requested_grant,
        ):
            matched = MatchedStatement(
                SourceType.GRANT, grant.grant_id, grant.name or grant.grant_id
            )
            return Decision(DecisionKind.ALLOWED, (matched,))
    return Decision(DecisionKind.IMPLICIT_DENY)


def missing_context_keys(request: EvaluationRequest) -> list[str]:
    """Condition keys that statements relevant to the request test but the request lacks.

    IAM's simulator reports these (MissingContextValues) so a user sees that an answer
    would change if, say, an encryption context were given.
    """
    account = principal_account(request.principal_arn)
    relevant: list[Statement] = []
    if request.key_policy is not None:
        relevant += [
            statement
            for statement in request.key_policy.statements
            if statement.principal_match(request.principal_arn, account) is not PrincipalMatch.NONE
        ]
    relevant += [s for named in request.identity_policies for s in named.policy.statements]
    missing: set[str] = set()
    for statement in relevant:
        if not (
            statement.action_matches(request.action)
            and statement.resource_matches(request.resource)
        ):
            continue
        for condition in statement.conditions:
            if request.context.get(condition.key) is None:
                missing.add(condition.key)
    return sorted(missing)
