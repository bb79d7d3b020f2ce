"""The policy language: parse a JSON document into a checked, compiled :class:`Policy`.

Key policies and identity policies share the language (Version, Statement[Sid, Effect,
Principal/NotPrincipal, Action/NotAction, Resource/NotResource, Condition]); they
differ in one rule: a key policy statement names its principals, an identity policy
statement must not (it applies to the principal it is attached to).

Every refusal is a MalformedPolicyDocumentException whose message says what is wrong
and where (``Statement[2].Condition.StringEquals``), so a user can fix a policy without
guessing. Documents are bounded (32 KB) before they are parsed, duplicate JSON keys are
refused rather than silently collapsed, and parsing never recurses on caller input
beyond the document's fixed depth.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from meridian.server.domain.access import actions
from meridian.server.domain.access.condition_keys import (
    MULTI_REGION_KEY_TYPE,
    RESOURCE_ALIASES,
    RESOURCE_TAG_PREFIX,
    ConditionContext,
    is_supported_condition_key,
    supported_condition_keys,
)
from meridian.server.domain.access.conditions import (
    Condition,
    ConditionSyntaxError,
    compile_condition,
)
from meridian.server.domain.access.wildcards import Wildcard
from meridian.server.domain.errors import (
    LimitExceededException,
    MalformedPolicyDocumentException,
)

POLICY_BYTES_MAX = 32 * 1024
VERSIONS = ("2012-10-17", "2008-10-17")
SID_CHARS_MAX = 256

_TOP_LEVEL = ("Version", "Id", "Statement")
_STATEMENT_ELEMENTS = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
)
_ACCOUNT = re.compile(r"\d{12}")
_ROOT_ARN = re.compile(r"arn:meridian:iam::(\d{12}):root")
# Principals Meridian can authenticate: users (client certificates), nodes (peer
# regions) and roles (reserved); names as IAM allows them.
_PRINCIPAL_ARN = re.compile(
    r"arn:meridian:iam::(\d{12}):(user|role|node)/[A-Za-z0-9+=,.@_/-]{1,128}"
)
_ACTION = re.compile(r"([a-zA-Z0-9-]+):([A-Za-z0-9*?]+)")
_RESOURCE_CHARS_MAX = 2048


class PolicyKind(StrEnum):
    KEY = "key policy"
    IDENTITY = "identity policy"


class Effect(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True, slots=True)
class Principals:
    """Who a statement names. ``accounts`` hold account ids named by their root ARN or
    by the bare 12-digit id: in a key policy that means "this account's principals,
    as their identity policies allow" (AWS's delegation to IAM)."""

    anyone: bool = False
    arns: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()


class PrincipalMatch(StrEnum):
    NONE = "none"
    DIRECT = "direct"  # "*" or the principal's own ARN
    ACCOUNT = "account"  # the principal's account (delegation to identity policies)


