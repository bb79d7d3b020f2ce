"""Access-control operations: key policies, grants, identity policies and simulation.

Authorization of these calls, like every call, happens before they run (the API's
authorization hook); what is here are their own rules: AWS's validation, limits,
key states, the lockout safety check, CreateGrant's idempotency by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meridian.server.domain import identifiers, validation
from meridian.server.domain.access.actions import canonical_action
from meridian.server.domain.access.authorizer import Authorizer, RetireTarget
from meridian.server.domain.access.condition_keys import (
    ENCRYPTION_CONTEXT_PREFIX,
    is_supported_condition_key,
)
from meridian.server.domain.access.evaluator import (
    Decision,
    EvaluationRequest,
    MatchedStatement,
    evaluate,
    missing_context_keys,
)
from meridian.server.domain.access.grants import (
    GRANT_ID_BYTES,
    GRANT_LIST_LIMIT_DEFAULT,
    GRANT_LIST_LIMIT_MAX,
    GRANT_TOKEN_NONCE_BYTES,
    GRANTS_PER_KEY_MAX,
    Grant,
    GrantSpec,
    encode_grant_token,
    new_grant_id,
    validate_grant_id,
    validate_principal,
)
from meridian.server.domain.access.policy import (
    Policy,
    parse_identity_policy,
    parse_key_policy,
)
from meridian.server.domain.access.ports import AccessStore, UserPolicy
from meridian.server.domain.clock import Clock
from meridian.server.domain.errors import (
    KMSInvalidStateException,
    LimitExceededException,
    MalformedPolicyDocumentException,
    NotFoundException,
    ValidationException,
)
from meridian.server.domain.model import Caller, Key, KeyState
from meridian.server.domain.pagination import make_marker, parse_marker
from meridian.server.domain.service import Page

KEY_POLICY_NAME = "default"
USER_POLICIES_PER_PRINCIPAL_MAX = 10
SIMULATION_ACTIONS_MAX = 100
SIMULATION_RESOURCES_MAX = 100
SIMULATION_CONTEXT_ENTRIES_MAX = 100
_POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}")
_USER_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
_KEY_POLICY_NAME = re.compile(r"[\w]{1,128}")
_LOCKOUT_MESSAGE = "The new key policy will not allow you to update the key policy in the future."


@dataclass(frozen=True, slots=True)
class CreatedGrant:
    grant_id: str
    grant_token: str


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """IAM's ContextEntry: a condition key and its values for a simulation."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SimulationResult:
    action: str
    resource: str
    decision: Decision
    missing_context_values: tuple[str, ...]

    @property
    def matched(self) -> tuple[MatchedStatement, ...]:
        return self.decision.matched


