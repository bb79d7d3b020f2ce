"""The authorization matrix: every operation of KeyManagementService, through the real
gRPC boundary, as a principal who is

- allowed by the key policy,
- allowed by an identity policy the key policy delegates to (the default key policy),
- allowed by a grant (grantable operations),
- allowed by an identity policy the key policy does *not* delegate to (refused),
- explicitly denied although otherwise allowed (refused),
- not mentioned anywhere (refused).

The request of each operation is built from its row in the authorization table (which
fields name keys, aliases, principals), so an operation added later is in the matrix
the day it gets its row. "Allowed" means the call got past authorization: it may still
fail for its own reasons (a missing field, a key of the wrong type), never with
AccessDeniedException; "refused" means exactly AccessDeniedException.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

import conftest
from conftest import ACCOUNT, RunningNode, error_reason, principal_arn, principal_stub
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.access_rules import KMS_RULES, Rule
from meridian.server.domain.access.actions import GRANT_OPERATIONS
from meridian.server.domain.validation import default_key_policy

SERVICE = pb.DESCRIPTOR.services_by_name["KeyManagementService"]
# Batch operations are envelopes whose items are authorized as their single operations
# (which are in the matrix); tests/integration/test_batch_operations.py covers them.
OPERATIONS = [method.name for method in SERVICE.methods if not KMS_RULES[method.name].per_item]
CALLER = "matrix"
OTHER = "carol"
ADMIN_ARN = principal_arn("admin")
ROOT = f"arn:meridian:iam::{ACCOUNT}:root"

KEY_POLICY = "key policy"
DELEGATED = "delegated identity policy"
GRANT = "grant"
NOT_DELEGATED = "identity policy without delegation"
EXPLICIT_DENY = "explicit deny"
NOTHING = "nothing"
ALLOWING = {KEY_POLICY, DELEGATED, GRANT}


def actions_of(rule: Rule) -> list[str]:
    keyed = [key.action for key in rule.keys if key.action]
    return keyed or [rule.action]


def names_keys(rule: Rule) -> bool:
    return bool(rule.keys or rule.alias_key or rule.retire)


def grantable(rule: Rule) -> bool:
    return not rule.alias and all(
        action.removeprefix("kms:") in GRANT_OPERATIONS for action in actions_of(rule)
    )


def scenarios(rule: Rule) -> list[str]:
    if not names_keys(rule):
        return [DELEGATED, EXPLICIT_DENY, NOTHING]
    chosen = [KEY_POLICY, DELEGATED, NOT_DELEGATED, EXPLICIT_DENY, NOTHING]
    if grantable(rule) or rule.retire:
        chosen.append(GRANT)
    return chosen


def statement(effect: str, principal: str, actions: list[str], sid: str) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": effect,
        "Principal": {"AWS": principal},
        "Action": actions,
        "Resource": "*",
    }


@dataclass
class Setup:
    node: RunningNode
    caller: Any
    keys: list[pb.KeyMetadata] = field(default_factory=list)
    counter: int = 0

    @property
    def admin(self) -> Any:
        return self.node.stub

    async def new_key(self) -> pb.KeyMetadata:
        key = (await self.admin.CreateKey(pb.CreateKeyRequest())).key_metadata
        self.keys.append(key)
        return key

    async def key_policy(self, key: pb.KeyMetadata, *statements: dict[str, Any]) -> None:
        document = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
        await self.admin.PutKeyPolicy(pb.PutKeyPolicyRequest(key_id=key.key_id, policy=document))

    async def identity(self, *statements: dict[str, Any]) -> None:
        document = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
        await self.admin.PutUserPolicy(
            pb.PutUserPolicyRequest(
                user_name=CALLER, policy_name="matrix", policy_document=document
            )
        )

    async def forget_identity(self) -> None:
        try:
            await self.admin.DeleteUserPolicy(
                pb.DeleteUserPolicyRequest(user_name=CALLER, policy_name="matrix")
            )
        except grpc.aio.AioRpcError as error:
            assert error_reason(error) == "NotFoundException", error

    async def build(self, operation: str, rule: Rule) -> tuple[Any, list[pb.KeyMetadata]]:
        """The request, and the keys whose policies decide it."""
        request = getattr(pb, f"{operation}Request")()
        self.counter += 1
        deciding: list[pb.KeyMetadata] = []
        for key_field in rule.keys:
            key = await self.new_key()
            deciding.append(key)
            if key_field.blob and operation in ("Decrypt", "ReEncrypt"):
                # Leave the key id out: the key is the one in the blob's header.
                sealed = await self.admin.Encrypt(
                    pb.EncryptRequest(key_id=key.key_id, plaintext=b"m")
                )
                setattr(request, key_field.blob, sealed.ciphertext_blob)
            else:
                setattr(request, key_field.name, key.arn)
        if rule.alias:
            name = f"alias/matrix-{self.counter}"
            request.alias_name = name
            if rule.alias_key:
                old = await self.new_key()
                deciding.append(old)
                await self.admin.CreateAlias(
                    pb.CreateAliasRequest(alias_name=name, target_key_id=old.key_id)
                )
        if rule.user:
            setattr(request, rule.user, OTHER)
        if rule.principal:
            setattr(request, rule.principal, principal_arn(OTHER))
        if rule.create_grant:
            request.grantee_principal = principal_arn(OTHER)
            request.operations.append("Decrypt")
        if rule.retire:
            key = await self.new_key()
            deciding.append(key)
            request.key_id = key.arn
        if operation == "PutKeyPolicy":
            request.policy = default_key_policy(ACCOUNT)
        return request, deciding

    async def grant_for(self, rule: Rule, keys: list[pb.KeyMetadata], request: Any) -> None:
        if rule.retire:
            created = await self.admin.CreateGrant(
                pb.CreateGrantRequest(
                    key_id=keys[0].key_id,
                    grantee_principal=principal_arn(OTHER),
                    retiring_principal=principal_arn(CALLER),
                    operations=["Decrypt"],
                )
            )
            request.grant_id = created.grant_id
            return
        operations = [action.removeprefix("kms:") for action in actions_of(rule)]
        if rule.create_grant:
            # A grant can only make grants within itself (the request asks for Decrypt).
            operations.append("Decrypt")
        for key in keys:
            await self.admin.CreateGrant(
                pb.CreateGrantRequest(
                    key_id=key.key_id,
                    grantee_principal=principal_arn(CALLER),
                    operations=operations,
                )
            )

    async def prepare(self, operation: str, rule: Rule, scenario: str) -> Any:
        await self.forget_identity()
        request, keys = await self.build(operation, rule)
        actions = actions_of(rule)
        admin_statement = statement("Allow", ADMIN_ARN, ["kms:*"], "Admin")
        caller = principal_arn(CALLER)
        if rule.retire and scenario != GRANT:
            # A grant to someone else, for the caller to retire (or not).
            created = await self.admin.CreateGrant(
                pb.CreateGrantRequest(
                    key_id=keys[0].key_id,
                    grantee_principal=principal_arn(OTHER),
                    operations=["Decrypt"],
                )
            )
            request.grant_id = created.grant_id
        if scenario == KEY_POLICY:
            for key in keys:
                await self.key_policy(
                    key, admin_statement, statement("Allow", caller, actions, "Caller")
                )
            if rule.alias:  # the alias itself is a resource of identity policies
                await self.identity(
                    {"Effect": "Allow", "Action": actions, "Resource": "arn:*:kms:*:*:alias/*"}
                )
        elif scenario == DELEGATED:
            await self.identity({"Effect": "Allow", "Action": actions, "Resource": "*"})
        elif scenario == NOT_DELEGATED:
            for key in keys:
                await self.key_policy(key, admin_statement)
            await self.identity({"Effect": "Allow", "Action": actions, "Resource": "*"})
        elif scenario == EXPLICIT_DENY:
            await self.identity({"Effect": "Allow", "Action": actions, "Resource": "*"})
            deny = statement("Deny", caller, actions, "DenyCaller")
            for key in keys:
                await self.key_policy(key, statement("Allow", ROOT, ["kms:*"], "Root"), deny)
            if not keys:
                await self.identity(
                    {"Effect": "Allow", "Action": actions, "Resource": "*"},
                    {"Effect": "Deny", "Action": actions, "Resource": "*"},
                )
        elif scenario == GRANT:
            await self.grant_for(rule, keys, request)
        return request


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_authorization_matrix(
    operation: str, running_node: RunningNode, test_pki: conftest.TestPki
) -> None:
    rule = KMS_RULES[operation]
    channel, caller = principal_stub(test_pki, running_node, CALLER)
    setup = Setup(running_node, caller)
    try:
        for scenario in scenarios(rule):
            request = await setup.prepare(operation, rule, scenario)
            outcome = "allowed"
            try:
                await getattr(caller, operation)(request)
            except grpc.aio.AioRpcError as error:
                assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
                if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                    assert error_reason(error) == "AccessDeniedException"
                    assert principal_arn(CALLER) in (error.details() or "")
                    outcome = "refused"
            expected = "allowed" if scenario in ALLOWING else "refused"
            assert outcome == expected, f"{operation} with {scenario}: {outcome}"
    finally:
        await channel.close()