@dataclass(frozen=True, slots=True)
class Statement:
    index: int
    sid: str
    effect: Effect
    principals: Principals | None  # None: identity policy statement
    not_principal: bool
    actions: tuple[Wildcard, ...]
    not_action: bool
    resources: tuple[Wildcard, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        """How messages and the audit trail name this statement: its Sid, else its index."""
        return self.sid or f"Statement[{self.index}]"

    def principal_match(self, principal_arn: str, account_id: str) -> PrincipalMatch:
        if self.principals is None:
            return PrincipalMatch.DIRECT
        named = self.principals
        if named.anyone or principal_arn in named.arns:
            found = PrincipalMatch.DIRECT
        elif account_id in named.accounts:
            found = PrincipalMatch.ACCOUNT
        else:
            found = PrincipalMatch.NONE
        if not self.not_principal:
            return found
        # NotPrincipal: the statement applies to everyone *not* named (an account entry
        # excludes every principal of that account).
        return PrincipalMatch.DIRECT if found is PrincipalMatch.NONE else PrincipalMatch.NONE

    def action_matches(self, action: str) -> bool:
        matched = any(pattern.matches(action) for pattern in self.actions)
        return matched != self.not_action

    def resource_matches(self, resource: str) -> bool:
        matched = any(pattern.matches(resource) for pattern in self.resources)
        return matched != self.not_resource

    def conditions_hold(self, context: ConditionContext) -> bool:
        return all(condition.holds(context) for condition in self.conditions)

    def condition_keys(self) -> frozenset[str]:
        return frozenset(condition.key for condition in self.conditions)


@dataclass(frozen=True, slots=True)
class Policy:
    kind: PolicyKind
    version: str
    policy_id: str
    statements: tuple[Statement, ...]
    condition_keys: frozenset[str]  # lower case, every key any statement names
    # Whether a condition tests the key's aliases, tags or multi-Region role (a read).
    reads_resource: bool = False


def parse_key_policy(document: str) -> Policy:
    return parse_policy(document, PolicyKind.KEY)


def parse_identity_policy(document: str) -> Policy:
    return parse_policy(document, PolicyKind.IDENTITY)


def parse_policy(document: str, kind: PolicyKind) -> Policy:
    """Parse and check ``document``; MalformedPolicyDocumentException says what is wrong."""
    _check_size(document, kind)
    try:
        root = json.loads(document, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as duplicate:
        raise _malformed(
            f"The {kind} has the JSON key '{duplicate.key}' twice in one object"
        ) from None
    except RecursionError:
        raise _malformed(f"The {kind} is nested too deeply") from None
    except ValueError as error:
        raise _malformed(f"The {kind} is not valid JSON: {_json_problem(error)}") from None
    if not isinstance(root, dict):
        raise _malformed(f"The {kind} must be a JSON object")
    for name in root:
        if name not in _TOP_LEVEL:
            raise _malformed(
                f"The {kind} has an unknown element '{_short(name)}'; "
                f"allowed: {', '.join(_TOP_LEVEL)}"
            )
    version = root.get("Version", VERSIONS[1])
    if version not in VERSIONS:
        raise _malformed(f"Version must be one of {', '.join(VERSIONS)}")
    policy_id = root.get("Id", "")
    if not isinstance(policy_id, str):
        raise _malformed("Id must be a string")
    raw_statements = root.get("Statement")
    if raw_statements is None:
        raise _malformed(f"The {kind} must have a Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise _malformed("Statement must be an object or a non-empty list of objects")
    statements = tuple(_statement(raw, index, kind) for index, raw in enumerate(raw_statements))
    sids = [statement.sid for statement in statements if statement.sid]
    duplicates = sorted({sid for sid in sids if sids.count(sid) > 1})
    if duplicates:
        raise _malformed(f"Statement ids must be unique; '{_short(duplicates[0])}' is repeated")
    keys = frozenset(key for statement in statements for key in statement.condition_keys())
    return Policy(
        kind=kind,
        version=version,
        policy_id=policy_id,
        statements=statements,
        condition_keys=keys,
        reads_resource=any(
            key in (RESOURCE_ALIASES, MULTI_REGION_KEY_TYPE) or key.startswith(RESOURCE_TAG_PREFIX)
            for key in keys
        ),
    )


def _check_size(document: str, kind: PolicyKind) -> None:
    if not isinstance(document, str) or not document.strip():
        raise _malformed(f"The {kind} must not be empty")
    # Each character is at most 4 bytes: only long documents need the exact count.
    if len(document) * 4 > POLICY_BYTES_MAX and (
        len(document.encode("utf-8", "surrogatepass")) > POLICY_BYTES_MAX
    ):
        raise LimitExceededException(f"The {kind} must be at most {POLICY_BYTES_MAX} bytes")


def _statement(raw: object, index: int, kind: PolicyKind) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise _malformed(f"{where} must be a JSON object")
    for name in raw:
        if name not in _STATEMENT_ELEMENTS:
            raise _malformed(
                f"{where} has an unknown element '{_short(name)}'; "
                f"allowed: {', '.join(_STATEMENT_ELEMENTS)}"
            )
    sid = raw.get("Sid", "")
    if not isinstance(sid, str) or len(sid) > SID_CHARS_MAX:
        raise _malformed(f"{where}.Sid must be a string of at most {SID_CHARS_MAX} characters")
    if sid:
        where = f"Statement[{index}] ('{_short(sid)}')"
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise _malformed(f"{where}.Effect must be Allow or Deny")
    principals, not_principal = _principals(raw, where, kind)
    action_patterns, not_action = _actions(raw, where, kind)
    resource_patterns, not_resource = _resources(raw, where)
    conditions = _conditions(raw.get("Condition"), where)
    return Statement(
        index=index,
        sid=sid,
        effect=Effect(effect),
        principals=principals,
        not_principal=not_principal,
        actions=action_patterns,
        not_action=not_action,
        resources=resource_patterns,
        not_resource=not_resource,
        conditions=conditions,
    )


def _one_of(raw: dict[str, Any], where: str, name: str, *, required: bool) -> tuple[Any, bool]:
    positive, negative = raw.get(name), raw.get(f"Not{name}")
    if positive is not None and negative is not None:
        raise _malformed(f"{where} must not have both {name} and Not{name}")
    if positive is None and negative is None:
        if required:
            raise _malformed(f"{where} must have {name} or Not{name}")
        return None, False
    return (positive, False) if positive is not None else (negative, True)


def _strings(value: object, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _malformed(f"{where} must not be an empty list")
    for item in items:
        if not isinstance(item, str) or not item:
            raise _malformed(f"{where} must be a non-empty string or a list of them")
    return items  # type: ignore[return-value]


def _principals(
    raw: dict[str, Any], where: str, kind: PolicyKind
) -> tuple[Principals | None, bool]:
    value, negated = _one_of(raw, where, "Principal", required=kind is PolicyKind.KEY)
    if kind is PolicyKind.IDENTITY:
        if value is not None:
            raise _malformed(
                f"{where}: an identity policy must not name a Principal or NotPrincipal; "
                "it applies to the principal it is attached to"
            )
        return None, False
    element = "NotPrincipal" if negated else "Principal"
    if value == "*":
        return Principals(anyone=True), negated
    if not isinstance(value, dict) or not value:
        raise _malformed(f'{where}.{element} must be "*" or an object such as {{"AWS": [...]}}')
    for principal_type in value:
        if principal_type != "AWS":
            raise _malformed(
                f"{where}.{element} has principal type '{_short(principal_type)}'; "
                "Meridian supports only AWS principals (ARNs of users, roles, nodes or "
                "accounts)"
            )
    arns: set[str] = set()
    accounts: set[str] = set()
    anyone = False
    for entry in _strings(value["AWS"], f"{where}.{element}.AWS"):
        if entry == "*":
            anyone = True
        elif _ACCOUNT.fullmatch(entry):
            accounts.add(entry)
        elif match := _ROOT_ARN.fullmatch(entry):
            accounts.add(match.group(1))
        elif _PRINCIPAL_ARN.fullmatch(entry):
            arns.add(entry)
        else:
            raise _malformed(
                f"{where}.{element} has an invalid principal '{_short(entry)}'; use \"*\", an "
                "account id, arn:meridian:iam::<account>:root, or "
                "arn:meridian:iam::<account>:user/<name> (wildcards are not allowed in "
                "principals; use a Condition on aws:PrincipalArn)"
            )
    return Principals(anyone=anyone, arns=frozenset(arns), accounts=frozenset(accounts)), negated


def _actions(
    raw: dict[str, Any], where: str, kind: PolicyKind
) -> tuple[tuple[Wildcard, ...], bool]:
    value, negated = _one_of(raw, where, "Action", required=True)
    element = "NotAction" if negated else "Action"
    services = (
        actions.KEY_POLICY_SERVICES if kind is PolicyKind.KEY else actions.IDENTITY_POLICY_SERVICES
    )
    patterns: list[Wildcard] = []
    for entry in _strings(value, f"{where}.{element}"):
        if entry == "*":
            patterns.append(Wildcard.compile("*"))
            continue
        match = _ACTION.fullmatch(entry)
        if match is None:
            raise _malformed(
                f"{where}.{element} has an invalid action '{_short(entry)}'; "
                "actions look like kms:Encrypt or kms:Generate*"
            )
        service = match.group(1).lower()
        if service not in services:
            raise _malformed(
                f"{where}.{element} names the service '{_short(match.group(1))}'; a {kind} "
                f"may name only {', '.join(sorted(services))} actions"
            )
        has_wildcard = "*" in entry or "?" in entry
        if service != "meridian" and not has_wildcard and actions.canonical_action(entry) is None:
            raise _malformed(f"{where}.{element} names the unknown action '{_short(entry)}'")
        patterns.append(Wildcard.compile(entry, ignore_case=True))
    return tuple(patterns), negated


def _resources(raw: dict[str, Any], where: str) -> tuple[tuple[Wildcard, ...], bool]:
    value, negated = _one_of(raw, where, "Resource", required=True)
    element = "NotResource" if negated else "Resource"
    patterns: list[Wildcard] = []
    for entry in _strings(value, f"{where}.{element}"):
        if len(entry) > _RESOURCE_CHARS_MAX or not (entry == "*" or entry.startswith("arn:")):
            raise _malformed(
                f"{where}.{element} has an invalid resource '{_short(entry)}'; use \"*\" or an "
                "ARN (wildcards allowed)"
            )
        patterns.append(Wildcard.compile(entry))
    return tuple(patterns), negated


def _conditions(raw: object, where: str) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _malformed(f"{where}.Condition must be an object of operators")
    compiled: list[Condition] = []
    for operator, block in raw.items():
        place = f"{where}.Condition.{_short(operator)}"
        if not isinstance(block, dict) or not block:
            raise _malformed(f"{place} must be a non-empty object of condition keys")
        for key, values in block.items():
            if not is_supported_condition_key(key.lower()):
                raise _malformed(
                    f"{place} names the unsupported condition key '{_short(key)}'; supported: "
                    f"{', '.join(supported_condition_keys())}"
                )
            try:
                compiled.append(compile_condition(operator, key, _condition_values(values)))
            except _BadValue:
                raise _malformed(
                    f"{place}.{_short(key)} must be a string, number, boolean or a non-empty "
                    "list of them"
                ) from None
            except ConditionSyntaxError as error:
                raise _malformed(f"{place}: {error}") from None
    return tuple(compiled)


class _BadValue(ValueError):
    pass


def _condition_values(values: object) -> list[str]:
    items = values if isinstance(values, list) else [values]
    if not items:
        raise _BadValue()
    return [_scalar(item) for item in items]


def _scalar(value: object) -> str:
    # JSON booleans and numbers are compared as their JSON text, as IAM does.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    raise _BadValue()


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = _short(key)


def _refuse_duplicates(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _json_problem(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    return "the document cannot be decoded"


def _malformed(message: str) -> MalformedPolicyDocumentException:
    return MalformedPolicyDocumentException(message)


def _short(text: object, chars_max: int = 80) -> str:
    value = str(text)
    printable = "".join(ch if ch.isprintable() else "?" for ch in value[:chars_max])
    return printable + ("..." if len(value) > chars_max else "")


def iter_statements(policies: Sequence[Policy]) -> Iterator[tuple[Policy, Statement]]:
    for policy in policies:
        for statement in policy.statements:
            yield policy, statement