class AccessService:
    def __init__(
        self,
        *,
        authorizer: Authorizer,
        store: AccessStore,
        clock: Clock,
        randbytes: Callable[[int], bytes],
    ) -> None:
        self.authorizer = authorizer
        self.region = authorizer.region
        self.account_id = authorizer.account_id
        self._store = store
        self._clock = clock
        self._randbytes = randbytes

    # ---- key policies -------------------------------------------------------------------

    async def check_new_key_policy(self, caller: Caller, policy: str, *, bypass: bool) -> None:
        """CreateKey's checks of a caller-supplied policy: well formed, and (unless
        bypassed) not locking the caller out of the key they are creating."""
        if not policy:
            return
        parsed = parse_key_policy(policy)
        if not bypass:
            # The key's ARN does not exist yet; a policy names its own key with "*".
            placeholder = identifiers.key_arn(self.region, self.account_id, "new-key")
            await self._require_no_lockout(caller, parsed, placeholder)

    async def put_key_policy(
        self, caller: Caller, key_id: str, policy_name: str, policy: str, *, bypass: bool
    ) -> None:
        _check_key_policy_name(policy_name, missing=ValidationException)
        parsed = parse_key_policy(policy)
        key = await self.authorizer.resolve_key(key_id)
        if not bypass:
            await self._require_no_lockout(caller, parsed, key.arn)
        async with self._store.write() as tx:
            current = await tx.keys.get_key(key.key_id)
            if current is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            _require_not_pending_deletion(current)
            current.policy = policy
            await tx.keys.update_key(current)

    async def get_key_policy(self, caller: Caller, key_id: str, policy_name: str) -> str:
        _check_key_policy_name(policy_name, missing=NotFoundException)
        return (await self.authorizer.resolve_key(key_id)).policy

    async def list_key_policies(
        self, caller: Caller, key_id: str, *, limit: int | None, marker: str
    ) -> Page[str]:
        validation.validate_limit(limit)
        after = parse_marker("key-policies", marker)
        await self.authorizer.resolve_key(key_id)
        # Every key has exactly one policy, "default" (AWS's rule).
        names = [KEY_POLICY_NAME] if after is None else []
        return Page(names, "", False)

    async def _require_no_lockout(self, caller: Caller, policy: Policy, resource: str) -> None:
        authorizer = self.authorizer
        request = EvaluationRequest(
            principal_arn=caller.principal_arn,
            action="kms:PutKeyPolicy",
            resource=resource,
            context=authorizer.base_context(caller.principal_arn, caller.source_address),
            key_policy=policy,
            identity_policies=await authorizer.identity_policies(caller.principal_arn),
        )
        if not evaluate(request).allowed:
            raise MalformedPolicyDocumentException(_LOCKOUT_MESSAGE)

    # ---- grants -------------------------------------------------------------------------

    async def create_grant(self, caller: Caller, key_id: str, spec: GrantSpec) -> CreatedGrant:
        key = await self.authorizer.resolve_key(key_id)
        token_nonce = self._randbytes(GRANT_TOKEN_NONCE_BYTES)
        async with self._store.write() as tx:
            current = await tx.keys.get_key(key.key_id)
            if current is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            _require_not_pending_deletion(current)
            if spec.name:
                for existing in await tx.access.grants_named(key.key_id, spec.name):
                    if existing.same_terms(spec):
                        # AWS: the same name and terms are the same grant.
                        return CreatedGrant(
                            existing.grant_id, encode_grant_token(existing.grant_id, token_nonce)
                        )
            if await tx.access.count_grants(key.key_id) >= GRANTS_PER_KEY_MAX:
                raise LimitExceededException(f"A key can have at most {GRANTS_PER_KEY_MAX} grants")
            grant = Grant(
                grant_id=new_grant_id(self._randbytes(GRANT_ID_BYTES)),
                key_id=key.key_id,
                name=spec.name,
                grantee_principal=spec.grantee_principal,
                retiring_principal=spec.retiring_principal,
                issuing_account=f"arn:meridian:iam::{self.account_id}:root",
                operations=spec.operations,
                constraints=spec.constraints,
                created_at=self._clock.now(),
            )
            await tx.access.insert_grant(grant)
        self.authorizer.grants_changed()
        return CreatedGrant(grant.grant_id, encode_grant_token(grant.grant_id, token_nonce))

    async def list_grants(
        self,
        caller: Caller,
        key_id: str,
        *,
        grant_id: str,
        grantee_principal: str,
        limit: int | None,
        marker: str,
    ) -> Page[Grant]:
        page_size = _grant_limit(limit)
        after = parse_marker("grants", marker)
        if grant_id:
            validate_grant_id(grant_id)
        if grantee_principal:
            validate_principal(grantee_principal, "GranteePrincipal")
        key = await self.authorizer.resolve_key(key_id)
        grants = await self._store.reader.list_grants(
            key.key_id,
            grant_id=grant_id or None,
            grantee_principal=grantee_principal or None,
            after_grant_id=after,
            limit=page_size + 1,
        )
        return _page(grants, page_size, "grants")

    async def list_retirable_grants(
        self, caller: Caller, retiring_principal: str, *, limit: int | None, marker: str
    ) -> Page[Grant]:
        page_size = _grant_limit(limit)
        after = parse_marker("retirable-grants", marker)
        if not retiring_principal:
            raise ValidationException("RetiringPrincipal is required")
        validate_principal(retiring_principal, "RetiringPrincipal")
        grants = await self._store.reader.list_retirable_grants(
            retiring_principal, after_grant_id=after, limit=page_size + 1
        )
        return _page(grants, page_size, "retirable-grants")

    async def retire_grant(
        self, caller: Caller, *, grant_token: str, key_id: str, grant_id: str
    ) -> None:
        grant = await self.authorizer.find_grant(
            RetireTarget(grant_token=grant_token, key_id=key_id, grant_id=grant_id)
        )
        async with self._store.write() as tx:
            await tx.access.delete_grant(grant.grant_id)
        self.authorizer.grants_changed()

    async def revoke_grant(self, caller: Caller, key_id: str, grant_id: str) -> None:
        if not grant_id:
            raise ValidationException("GrantId is required")
        validate_grant_id(grant_id)
        key = await self.authorizer.resolve_key(key_id)
        async with self._store.write() as tx:
            grant = await tx.access.get_grant(grant_id)
            if grant is None or grant.key_id != key.key_id:
                raise NotFoundException(f"Grant {grant_id} does not exist for key {key.arn}")
            await tx.access.delete_grant(grant_id)
        self.authorizer.grants_changed()

    # ---- identity policies --------------------------------------------------------------

    def user_arn(self, user_name: str) -> str:
        if not _USER_NAME.fullmatch(user_name):
            raise ValidationException(
                "UserName must be 1 to 64 characters from A-Z, a-z, 0-9 and +=,.@_-"
            )
        return f"arn:meridian:iam::{self.account_id}:user/{user_name}"

    async def put_user_policy(
        self, caller: Caller, user_name: str, policy_name: str, document: str
    ) -> None:
        principal = self.user_arn(user_name)
        _check_policy_name(policy_name)
        parse_identity_policy(document)
        now = self._clock.now()
        async with self._store.write() as tx:
            existing = await tx.access.get_user_policy(principal, policy_name)
            if existing is None and (
                await tx.access.count_user_policies(principal) >= USER_POLICIES_PER_PRINCIPAL_MAX
            ):
                raise LimitExceededException(
                    f"A principal can have at most {USER_POLICIES_PER_PRINCIPAL_MAX} policies"
                )
            await tx.access.put_user_policy(
                UserPolicy(
                    principal_arn=principal,
                    policy_name=policy_name,
                    document=document,
                    created_at=existing.created_at if existing else now,
                    updated_at=now,
                )
            )
        self.authorizer.identity_policies_changed()

    async def get_user_policy(self, caller: Caller, user_name: str, policy_name: str) -> UserPolicy:
        principal = self.user_arn(user_name)
        _check_policy_name(policy_name)
        found = await self._store.reader.get_user_policy(principal, policy_name)
        if found is None:
            raise NotFoundException(
                f"The user policy with name {policy_name} cannot be found for {principal}"
            )
        return found

    async def list_user_policies(
        self, caller: Caller, user_name: str, *, limit: int | None, marker: str
    ) -> Page[str]:
        principal = self.user_arn(user_name)
        page_size = _limit(limit, default=100, maximum=1000, field="MaxItems")
        after = parse_marker("user-policies", marker)
        names = await self._store.reader.list_user_policy_names(
            principal, after_name=after, limit=page_size + 1
        )
        if len(names) > page_size:
            page = names[:page_size]
            return Page(page, make_marker("user-policies", page[-1]), True)
        return Page(names, "", False)

    async def delete_user_policy(self, caller: Caller, user_name: str, policy_name: str) -> None:
        principal = self.user_arn(user_name)
        _check_policy_name(policy_name)
        async with self._store.write() as tx:
            if await tx.access.get_user_policy(principal, policy_name) is None:
                raise NotFoundException(
                    f"The user policy with name {policy_name} cannot be found for {principal}"
                )
            await tx.access.delete_user_policy(principal, policy_name)
        self.authorizer.identity_policies_changed()

    # ---- simulation ---------------------------------------------------------------------

    async def simulate_principal_policy(
        self,
        caller: Caller,
        *,
        policy_source_arn: str,
        action_names: Sequence[str],
        resource_arns: Sequence[str],
        context_entries: Sequence[ContextEntry],
    ) -> list[SimulationResult]:
        """Would ``policy_source_arn`` be allowed each action on each resource, and by
        which statement? The same evaluator as real calls, with this region's policies
        and grants; the context comes from ``context_entries`` instead of a request."""
        validate_principal(policy_source_arn, "PolicySourceArn")
        if not action_names or len(action_names) > SIMULATION_ACTIONS_MAX:
            raise ValidationException(
                f"ActionNames must list 1 to {SIMULATION_ACTIONS_MAX} actions"
            )
        if len(resource_arns) > SIMULATION_RESOURCES_MAX:
            raise ValidationException(f"ResourceArns may list at most {SIMULATION_RESOURCES_MAX}")
        if len(context_entries) > SIMULATION_CONTEXT_ENTRIES_MAX:
            raise ValidationException(
                f"ContextEntries may list at most {SIMULATION_CONTEXT_ENTRIES_MAX} entries"
            )
        actions = [_simulated_action(name) for name in action_names]
        authorizer = self.authorizer
        base = authorizer.base_context(policy_source_arn)
        encryption_context: dict[str, str] = {}
        for entry in context_entries:
            lowered = entry.name.lower()
            if not is_supported_condition_key(lowered):
                raise ValidationException(
                    f"ContextKeyName '{_short(entry.name)}' is not a supported condition key"
                )
            base.set(entry.name, entry.values)
            if lowered.startswith(ENCRYPTION_CONTEXT_PREFIX) and entry.values:
                encryption_context[entry.name[len(ENCRYPTION_CONTEXT_PREFIX) :]] = entry.values[0]
        if encryption_context and base.get("kms:encryptioncontextkeys") is None:
            base.set("kms:EncryptionContextKeys", list(encryption_context))
        identity = await authorizer.identity_policies(policy_source_arn)
        results: list[SimulationResult] = []
        for resource in resource_arns or ["*"]:
            key = await self._simulated_key(resource)
            for action in actions:
                if key is None:
                    decision = authorizer.decide_on_other(
                        principal_arn=policy_source_arn,
                        action=action,
                        resource=resource,
                        context=base,
                        identity=identity,
                    )
                    request = EvaluationRequest(
                        policy_source_arn, action, resource, base, None, identity
                    )
                    results.append(SimulationResult(action, resource, decision, _missing(request)))
                    continue
                context = base.copy()
                authorizer.key_values(context, key)
                decision = await authorizer.decide_on_key(
                    principal_arn=policy_source_arn,
                    action=action,
                    key=key,
                    context=context,
                    identity=identity,
                    encryption_context=encryption_context,
                )
                request = EvaluationRequest(
                    policy_source_arn,
                    action,
                    key.arn,
                    context,
                    authorizer.key_policy(key),
                    identity,
                )
                results.append(SimulationResult(action, key.arn, decision, _missing(request)))
        return results

    async def _simulated_key(self, resource: str) -> Key | None:
        """The key a simulated resource names, None for other resources ("*", an alias
        or principal ARN as the resource itself)."""
        if resource == "*" or resource.startswith("arn:meridian:iam:"):
            return None
        if resource.startswith("arn:") and ":alias/" in resource:
            return None
        return await self.authorizer.resolve_key(resource)


