"""Access control through the real gRPC boundary: key policies and the lockout check,
grants, identity policies, conditions, existence hiding, simulation, audit facts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

import conftest
from conftest import (
    ACCOUNT,
    RunningNode,
    error_reason,
    expect_error,
    node_config,
    principal_arn,
    principal_stub,
)
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.api.interceptor import CallHook, CallInfo
from meridian.server.domain.clock import FakeClock
from meridian.server.node import Node

BOB = principal_arn("bob")
ADMIN = principal_arn("admin")
ROOT = f"arn:meridian:iam::{ACCOUNT}:root"
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "AccessDeniedException")
MALFORMED = (grpc.StatusCode.INVALID_ARGUMENT, "MalformedPolicyDocumentException")


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: str, actions: str | list[str], **extra: Any) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": actions,
        "Resource": "*",
        **extra,
    }


ADMIN_ALL = allow(ADMIN, "kms:*", Sid="Admin")


@pytest.fixture
async def bob(running_node: RunningNode, test_pki: conftest.TestPki) -> AsyncIterator[Any]:
    channel, stub = principal_stub(test_pki, running_node, "bob")
    try:
        yield stub
    finally:
        await channel.close()


async def new_key(node: RunningNode, policy: str = "") -> pb.KeyMetadata:
    response = await node.stub.CreateKey(pb.CreateKeyRequest(policy=policy))
    return response.key_metadata


async def put_policy(node: RunningNode, key: pb.KeyMetadata, *statements: dict[str, Any]) -> None:
    await node.stub.PutKeyPolicy(
        pb.PutKeyPolicyRequest(key_id=key.key_id, policy=document(*statements))
    )


async def attach(
    node: RunningNode, user: str, *statements: dict[str, Any], name: str = "p"
) -> None:
    body = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    await node.stub.PutUserPolicy(
        pb.PutUserPolicyRequest(user_name=user, policy_name=name, policy_document=body)
    )


# ---- key policies ---------------------------------------------------------------------


async def test_key_policy_round_trip(running_node: RunningNode) -> None:
    stub = running_node.stub
    key = await new_key(running_node)
    default = await stub.GetKeyPolicy(pb.GetKeyPolicyRequest(key_id=key.key_id))
    assert default.policy_name == "default"
    assert json.loads(default.policy)["Statement"][0]["Principal"] == {"AWS": ROOT}
    assert list(
        (await stub.ListKeyPolicies(pb.ListKeyPoliciesRequest(key_id=key.arn))).policy_names
    ) == ["default"]
    policy = document(ADMIN_ALL, allow(BOB, "kms:Decrypt", Sid="Bob"))
    await stub.PutKeyPolicy(
        pb.PutKeyPolicyRequest(key_id=key.arn, policy=policy, policy_name="default")
    )
    got = await stub.GetKeyPolicy(pb.GetKeyPolicyRequest(key_id=key.key_id, policy_name="default"))
    assert got.policy == policy  # kept exactly as given
    await expect_error(
        stub.GetKeyPolicy(pb.GetKeyPolicyRequest(key_id=key.key_id, policy_name="other")),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )
    await expect_error(
        stub.PutKeyPolicy(
            pb.PutKeyPolicyRequest(key_id=key.key_id, policy=policy, policy_name="x")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )


async def test_malformed_policies_are_refused_with_precise_messages(
    running_node: RunningNode,
) -> None:
    key = await new_key(running_node)
    bad = document(allow(ADMIN, "kms:Encrpyt"))
    message = await expect_error(
        running_node.stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key_id=key.key_id, policy=bad)),
        *MALFORMED,
    )
    assert message == "Statement[0].Action names the unknown action 'kms:Encrpyt'"
    message = await expect_error(
        running_node.stub.CreateKey(pb.CreateKeyRequest(policy='{"Statement": "x"')), *MALFORMED
    )
    assert "not valid JSON" in message
    too_big = document(allow(ADMIN, "kms:*", Sid="x" * 40_000))
    await expect_error(
        running_node.stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key_id=key.key_id, policy=too_big)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LimitExceededException",
    )


async def test_lockout_safety_check(running_node: RunningNode, bob: Any) -> None:
    stub = running_node.stub
    key = await new_key(running_node)
    lockout = document(allow(BOB, "kms:*"))
    message = await expect_error(
        stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key_id=key.key_id, policy=lockout)), *MALFORMED
    )
    assert (
        message == "The new key policy will not allow you to update the key policy in the future."
    )
    await expect_error(stub.CreateKey(pb.CreateKeyRequest(policy=lockout)), *MALFORMED)
    # Bypassing it is allowed, and then the administrator has really lost the key...
    await stub.PutKeyPolicy(
        pb.PutKeyPolicyRequest(
            key_id=key.key_id, policy=lockout, bypass_policy_lockout_safety_check=True
        )
    )
    await expect_error(stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id)), *DENIED)
    # ...while the principal it names can use and manage it.
    await bob.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
    created = await stub.CreateKey(
        pb.CreateKeyRequest(policy=lockout, bypass_policy_lockout_safety_check=True)
    )
    await bob.DescribeKey(pb.DescribeKeyRequest(key_id=created.key_metadata.key_id))


async def test_a_key_pending_deletion_keeps_its_policy(running_node: RunningNode) -> None:
    key = await new_key(running_node)
    await running_node.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=key.key_id))
    await expect_error(
        running_node.stub.PutKeyPolicy(
            pb.PutKeyPolicyRequest(key_id=key.key_id, policy=document(ADMIN_ALL))
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )
    await running_node.stub.GetKeyPolicy(pb.GetKeyPolicyRequest(key_id=key.key_id))


# ---- identity policies and delegation -------------------------------------------------


async def test_identity_policies_count_where_the_key_policy_delegates(
    running_node: RunningNode, bob: Any
) -> None:
    delegating = await new_key(running_node)
    closed = await new_key(running_node)
    await put_policy(running_node, closed, ADMIN_ALL)
    await expect_error(
        bob.Encrypt(pb.EncryptRequest(key_id=delegating.key_id, plaintext=b"x")), *DENIED
    )
    await attach(running_node, "bob", {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"})
    await bob.Encrypt(pb.EncryptRequest(key_id=delegating.key_id, plaintext=b"x"))
    await expect_error(
        bob.Encrypt(pb.EncryptRequest(key_id=closed.key_id, plaintext=b"x")), *DENIED
    )
    # Identity policies also decide the operations that name no key.
    await expect_error(bob.CreateKey(pb.CreateKeyRequest()), *DENIED)
    await attach(
        running_node,
        "bob",
        {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*"},
        name="q",
    )
    await bob.CreateKey(pb.CreateKeyRequest())


async def test_identity_policy_management(running_node: RunningNode, bob: Any) -> None:
    stub = running_node.stub
    await attach(running_node, "bob", {"Effect": "Allow", "Action": "kms:List*", "Resource": "*"})
    got = await stub.GetUserPolicy(pb.GetUserPolicyRequest(user_name="bob", policy_name="p"))
    assert json.loads(got.policy_document)["Statement"][0]["Action"] == "kms:List*"
    listed = await stub.ListUserPolicies(pb.ListUserPoliciesRequest(user_name="bob"))
    assert list(listed.policy_names) == ["p"] and not listed.is_truncated
    await bob.ListKeys(pb.ListKeysRequest())
    # Only those allowed iam: actions manage identity policies: not bob himself.
    await expect_error(
        bob.PutUserPolicy(
            pb.PutUserPolicyRequest(user_name="bob", policy_name="x", policy_document="{}")
        ),
        *DENIED,
    )
    await stub.DeleteUserPolicy(pb.DeleteUserPolicyRequest(user_name="bob", policy_name="p"))
    await expect_error(bob.ListKeys(pb.ListKeysRequest()), *DENIED)
    await expect_error(
        stub.DeleteUserPolicy(pb.DeleteUserPolicyRequest(user_name="bob", policy_name="p")),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )
    message = await expect_error(
        stub.PutUserPolicy(
            pb.PutUserPolicyRequest(
                user_name="bob", policy_name="p", policy_document=document(ADMIN_ALL)
            )
        ),
        *MALFORMED,
    )
    assert "must not name a Principal" in message
    await expect_error(
        stub.PutUserPolicy(
            pb.PutUserPolicyRequest(user_name="no/slash", policy_name="p", policy_document="{}")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )
    for index in range(10):
        await attach(
            running_node,
            "many",
            {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"},
            name=f"p{index}",
        )
    await expect_error(
        stub.PutUserPolicy(
            pb.PutUserPolicyRequest(
                user_name="many", policy_name="p10", policy_document=document_identity()
            )
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LimitExceededException",
    )


def document_identity() -> str:
    return json.dumps({"Statement": {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}})


# ---- explicit deny, and what a refusal reveals ----------------------------------------


async def test_an_admin_who_cannot_decrypt(running_node: RunningNode) -> None:
    key = await new_key(running_node)
    no_decrypt = {
        "Sid": "NoDecryptForAdmin",
        "Effect": "Deny",
        "Principal": {"AWS": ADMIN},
        "Action": ["kms:Decrypt", "kms:ReEncrypt*"],
        "Resource": "*",
    }
    await put_policy(running_node, key, ADMIN_ALL, no_decrypt)
    sealed = await running_node.stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
    await expect_error(
        running_node.stub.Decrypt(pb.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob)),
        *DENIED,
    )
    # The administrator still manages the key, so the deny can be lifted.
    await put_policy(running_node, key, ADMIN_ALL)
    await running_node.stub.Decrypt(pb.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob))


async def test_refusals_do_not_reveal_whether_a_key_exists(
    running_node: RunningNode, bob: Any
) -> None:
    key = await new_key(running_node)
    missing = "11111111-2222-4333-8444-555555555555"
    for reference in (key.key_id, missing, "alias/nothing-here"):
        message = await expect_error(
            bob.DescribeKey(pb.DescribeKeyRequest(key_id=reference)), *DENIED
        )
        assert message.startswith(
            f"User: {BOB} is not authorized to perform: kms:DescribeKey on resource: arn:"
        )
    # Whoever may describe keys learns that one does not exist.
    await expect_error(
        running_node.stub.DescribeKey(pb.DescribeKeyRequest(key_id=missing)),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )
    await attach(
        running_node, "bob", {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}
    )
    await expect_error(
        bob.DescribeKey(pb.DescribeKeyRequest(key_id="alias/nothing-here")),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )


async def test_decrypt_is_authorized_on_the_key_in_the_blob(
    running_node: RunningNode, bob: Any
) -> None:
    mine = await new_key(running_node)
    theirs = await new_key(running_node)
    await put_policy(running_node, mine, ADMIN_ALL, allow(BOB, "kms:Decrypt"))
    sealed_mine = await running_node.stub.Encrypt(
        pb.EncryptRequest(key_id=mine.key_id, plaintext=b"m")
    )
    sealed_theirs = await running_node.stub.Encrypt(
        pb.EncryptRequest(key_id=theirs.key_id, plaintext=b"t")
    )
    assert (
        await bob.Decrypt(pb.DecryptRequest(ciphertext_blob=sealed_mine.ciphertext_blob))
    ).plaintext == b"m"
    await expect_error(
        bob.Decrypt(pb.DecryptRequest(ciphertext_blob=sealed_theirs.ciphertext_blob)), *DENIED
    )
    # Naming an allowed key does not help with another key's blob.
    await expect_error(
        bob.Decrypt(
            pb.DecryptRequest(ciphertext_blob=sealed_theirs.ciphertext_blob, key_id=mine.key_id)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "IncorrectKeyException",
    )


# ---- conditions through real requests --------------------------------------------------


async def test_an_application_key_readable_only_with_the_tenants_context(
    running_node: RunningNode, bob: Any
) -> None:
    key = await new_key(running_node)
    tenant_only = allow(
        BOB,
        ["kms:Encrypt", "kms:Decrypt"],
        Sid="TenantAcme",
        Condition={
            "StringEquals": {"kms:EncryptionContext:tenant": "acme"},
            "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant", "purpose"]},
        },
    )
    await put_policy(running_node, key, ADMIN_ALL, tenant_only)
    sealed = await bob.Encrypt(
        pb.EncryptRequest(key_id=key.key_id, plaintext=b"x", encryption_context={"tenant": "acme"})
    )
    await bob.Decrypt(
        pb.DecryptRequest(
            ciphertext_blob=sealed.ciphertext_blob, encryption_context={"tenant": "acme"}
        )
    )
    for context in ({}, {"tenant": "other"}, {"tenant": "acme", "extra": "1"}):
        await expect_error(
            bob.Encrypt(
                pb.EncryptRequest(key_id=key.key_id, plaintext=b"x", encryption_context=context)
            ),
            *DENIED,
        )


async def test_source_ip_time_caller_and_alias_conditions(
    running_node: RunningNode, bob: Any
) -> None:
    key = await new_key(running_node)
    await running_node.stub.CreateAlias(
        pb.CreateAliasRequest(alias_name="alias/app", target_key_id=key.key_id)
    )

    async def allowed_with(condition: dict[str, Any], *, key_id: str = key.key_id) -> bool:
        await put_policy(
            running_node, key, ADMIN_ALL, allow(BOB, "kms:Encrypt", Condition=condition)
        )
        try:
            await bob.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"))
        except grpc.aio.AioRpcError as error:
            assert error_reason(error) == "AccessDeniedException"
            return False
        return True

    assert await allowed_with({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}})
    assert not await allowed_with({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})
    assert await allowed_with({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}})
    # The node's clock (a FakeClock here) is aws:CurrentTime.
    assert await allowed_with({"DateLessThan": {"aws:CurrentTime": "2026-01-02T00:00:00Z"}})
    running_node.clock.advance(timedelta(days=2))
    assert not await allowed_with({"DateLessThan": {"aws:CurrentTime": "2026-01-02T00:00:00Z"}})
    assert await allowed_with({"StringEquals": {"kms:CallerPrincipal": BOB}})
    assert await allowed_with(
        {"ArnLike": {"aws:PrincipalArn": f"arn:meridian:iam::{ACCOUNT}:user/b*"}}
    )
    assert not await allowed_with({"StringEquals": {"kms:CallerAccount": "999999999999"}})
    assert await allowed_with(
        {"StringEquals": {"kms:RequestAlias": "alias/app"}}, key_id="alias/app"
    )
    assert not await allowed_with({"StringEquals": {"kms:RequestAlias": "alias/app"}})
    assert await allowed_with({"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/app"}})
    assert await allowed_with(
        {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT", "kms:KeyUsage": "ENCRYPT_DECRYPT"}}
    )
    assert await allowed_with({"Bool": {"kms:MultiRegion": "false"}})
    assert await allowed_with({"StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}})
    assert await allowed_with({"Null": {"kms:MultiRegionKeyType": "true"}})


async def test_tag_conditions(running_node: RunningNode, bob: Any) -> None:
    key = (
        await running_node.stub.CreateKey(
            pb.CreateKeyRequest(tags=[pb.Tag(tag_key="team", tag_value="pay")])
        )
    ).key_metadata
    await put_policy(
        running_node,
        key,
        ADMIN_ALL,
        allow(BOB, "kms:Encrypt", Condition={"StringEquals": {"aws:ResourceTag/team": "pay"}}),
        allow(
            BOB,
            "kms:TagResource",
            Condition={
                "StringEquals": {"aws:RequestTag/env": "dev"},
                "ForAllValues:StringEquals": {"aws:TagKeys": ["env"]},
            },
        ),
    )
    await bob.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
    await bob.TagResource(
        pb.TagResourceRequest(key_id=key.key_id, tags=[pb.Tag(tag_key="env", tag_value="dev")])
    )
    await expect_error(
        bob.TagResource(
            pb.TagResourceRequest(key_id=key.key_id, tags=[pb.Tag(tag_key="team", tag_value="x")])
        ),
        *DENIED,
    )
    await running_node.stub.TagResource(
        pb.TagResourceRequest(key_id=key.key_id, tags=[pb.Tag(tag_key="team", tag_value="ops")])
    )
    await expect_error(bob.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x")), *DENIED)


async def test_deletion_window_and_reencrypt_conditions(
    running_node: RunningNode, bob: Any
) -> None:
    key = await new_key(running_node)
    other = await new_key(running_node)
    long_windows_only = allow(
        BOB,
        "kms:ScheduleKeyDeletion",
        Condition={"NumericGreaterThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": 20}},
    )
    same_key_only = allow(
        BOB, "kms:ReEncrypt*", Condition={"Bool": {"kms:ReEncryptOnSameKey": "true"}}
    )
    for target in (key, other):
        await put_policy(running_node, target, ADMIN_ALL, long_windows_only, same_key_only)
    await expect_error(
        bob.ScheduleKeyDeletion(
            pb.ScheduleKeyDeletionRequest(key_id=other.key_id, pending_window_in_days=7)
        ),
        *DENIED,
    )
    sealed = await running_node.stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
    await bob.ReEncrypt(
        pb.ReEncryptRequest(ciphertext_blob=sealed.ciphertext_blob, destination_key_id=key.key_id)
    )
    await expect_error(
        bob.ReEncrypt(
            pb.ReEncryptRequest(
                ciphertext_blob=sealed.ciphertext_blob, destination_key_id=other.key_id
            )
        ),
        *DENIED,
    )
    await bob.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=other.key_id))  # 30 days


# ---- grants ---------------------------------------------------------------------------


async def test_a_grant_for_a_batch_job(running_node: RunningNode, bob: Any) -> None:
    stub = running_node.stub
    key = await new_key(running_node)
    created = await stub.CreateGrant(
        pb.CreateGrantRequest(
            key_id=key.key_id,
            grantee_principal=BOB,
            retiring_principal=BOB,
            operations=["GenerateDataKey", "Decrypt"],
            constraints=pb.GrantConstraints(encryption_context_subset={"job": "nightly"}),
            name="nightly-batch",
        )
    )
    assert len(created.grant_id) == 64
    context = {"job": "nightly", "run": "42"}
    data_key = await bob.GenerateDataKey(
        pb.GenerateDataKeyRequest(
            key_id=key.key_id,
            key_spec="AES_256",
            encryption_context=context,
            grant_tokens=[created.grant_token],
        )
    )
    await bob.Decrypt(
        pb.DecryptRequest(ciphertext_blob=data_key.ciphertext_blob, encryption_context=context)
    )
    await expect_error(
        bob.GenerateDataKey(pb.GenerateDataKeyRequest(key_id=key.key_id, key_spec="AES_256")),
        *DENIED,
    )
    await expect_error(
        bob.Encrypt(
            pb.EncryptRequest(key_id=key.key_id, plaintext=b"x", encryption_context=context)
        ),
        *DENIED,
    )
    # The same name and terms are the same grant; AWS's idempotency.
    again = await stub.CreateGrant(
        pb.CreateGrantRequest(
            key_id=key.key_id,
            grantee_principal=BOB,
            retiring_principal=BOB,
            operations=["Decrypt", "GenerateDataKey"],
            constraints=pb.GrantConstraints(encryption_context_subset={"job": "nightly"}),
            name="nightly-batch",
        )
    )
    assert again.grant_id == created.grant_id and again.grant_token != created.grant_token
    listed = await stub.ListGrants(pb.ListGrantsRequest(key_id=key.key_id))
    (entry,) = listed.grants
    assert entry.key_id == key.arn and entry.name == "nightly-batch"
    assert list(entry.operations) == ["Decrypt", "GenerateDataKey"]
    assert dict(entry.constraints.encryption_context_subset) == {"job": "nightly"}
    assert entry.issuing_account == ROOT
    retirable = await stub.ListRetirableGrants(
        pb.ListRetirableGrantsRequest(retiring_principal=BOB)
    )
    assert [grant.grant_id for grant in retirable.grants] == [created.grant_id]
    # The retiring principal retires it with its token; it stops working at once.
    await bob.RetireGrant(pb.RetireGrantRequest(grant_token=created.grant_token))
    await expect_error(
        bob.Decrypt(
            pb.DecryptRequest(ciphertext_blob=data_key.ciphertext_blob, encryption_context=context)
        ),
        *DENIED,
    )
    assert not (await stub.ListGrants(pb.ListGrantsRequest(key_id=key.key_id))).grants


async def test_grant_revocation_listing_and_errors(running_node: RunningNode, bob: Any) -> None:
    stub = running_node.stub
    key = await new_key(running_node)
    ids = []
    for index in range(3):
        created = await stub.CreateGrant(
            pb.CreateGrantRequest(
                key_id=key.key_id,
                grantee_principal=principal_arn(f"u{index}"),
                operations=["Encrypt"],
            )
        )
        ids.append(created.grant_id)
    first = await stub.ListGrants(pb.ListGrantsRequest(key_id=key.key_id, limit=2))
    assert first.truncated and len(first.grants) == 2
    rest = await stub.ListGrants(pb.ListGrantsRequest(key_id=key.key_id, marker=first.next_marker))
    assert sorted(g.grant_id for g in [*first.grants, *rest.grants]) == sorted(ids)
    only = await stub.ListGrants(
        pb.ListGrantsRequest(key_id=key.key_id, grantee_principal=principal_arn("u1"))
    )
    assert [g.grant_id for g in only.grants] == [ids[1]]
    await stub.RevokeGrant(pb.RevokeGrantRequest(key_id=key.key_id, grant_id=ids[0]))
    await expect_error(
        stub.RevokeGrant(pb.RevokeGrantRequest(key_id=key.key_id, grant_id=ids[0])),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )
    await expect_error(
        stub.RevokeGrant(pb.RevokeGrantRequest(key_id=key.key_id, grant_id="not-an-id")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidGrantIdException",
    )
    await expect_error(
        stub.Encrypt(
            pb.EncryptRequest(key_id=key.key_id, plaintext=b"x", grant_tokens=["garbage"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidGrantTokenException",
    )
    await expect_error(
        stub.CreateGrant(
            pb.CreateGrantRequest(
                key_id=key.key_id, grantee_principal="bob", operations=["Encrypt"]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )
    await expect_error(
        stub.CreateGrant(
            pb.CreateGrantRequest(key_id=key.key_id, grantee_principal=BOB, operations=["Fly"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )
    # Someone who is neither the retiring principal nor allowed kms:RetireGrant cannot.
    await expect_error(
        bob.RetireGrant(pb.RetireGrantRequest(key_id=key.key_id, grant_id=ids[1])), *DENIED
    )
    # Deleting the key takes its grants with it.
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key.key_id, pending_window_in_days=7)
    )
    running_node.clock.advance(timedelta(days=8))
    # The sweeper (every 0.05 s in tests) deletes it; wait for that, boundedly.
    for _ in range(500):
        if not (await stub.ListKeys(pb.ListKeysRequest())).keys:
            break
        await asyncio.sleep(0.02)
    assert not (await stub.ListKeys(pb.ListKeysRequest())).keys
    await expect_error(
        stub.RevokeGrant(pb.RevokeGrantRequest(key_id=key.key_id, grant_id=ids[2])),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )


async def test_grants_can_make_only_narrower_grants(running_node: RunningNode, bob: Any) -> None:
    key = await new_key(running_node)
    await running_node.stub.CreateGrant(
        pb.CreateGrantRequest(
            key_id=key.key_id, grantee_principal=BOB, operations=["CreateGrant", "Decrypt"]
        )
    )
    await bob.CreateGrant(
        pb.CreateGrantRequest(
            key_id=key.key_id, grantee_principal=principal_arn("worker"), operations=["Decrypt"]
        )
    )
    await expect_error(
        bob.CreateGrant(
            pb.CreateGrantRequest(
                key_id=key.key_id, grantee_principal=principal_arn("worker"), operations=["Encrypt"]
            )
        ),
        *DENIED,
    )


async def test_grant_conditions_in_the_key_policy(running_node: RunningNode, bob: Any) -> None:
    key = await new_key(running_node)
    await put_policy(
        running_node,
        key,
        ADMIN_ALL,
        allow(
            BOB,
            "kms:CreateGrant",
            Condition={
                "ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]},
                "StringLike": {"kms:GranteePrincipal": f"arn:meridian:iam::{ACCOUNT}:user/app-*"},
            },
        ),
    )
    await bob.CreateGrant(
        pb.CreateGrantRequest(
            key_id=key.key_id, grantee_principal=principal_arn("app-1"), operations=["Decrypt"]
        )
    )
    await expect_error(
        bob.CreateGrant(
            pb.CreateGrantRequest(
                key_id=key.key_id, grantee_principal=principal_arn("eve"), operations=["Decrypt"]
            )
        ),
        *DENIED,
    )
    await expect_error(
        bob.CreateGrant(
            pb.CreateGrantRequest(
                key_id=key.key_id,
                grantee_principal=principal_arn("app-1"),
                operations=["Decrypt", "CreateGrant"],
            )
        ),
        *DENIED,
    )


# ---- simulation -----------------------------------------------------------------------


async def test_simulate_principal_policy(running_node: RunningNode) -> None:
    key = await new_key(running_node)
    await put_policy(
        running_node,
        key,
        ADMIN_ALL,
        allow(
            BOB,
            "kms:Decrypt",
            Sid="TenantAcme",
            Condition={"StringEquals": {"kms:EncryptionContext:tenant": "acme"}},
        ),
        {
            "Sid": "NoDelete",
            "Effect": "Deny",
            "Principal": {"AWS": BOB},
            "Action": "kms:ScheduleKeyDeletion",
            "Resource": "*",
        },
    )

    async def simulate(actions: list[str], entries: list[pb.ContextEntry]) -> Any:
        return (
            await running_node.stub.SimulatePrincipalPolicy(
                pb.SimulatePrincipalPolicyRequest(
                    policy_source_arn=BOB,
                    action_names=actions,
                    resource_arns=[key.key_id],
                    context_entries=entries,
                )
            )
        ).evaluation_results

    tenant = pb.ContextEntry(
        context_key_name="kms:EncryptionContext:tenant", context_key_values=["acme"]
    )
    decrypt, delete, encrypt = await simulate(
        ["kms:Decrypt", "kms:ScheduleKeyDeletion", "kms:Encrypt"], [tenant]
    )
    assert (decrypt.eval_decision, decrypt.matched_statements[0].sid) == ("allowed", "TenantAcme")
    assert decrypt.matched_statements[0].source_policy_id == "default"
    assert decrypt.eval_resource_name == key.arn
    assert (delete.eval_decision, delete.matched_statements[0].sid) == ("explicitDeny", "NoDelete")
    assert encrypt.eval_decision == "implicitDeny"
    (without,) = await simulate(["kms:Decrypt"], [])
    assert without.eval_decision == "implicitDeny"
    assert list(without.missing_context_values) == ["kms:encryptioncontext:tenant"]
    await expect_error(
        running_node.stub.SimulatePrincipalPolicy(
            pb.SimulatePrincipalPolicyRequest(policy_source_arn=BOB, action_names=["kms:Fly"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )


# ---- principals from certificates ----------------------------------------------------


async def test_a_node_certificate_used_as_a_client_gets_no_access(
    running_node: RunningNode, test_pki: conftest.TestPki
) -> None:
    from meridian.cli import pki

    cert, key_path = pki.issue_node(test_pki.directory, "eu-west-1", ips=["127.0.0.1"])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=test_pki.ca_cert,
        private_key=key_path.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", f"{conftest.REGION}.node.meridian")]
    async with grpc.aio.secure_channel(
        running_node.endpoint, credentials, options=options
    ) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        message = await expect_error(stub.ListKeys(pb.ListKeysRequest()), *DENIED)
    assert f"arn:meridian:iam::{ACCOUNT}:node/eu-west-1" in message


# ---- what the audit trail learns -------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[CallInfo] = []

    async def before(self, call: CallInfo) -> None:
        return None

    async def after(self, call: CallInfo, response: object, error: object) -> None:
        self.calls.append(call)


class RecordingNode(Node):
    recorder: Recorder

    def _call_hooks(self) -> list[CallHook]:
        self.recorder = Recorder()
        return [*super()._call_hooks(), self.recorder]


async def test_decisions_are_left_for_the_audit_trail(
    test_pki: conftest.TestPki, tmp_path: Any
) -> None:
    node = RecordingNode(config=node_config(test_pki, tmp_path / "data"), clock=FakeClock())
    port = await node.start()
    admin = conftest.secure_channel(test_pki, f"127.0.0.1:{port}")
    bob_channel = conftest.secure_channel(test_pki, f"127.0.0.1:{port}", "bob")
    try:
        stub = kms_pb2_grpc.KeyManagementServiceStub(admin)
        bob_stub = kms_pb2_grpc.KeyManagementServiceStub(bob_channel)
        key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
        grant = await stub.CreateGrant(
            pb.CreateGrantRequest(key_id=key.key_id, grantee_principal=BOB, operations=["Encrypt"])
        )
        await bob_stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
        with pytest.raises(grpc.aio.AioRpcError):
            await bob_stub.Decrypt(pb.DecryptRequest(ciphertext_blob=b"\x01" * 100))
        with pytest.raises(grpc.aio.AioRpcError):
            await bob_stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id))
    finally:
        await admin.close()
        await bob_channel.close()
        await node.stop()
    by_operation = {call.operation: call.facts for call in node.recorder.calls}
    created = by_operation["CreateKey"]["authorization"]
    assert created["decision"] == "allow"
    assert created["matched"] == [
        {
            "source": "identity-policy",
            "policy": "meridian:bootstrap-administrator",
            "sid": "BootstrapAdministrator",
        }
    ]
    encrypted = by_operation["Encrypt"]
    assert encrypted["authorization"]["matched"][0]["source"] == "grant"
    assert encrypted["grant_id"] == grant.grant_id
    assert encrypted["key_arn"] == key.arn
    assert by_operation["Decrypt"]["authorization"]["decision"] == "error"
    described = by_operation["DescribeKey"]["authorization"]
    assert (described["decision"], described["action"], described["resource"]) == (
        "deny",
        "kms:DescribeKey",
        key.arn,
    )
    # Only plain JSON values (no floats): the audit trail stores them as canonical JSON.
    mine = ("authorization", "key_arn", "related_key_arn", "grant_id")
    facts = [{k: v for k, v in call.facts.items() if k in mine} for call in node.recorder.calls]
    json.loads(json.dumps(facts), parse_float=_no_float)


def _no_float(text: str) -> float:
    raise AssertionError(f"a float in the authorization facts: {text}")


def _expired_client_certificate(test_pki: conftest.TestPki) -> tuple[bytes, bytes]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from meridian.cli import pki

    ca_cert, ca_key = pki.load_ca(test_pki.directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "late")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("meridian:principal:late")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


async def test_an_expired_client_certificate_is_refused(
    running_node: RunningNode, test_pki: conftest.TestPki
) -> None:
    cert, key = _expired_client_certificate(test_pki)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=test_pki.ca_cert, private_key=key, certificate_chain=cert
    )
    options = [("grpc.ssl_target_name_override", f"{conftest.REGION}.node.meridian")]
    async with grpc.aio.secure_channel(
        running_node.endpoint, credentials, options=options
    ) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListKeys(pb.ListKeysRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


async def test_a_client_certificate_cannot_serve_as_a_node(
    test_pki: conftest.TestPki, tmp_path: Any
) -> None:
    from dataclasses import replace

    from meridian.cli import pki

    cert, key = pki.issue_client(test_pki.directory, "impostor")
    config = node_config(test_pki, tmp_path / "data")
    config = replace(config, tls=replace(config.tls, cert=cert, key=key))
    node = Node(config=config, clock=FakeClock())
    port = await node.start()
    try:
        channel = conftest.secure_channel(test_pki, f"127.0.0.1:{port}")
        async with channel:
            stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListKeys(pb.ListKeysRequest(), timeout=5)
        # Clients check the node's name (<region>.node.meridian): a client's does not match.
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await node.stop()


async def test_multi_region_conditions(running_node: RunningNode, bob: Any) -> None:
    key = (await running_node.stub.CreateKey(pb.CreateKeyRequest(multi_region=True))).key_metadata

    async def outcome(condition: dict[str, Any], call: Any) -> str:
        await put_policy(
            running_node,
            key,
            ADMIN_ALL,
            allow(BOB, ["kms:Encrypt", "kms:ReplicateKey"], Condition=condition),
        )
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            return "refused" if error_reason(error) == "AccessDeniedException" else "allowed"
        return "allowed"

    def encrypt() -> Any:
        return bob.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))

    def replicate() -> Any:
        return bob.ReplicateKey(
            pb.ReplicateKeyRequest(key_id=key.key_id, replica_region="eu-west-1")
        )

    assert (
        await outcome({"StringEquals": {"kms:MultiRegionKeyType": "PRIMARY"}}, encrypt) == "allowed"
    )
    assert (
        await outcome({"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}}, encrypt) == "refused"
    )
    assert await outcome({"Bool": {"kms:MultiRegion": "true"}}, encrypt) == "allowed"
    # Allowed here means "past authorization": this test node has no peer to replicate to.
    assert (
        await outcome({"StringEquals": {"kms:ReplicaRegion": "eu-west-1"}}, replicate) == "allowed"
    )
    assert (
        await outcome({"StringEquals": {"kms:ReplicaRegion": "ap-south-1"}}, replicate) == "refused"
    )


async def test_the_replication_service_refuses_client_certificates(
    running_node: RunningNode, test_pki: conftest.TestPki
) -> None:
    from meridian.proto.replication.v1 import replication_pb2, replication_pb2_grpc

    stub = replication_pb2_grpc.ReplicationStub(running_node.channel)  # the admin's certificate
    message = await expect_error(stub.Hello(replication_pb2.HelloRequest()), *DENIED)
    assert "only Meridian nodes may call this service" in message
    # A node certificate gets past authorization (the service then judges the request).
    from meridian.cli import pki

    cert, key_path = pki.issue_node(test_pki.directory, "eu-west-1", ips=["127.0.0.1"])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=test_pki.ca_cert,
        private_key=key_path.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", f"{conftest.REGION}.node.meridian")]
    async with grpc.aio.secure_channel(running_node.endpoint, credentials, options=options) as node:
        try:
            await replication_pb2_grpc.ReplicationStub(node).Hello(replication_pb2.HelloRequest())
        except grpc.aio.AioRpcError as error:
            assert error.code() != grpc.StatusCode.PERMISSION_DENIED or (
                "only Meridian nodes" not in (error.details() or "")
            ), error
