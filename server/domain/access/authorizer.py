"""Authorization of one request: resolve what it touches, gather policies, evaluate.

The API layer's hook describes a request as an :class:`AuthorizationRequest` (which
action, which request fields name keys, which condition values the request carries);
this module turns that into one evaluation per resource and answers allow or deny.

Existence is not revealed to those who may not know it: a reference to a key or alias
that does not exist is answered NotFoundException only if the caller's identity
policies would let them describe such a key; anyone else gets the same
AccessDeniedException as for a key that exists.

Costs on the hot path: the key comes from the store's committed-key cache, parsed
policies from an LRU keyed by document, identity policies from a per-principal cache
cleared on every change; grants are read only when no policy allowed the request, and
a key's aliases and tags only when a policy tests them.
"""

from __future__ import annotations

import ipaddress
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from meridian.server.domain import identifiers, validation
from meridian.server.domain.access.actions import grant_operation_for
from meridian.server.domain.access.condition_keys import (
    MULTI_REGION_KEY_TYPE,
    RESOURCE_ALIASES,
    RESOURCE_TAG_PREFIX,
    ConditionContext,
)
from meridian.server.domain.access.evaluator import (
    Decision,
    DecisionKind,
    EvaluationRequest,
    MatchedStatement,
    NamedPolicy,
    SourceType,
    evaluate,
    principal_account,
)
from meridian.server.domain.access.grants import (
    Grant,
    GrantSpec,
    decode_grant_token,
    validate_grant_id,
)
from meridian.server.domain.access.policy import (
    Policy,
    PolicyKind,
    parse_identity_policy,
    parse_policy,
)
from meridian.server.domain.access.ports import AccessStore
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto import blob as blob_recipe
from meridian.server.domain.errors import (
    AccessDeniedException,
    InvalidCiphertextException,
    KmsError,
    MalformedPolicyDocumentException,
    NotFoundException,
    ValidationException,
)
from meridian.server.domain.model import Caller, Key
from meridian.server.domain.ports import KeyStore

log = structlog.get_logger("meridian.access")

POLICY_CACHE_ENTRIES_MAX = 2048
IDENTITY_CACHE_PRINCIPALS_MAX = 4096
GRANT_CACHE_ENTRIES_MAX = 16_384
BOOTSTRAP_POLICY_NAME = "meridian:bootstrap-administrator"
_BOOTSTRAP_DOCUMENT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "BootstrapAdministrator", "Effect": "Allow", "Action": "*", "Resource": "*"}
        ],
    }
)
# Stands in for a stored policy that no longer parses: failing closed means refusing
# everything it might have refused, and allowing nothing it might have allowed.
_DENY_ALL_DOCUMENT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Unreadable", "Effect": "Deny", "Action": "*", "Resource": "*"}],
    }
)
_EMPTY_KEY_POLICY = Policy(
    kind=PolicyKind.KEY,
    version="2012-10-17",
    policy_id="",
    statements=(),
    condition_keys=frozenset(),
    reads_resource=False,
)

ConditionValue = str | Sequence[str] | None