def _missing(request: EvaluationRequest) -> tuple[str, ...]:
    return tuple(missing_context_keys(request))


def _simulated_action(name: str) -> str:
    canonical = canonical_action(name)
    if canonical is None:
        raise ValidationException(f"ActionNames has the unknown action '{_short(name)}'")
    return canonical


def _check_key_policy_name(
    policy_name: str, *, missing: type[ValidationException] | type[NotFoundException]
) -> None:
    if not policy_name or policy_name == KEY_POLICY_NAME:
        return
    if not _KEY_POLICY_NAME.fullmatch(policy_name):
        raise ValidationException("PolicyName must be 1 to 128 word characters")
    raise missing(f"The only key policy name is '{KEY_POLICY_NAME}', not '{policy_name}'")


def _check_policy_name(policy_name: str) -> None:
    if not _POLICY_NAME.fullmatch(policy_name):
        raise ValidationException(
            "PolicyName must be 1 to 128 characters from letters, digits and +=,.@_-"
        )


def _require_not_pending_deletion(key: Key) -> None:
    if key.state in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
        raise KMSInvalidStateException(f"{key.arn} is pending deletion.")


def _grant_limit(limit: int | None) -> int:
    return _limit(
        limit, default=GRANT_LIST_LIMIT_DEFAULT, maximum=GRANT_LIST_LIMIT_MAX, field="Limit"
    )


def _limit(limit: int | None, *, default: int, maximum: int, field: str) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise ValidationException(f"{field} must be between 1 and {maximum}")
    return limit


def _page(grants: list[Grant], page_size: int, list_name: str) -> Page[Grant]:
    if len(grants) > page_size:
        page = grants[:page_size]
        return Page(page, make_marker(list_name, page[-1].grant_id), True)
    return Page(grants, "", False)


def _short(text: str, chars_max: int = 80) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[:chars_max])
    return printable + ("..." if len(text) > chars_max else "")
