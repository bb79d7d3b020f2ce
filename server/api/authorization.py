"""The authorization hook: every API call is allowed or refused here, before it runs.

It is a :class:`CallHook` (docs/contributors/shared-contracts.md), so it sees every
call of every transport. For each call it looks up the operation's row in
``access_rules`` (no row: refused, whoever asks), describes the request to the domain's
authorizer, and either lets the call run or raises AccessDeniedException.

What it decided is left in ``call.facts`` for the audit trail:

    facts["authorization"] = {
        "decision": "allow" | "deny" | "error",
        "action": "kms:Decrypt",              # the deciding check
        "resource": "arn:meridian:kms:...",   # as the caller named it
        "matched": [                          # what allowed (or explicitly denied) it
            {"source": "key-policy", "policy": "default", "sid": "AllowUse"},
        ],
        "reason": "...",                      # for deny/error: why, in words
    }
    facts["key_arn"]          the (first) key the call acts on, when it exists
    facts["related_key_arn"]  ReEncrypt's destination key
    facts["grant_id"]         the grant that allowed the call, if one did
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from meridian.server.api.access_rules import (
    KMS_SERVICE,
    NODE_ONLY_SERVICE_PREFIXES,
    RULES_BY_SERVICE,
    Rule,
)
from meridian.server.api.batch_memo import FACT_AUTHORIZATION_MEMO
from meridian.server.api.interceptor import CallInfo
from meridian.server.api.principal import Principal
from meridian.server.domain.access.authorizer import AuthorizationResult, Authorizer
from meridian.server.domain.access.evaluator import DecisionKind, SourceType
from meridian.server.domain.errors import AccessDeniedException, KmsError

log = structlog.get_logger("meridian.authorization")

NODE_PRINCIPAL_MARKER = ":node/"


class AuthorizationHook:
    """Allows or refuses each call by the rules of ``access_rules``; fails closed."""

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        rules: Mapping[str, Mapping[str, Rule]] = RULES_BY_SERVICE,
    ) -> None:
        self._authorizer = authorizer
        self._rules = rules
        self._recorded: tuple[AuthorizationResult | None, dict[str, Any]] = (None, {})

    async def before(self, call: CallInfo) -> None:
        caller = call.caller
        if caller is None:  # the pipeline refuses these before any hook; fail closed anyway
            raise AccessDeniedException("The request has no authenticated principal")
        service = service_of(call.method)
        if service.startswith(NODE_ONLY_SERVICE_PREFIXES):
            _node_only(call, caller.principal_arn)
            return
        rule = self._rules.get(service, {}).get(call.operation)
        if rule is None:
            log.error(
                "no authorization rule for this operation; refused for everyone "
                "(add a row to server/api/access_rules.py)",
                service=service,
                operation=call.operation,
            )
            call.facts["authorization"] = {
                "decision": "deny",
                "action": call.operation,
                "resource": "",
                "matched": [],
                "reason": "no authorization rule for this operation",
            }
            raise AccessDeniedException(
                f"User: {caller.principal_arn} is not authorized to perform: {call.operation}"
            )
        if rule.per_item:
            # The items are calls of their own and each meets this hook (and its single
            # operation's row) before it runs; the envelope acts on nothing by itself.
            call.facts["authorization"] = {
                "decision": "allow",
                "action": rule.action,
                "resource": "",
                "matched": [],
                "reason": "each item is authorized as its own call",
            }
            return
        try:
            request = rule.describe(call.request, caller, account_id=self._authorizer.account_id)
            # An item of a batch may share the decision of an identical item before it
            # (server/api/batch_memo.py); a single call has no memo.
            memo = call.facts.get(FACT_AUTHORIZATION_MEMO)
            memo_key, result = memo.get(request) if memo is not None else (None, None)
            if result is None:
                result = await self._authorizer.authorize(request)
                if memo is not None and memo_key is not None:
                    memo.put(memo_key, result)
        except KmsError as error:
            call.facts["authorization"] = {
                "decision": "error",
                "action": rule.action,
                "resource": "",
                "matched": [],
                "reason": error.reason,
            }
            raise
        self._record(call, result)
        if not result.allowed:
            raise result.denial()

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None:
        return None

    def _record(self, call: CallInfo, result: AuthorizationResult) -> None:
        # The items of a batch that share a decision (batch_memo.py) share its record
        # too: the same result object, so the same (never mutated) fact, built once.
        if result is not self._recorded[0]:
            self._recorded = (result, _decision_fact(result))
        call.facts["authorization"] = self._recorded[1]
        _record_keys(call, result)


def service_of(method: str) -> str:
    """``/pkg.Service/Op`` -> ``pkg.Service``; calls without a method are KMS calls."""
    if not method:
        return KMS_SERVICE
    return method.lstrip("/").partition("/")[0]


def is_node_principal(principal_arn: str) -> bool:
    return NODE_PRINCIPAL_MARKER in principal_arn


def require_node_identity(principal: Principal | None) -> None:
    """For node-to-node services that do not pass through the call hooks (streaming
    RPCs): refuse anyone but a peer node, as the hook does for unary calls."""
    if principal is None or principal.kind != "node":
        raise AccessDeniedException("Only Meridian nodes may call the replication service")


def _node_only(call: CallInfo, principal_arn: str) -> None:
    allowed = is_node_principal(principal_arn)
    call.facts["authorization"] = {
        "decision": "allow" if allowed else "deny",
        "action": call.operation,
        "resource": "",
        "matched": [{"source": "node-identity", "policy": "", "sid": ""}] if allowed else [],
        "reason": "" if allowed else "only node certificates may call this service",
    }
    if not allowed:
        raise AccessDeniedException(
            f"User: {principal_arn} is not authorized to perform: {call.operation} "
            "(only Meridian nodes may call this service)"
        )


def _decision_fact(result: AuthorizationResult) -> dict[str, Any]:
    check = result.deciding
    decision = check.decision
    return {
        "decision": "allow" if result.allowed else "deny",
        "action": check.action,
        "resource": check.resource,
        "matched": [
            {"source": matched.source_type.value, "policy": matched.source_id, "sid": matched.sid}
            for matched in decision.matched
        ],
        "reason": _reason(decision.kind),
    }


def _record_keys(call: CallInfo, result: AuthorizationResult) -> None:
    if result.key_arns:
        call.facts.setdefault("key_arn", result.key_arns[0])
        if len(result.key_arns) > 1 and result.key_arns[1] != result.key_arns[0]:
            call.facts.setdefault("related_key_arn", result.key_arns[1])
    if result.allowed:
        for each in result.checks:
            for matched in each.decision.matched:
                if matched.source_type is SourceType.GRANT:
                    call.facts.setdefault("grant_id", matched.source_id)


def _reason(kind: DecisionKind) -> str:
    if kind is DecisionKind.EXPLICIT_DENY:
        return "explicitly denied"
    if kind is DecisionKind.IMPLICIT_DENY:
        return "no policy or grant allows it"
    return ""