@dataclass(frozen=True, slots=True)
class KeyTarget:
    """A key the request acts on, as the request names it.

    ``reference`` is what the caller wrote (key id, key ARN, alias name or alias ARN);
    when it is empty the key is the one named by ``ciphertext_blob``'s header (Decrypt,
    ReEncrypt); when both are empty the request names no key and only identity
    policies decide (the service then refuses the missing field itself).
    """

    reference: str = ""
    ciphertext_blob: bytes = b""
    action: str | None = None  # overrides the request's action (ReEncryptFrom/To)
    encryption_context: Mapping[str, str] | None = None
    values: Mapping[str, ConditionValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetireTarget:
    """RetireGrant names its grant by token, or by key and grant id."""

    grant_token: str = ""
    key_id: str = ""
    grant_id: str = ""


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    caller: Caller
    action: str
    keys: Sequence[KeyTarget] = ()
    aliases: Sequence[str] = ()  # alias names that are themselves resources
    alias_keys: Sequence[str] = ()  # alias names whose current key is a resource
    principals: Sequence[str] = ()  # principal ARNs that are the resource (iam:)
    values: Mapping[str, ConditionValue] = field(default_factory=dict)
    grant_tokens: Sequence[str] = ()
    retiring: RetireTarget | None = None
    requested_grant: GrantSpec | None = None
    compare_keys: bool = False  # sets kms:ReEncryptOnSameKey from the two keys


@dataclass(frozen=True, slots=True)
class Check:
    action: str
    resource: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class AuthorizationResult:
    principal_arn: str
    checks: tuple[Check, ...]
    key_arns: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return all(check.decision.allowed for check in self.checks)

    @property
    def deciding(self) -> Check:
        """The check that decided: the first refusal, else the first check."""
        for check in self.checks:
            if not check.decision.allowed:
                return check
        return self.checks[0]

    def denial(self) -> AccessDeniedException:
        check = self.deciding
        return AccessDeniedException(
            f"User: {self.principal_arn} is not authorized to perform: {check.action} "
            f"on resource: {check.resource}"
        )


@dataclass(frozen=True, slots=True)
class _Resolved:
    display: str  # the resource as the caller named it, in ARN form
    key: Key | None
    request_alias: str | None
    not_found: KmsError


class _PolicyCache:
    def __init__(self, entries_max: int) -> None:
        self._entries: OrderedDict[tuple[PolicyKind, str], Policy] = OrderedDict()
        self._entries_max = entries_max

    def parse(self, document: str, kind: PolicyKind) -> Policy:
        cache_key = (kind, document)
        policy = self._entries.get(cache_key)
        if policy is not None:
            self._entries.move_to_end(cache_key)
            return policy
        policy = parse_policy(document, kind)
        self._entries[cache_key] = policy
        if len(self._entries) > self._entries_max:
            self._entries.popitem(last=False)
        return policy


class Authorizer:
    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        keys: KeyStore,
        access: AccessStore,
        clock: Clock,
        administrators: Sequence[str] = (),
        describe_multi_region: Callable[[Key], Awaitable[None]] | None = None,
    ) -> None:
        """``describe_multi_region(key)`` fills ``key.multi_region_configuration`` (the
        replication feature's); without it kms:MultiRegionKeyType is absent for keys
        whose configuration is not already known."""
        self.region = region
        self.account_id = account_id
        self._keys = keys
        self._access = access
        self._clock = clock
        self._describe_multi_region = describe_multi_region
        self._administrators = frozenset(
            f"arn:meridian:iam::{account_id}:user/{name}" for name in administrators
        )
        self._policies = _PolicyCache(POLICY_CACHE_ENTRIES_MAX)
        self._bootstrap = NamedPolicy(
            BOOTSTRAP_POLICY_NAME, parse_identity_policy(_BOOTSTRAP_DOCUMENT)
        )
        self._identity: OrderedDict[str, tuple[NamedPolicy, ...]] = OrderedDict()
        self._identity_generation = 0
        # Grants by (key id, key creation time, grantee): the creation time keeps a
        # deleted key's grants (gone with it) from ever answering for a new key.
        self._grants: OrderedDict[tuple[str, datetime, str], tuple[Grant, ...]] = OrderedDict()
        self._grants_generation = 0

    # ---- policies ---------------------------------------------------------------------

    def is_administrator(self, principal_arn: str) -> bool:
        return principal_arn in self._administrators

    def key_policy(self, key: Key) -> Policy:
        try:
            return self._policies.parse(key.policy, PolicyKind.KEY)
        except (MalformedPolicyDocumentException, KmsError):
            log.error("stored key policy does not parse; the key allows nothing", key=key.arn)
            return _EMPTY_KEY_POLICY

    async def identity_policies(self, principal_arn: str) -> tuple[NamedPolicy, ...]:
        cached = self._identity.get(principal_arn)
        if cached is not None:
            self._identity.move_to_end(principal_arn)
            return cached
        generation = self._identity_generation
        policies: list[NamedPolicy] = []
        if principal_arn in self._administrators:
            policies.append(self._bootstrap)
        for stored in await self._access.reader.user_policies(principal_arn):
            try:
                parsed = self._policies.parse(stored.document, PolicyKind.IDENTITY)
            except KmsError:
                log.error(
                    "stored identity policy does not parse; it denies everything",
                    principal=principal_arn,
                    policy=stored.policy_name,
                )
                parsed = self._policies.parse(_DENY_ALL_DOCUMENT, PolicyKind.IDENTITY)
            policies.append(NamedPolicy(stored.policy_name, parsed))
        result = tuple(policies)
        # A change committed while we read must not be hidden by a stale entry.
        if generation == self._identity_generation:
            self._identity[principal_arn] = result
            if len(self._identity) > IDENTITY_CACHE_PRINCIPALS_MAX:
                self._identity.popitem(last=False)
        return result

    def identity_policies_changed(self) -> None:
        """Call after a change to identity policies has committed."""
        self._identity_generation += 1
        self._identity.clear()

    async def grants_for(self, key: Key, principal_arn: str) -> tuple[Grant, ...]:
        cache_key = (key.key_id, key.created_at, principal_arn)
        cached = self._grants.get(cache_key)
        if cached is not None:
            self._grants.move_to_end(cache_key)
            return cached
        generation = self._grants_generation
        grants = tuple(await self._access.reader.grants_for(key.key_id, principal_arn))
        if generation == self._grants_generation:
            self._grants[cache_key] = grants
            if len(self._grants) > GRANT_CACHE_ENTRIES_MAX:
                self._grants.popitem(last=False)
        return grants

    def grants_changed(self) -> None:
        """Call after a grant was created, retired or revoked (once committed)."""
        self._grants_generation += 1
        self._grants.clear()

    # ---- context ----------------------------------------------------------------------

    def base_context(self, principal_arn: str, source_address: str = "") -> ConditionContext:
        context = ConditionContext()
        values = context.values
        values["aws:principalarn"] = values["kms:callerprincipal"] = (principal_arn,)
        account = principal_account(principal_arn)
        if account:
            values["kms:calleraccount"] = values["aws:principalaccount"] = (account,)
        if source_address:
            context.lazy["aws:sourceip"] = lambda: _ip_address(source_address)
        now = self._clock.now()
        context.lazy["aws:currenttime"] = lambda: (now.isoformat(),)
        context.lazy["aws:epochtime"] = lambda: (str(int(now.timestamp())),)
        return context

    def key_values(self, context: ConditionContext, key: Key) -> None:
        values = context.values
        values["kms:keyspec"] = (key.key_spec.value,)
        values["kms:keyusage"] = (key.key_usage.value,)
        values["kms:keyorigin"] = (key.origin.value,)
        values["kms:multiregion"] = ("true" if key.multi_region else "false",)
        configuration = key.multi_region_configuration
        context.set(
            "kms:MultiRegionKeyType",
            configuration.multi_region_key_type if configuration is not None else None,
        )

    async def resource_values(
        self, context: ConditionContext, key: Key, policies: Sequence[Policy]
    ) -> None:
        """kms:ResourceAliases, aws:ResourceTag/*, kms:MultiRegionKeyType: read only if a
        policy tests them."""
        if not any(policy.reads_resource for policy in policies):
            return
        keys = frozenset().union(*(policy.condition_keys for policy in policies))
        reader = self._keys.reader
        if (
            MULTI_REGION_KEY_TYPE in keys
            and key.multi_region
            and key.multi_region_configuration is None
            and self._describe_multi_region is not None
        ):
            await self._describe_multi_region(key)
            self.key_values(context, key)
        if RESOURCE_ALIASES in keys:
            aliases = await reader.list_aliases(
                key_id=key.key_id, after_alias_name=None, limit=validation.ALIASES_PER_KEY_MAX
            )
            context.set("kms:ResourceAliases", [alias.alias_name for alias in aliases])
        if any(name.startswith(RESOURCE_TAG_PREFIX) for name in keys):
            tags = await reader.get_tags(key.key_id)
            context.set_tags(RESOURCE_TAG_PREFIX, {tag.tag_key: tag.tag_value for tag in tags})

    # ---- deciding ---------------------------------------------------------------------

    async def decide_on_key(
        self,
        *,
        principal_arn: str,
        action: str,
        key: Key,
        context: ConditionContext,
        identity: Sequence[NamedPolicy],
        encryption_context: Mapping[str, str] | None = None,
        requested_grant: GrantSpec | None = None,
        grants: Sequence[Grant] | None = None,
    ) -> Decision:
        key_policy = self.key_policy(key)
        await self.resource_values(
            context, key, [key_policy, *(named.policy for named in identity)]
        )
        request = EvaluationRequest(
            principal_arn=principal_arn,
            action=action,
            resource=key.arn,
            context=context,
            key_policy=key_policy,
            identity_policies=identity,
            encryption_context=encryption_context,
            requested_grant=requested_grant,
        )
        decision = evaluate(request)
        if decision.kind is DecisionKind.IMPLICIT_DENY and grant_operation_for(action) is not None:
            if grants is None:
                grants = await self.grants_for(key, principal_arn)
            if grants:
                decision = evaluate(replace(request, grants=tuple(grants)))
        return decision

    def decide_on_other(
        self,
        *,
        principal_arn: str,
        action: str,
        resource: str,
        context: ConditionContext,
        identity: Sequence[NamedPolicy],
    ) -> Decision:
        return evaluate(
            EvaluationRequest(
                principal_arn=principal_arn,
                action=action,
                resource=resource,
                context=context,
                key_policy=None,
                identity_policies=identity,
            )
        )

    async def authorize(self, request: AuthorizationRequest) -> AuthorizationResult:
        """Every check the request needs, stopping at the first refusal.

        Raises KmsError for input that cannot be authorized at all (a malformed key
        reference or grant token), and NotFoundException for a missing key the caller
        may know about; a refusal is returned, not raised, so the caller can record it.
        """
        _check_grant_tokens(request.grant_tokens)
        principal = request.caller.principal_arn
        identity = await self.identity_policies(principal)
        base = self.base_context(principal, request.caller.source_address)
        for name, value in request.values.items():
            base.set(name, value)
        checks: list[Check] = []
        key_arns: list[str] = []

        def refused() -> bool:
            return bool(checks) and not checks[-1].decision.allowed

        resolved = [await self._resolve(target) for target in request.keys]
        same_key = (
            len(resolved) == 2
            and all(r is not None and r.key is not None for r in resolved)
            and resolved[0].key.key_id == resolved[1].key.key_id  # type: ignore[union-attr]
        )
        for target, found in zip(request.keys, resolved, strict=True):
            action = target.action or request.action
            if found is None:
                checks.append(self._other(principal, action, "*", base, identity))
            elif found.key is None:
                if self._may_know(principal, action, found.display, base, identity):
                    raise found.not_found
                checks.append(Check(action, found.display, Decision(DecisionKind.IMPLICIT_DENY)))
            else:
                context = base.copy()
                self.key_values(context, found.key)
                context.set("kms:RequestAlias", found.request_alias)
                context.set_encryption_context(target.encryption_context)
                if request.compare_keys:
                    context.set("kms:ReEncryptOnSameKey", "true" if same_key else "false")
                for name, value in target.values.items():
                    context.set(name, value)
                key_arns.append(found.key.arn)
                decision = await self.decide_on_key(
                    principal_arn=principal,
                    action=action,
                    key=found.key,
                    context=context,
                    identity=identity,
                    encryption_context=target.encryption_context,
                    requested_grant=request.requested_grant,
                )
                checks.append(Check(action, found.display, decision))
            if refused():
                return AuthorizationResult(principal, tuple(checks), tuple(key_arns))
        for alias_name in request.aliases:
            identifiers.validate_alias_name(alias_name)
            resource = identifiers.alias_arn(self.region, self.account_id, alias_name)
            checks.append(self._other(principal, request.action, resource, base, identity))
            if refused():
                return AuthorizationResult(principal, tuple(checks), tuple(key_arns))
        for alias_name in request.alias_keys:
            alias = await self._keys.reader.get_alias(alias_name)
            key = None if alias is None else await self._keys.reader.get_key(alias.target_key_id)
            if key is None:
                continue  # the operation itself answers for a missing alias
            context = base.copy()
            self.key_values(context, key)
            key_arns.append(key.arn)
            decision = await self.decide_on_key(
                principal_arn=principal,
                action=request.action,
                key=key,
                context=context,
                identity=identity,
            )
            checks.append(Check(request.action, key.arn, decision))
            if refused():
                return AuthorizationResult(principal, tuple(checks), tuple(key_arns))
        for resource in request.principals:
            checks.append(self._other(principal, request.action, resource, base, identity))
            if refused():
                return AuthorizationResult(principal, tuple(checks), tuple(key_arns))
        if request.retiring is not None:
            checks.append(await self._retire_check(request, base, identity, key_arns))
        if not checks:
            checks.append(self._other(principal, request.action, "*", base, identity))
        return AuthorizationResult(principal, tuple(checks), tuple(key_arns))

    def _other(
        self,
        principal: str,
        action: str,
        resource: str,
        context: ConditionContext,
        identity: Sequence[NamedPolicy],
    ) -> Check:
        decision = self.decide_on_other(
            principal_arn=principal,
            action=action,
            resource=resource,
            context=context,
            identity=identity,
        )
        return Check(action, resource, decision)

    def _may_know(
        self,
        principal: str,
        action: str,
        resource: str,
        context: ConditionContext,
        identity: Sequence[NamedPolicy],
    ) -> bool:
        """Whether the caller may learn that ``resource`` does not exist: their identity
        policies would let them describe it or perform ``action`` on it (as under the
        default key policy, which delegates to them)."""
        return any(
            self.decide_on_other(
                principal_arn=principal,
                action=candidate,
                resource=resource,
                context=context,
                identity=identity,
            ).allowed
            for candidate in (action, "kms:DescribeKey")
        )

    async def resolve_key(self, reference: str) -> Key:
        """The key ``reference`` names, or the NotFoundException the caller may see."""
        found = await self._resolve(KeyTarget(reference=reference))
        if found is None or found.key is None:
            raise found.not_found if found is not None else ValidationException("KeyId is required")
        return found.key

    async def _resolve(self, target: KeyTarget) -> _Resolved | None:
        reader = self._keys.reader
        if target.reference:
            reference = identifiers.parse_key_reference(
                target.reference, region=self.region, account_id=self.account_id
            )
            if reference.alias_name is not None:
                name = reference.alias_name
                alias = await reader.get_alias(name)
                key = None if alias is None else await reader.get_key(alias.target_key_id)
                return _Resolved(
                    display=identifiers.alias_arn(self.region, self.account_id, name),
                    key=key,
                    request_alias=name,
                    not_found=NotFoundException(f"Alias {name} is not found"),
                )
            assert reference.key_id is not None
            arn = identifiers.key_arn(self.region, self.account_id, reference.key_id)
            return _Resolved(
                display=arn,
                key=await reader.get_key(reference.key_id),
                request_alias=None,
                not_found=NotFoundException(f"Key '{arn}' does not exist"),
            )
        blob = target.ciphertext_blob
        # An oversized blob is left to the operation, which names the limit.
        if not blob or len(blob) > blob_recipe.BLOB_BYTES_MAX:
            return None
        header = blob_recipe.parse_header(blob)
        if not identifiers.is_key_id(header.key_id):
            raise InvalidCiphertextException()
        return _Resolved(
            display=identifiers.key_arn(self.region, self.account_id, header.key_id),
            key=await reader.get_key(header.key_id),
            request_alias=None,
            not_found=InvalidCiphertextException(),
        )

    async def _retire_check(
        self,
        request: AuthorizationRequest,
        base: ConditionContext,
        identity: Sequence[NamedPolicy],
        key_arns: list[str],
    ) -> Check:
        """RetireGrant: the grant's retiring principal, or its grantee when the grant
        allows RetireGrant, may retire it; otherwise a policy must allow kms:RetireGrant."""
        assert request.retiring is not None
        principal = request.caller.principal_arn
        grant = await self.find_grant(request.retiring)
        key = await self._keys.reader.get_key(grant.key_id)
        if key is None:
            raise NotFoundException(f"Grant {grant.grant_id} does not exist")
        key_arns.append(key.arn)
        context = base.copy()
        self.key_values(context, key)
        decision = await self.decide_on_key(
            principal_arn=principal,
            action=request.action,
            key=key,
            context=context,
            identity=identity,
            grants=(),
        )
        # An explicit deny wins even over the grant's own retiring principal.
        if decision.kind is DecisionKind.IMPLICIT_DENY and (
            principal == grant.retiring_principal
            or (principal == grant.grantee_principal and "RetireGrant" in grant.operations)
        ):
            role = "RetiringPrincipal" if principal == grant.retiring_principal else "Grantee"
            matched = MatchedStatement(SourceType.GRANT, grant.grant_id, role)
            decision = Decision(DecisionKind.ALLOWED, (matched,))
        return Check(request.action, key.arn, decision)

    async def find_grant(self, target: RetireTarget) -> Grant:
        if target.grant_token:
            grant_id = decode_grant_token(target.grant_token)
        elif target.key_id and target.grant_id:
            grant_id = target.grant_id
        else:
            raise ValidationException("Specify a GrantToken, or both KeyId and GrantId")
        validate_grant_id(grant_id)
        grant = await self._access.reader.get_grant(grant_id)
        if grant is None:
            raise NotFoundException(f"Grant {grant_id} does not exist")
        if target.key_id:
            key = await self.resolve_key(target.key_id)
            if key.key_id != grant.key_id:
                raise NotFoundException(f"Grant {grant_id} does not exist for key {key.arn}")
        return grant


def _ip_address(text: str) -> tuple[str, ...] | None:
    try:
        return (str(ipaddress.ip_address(text)),)
    except ValueError:
        return None


def _check_grant_tokens(tokens: Sequence[str]) -> None:
    validation.validate_grant_tokens(tokens)
    for token in tokens:
        decode_grant_token(token)
