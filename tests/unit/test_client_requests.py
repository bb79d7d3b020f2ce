"""Every SDK method sends the right request: fields, maps, lists and proto3 presence.

One table drives both twins, so KmsClient and AsyncKmsClient are held to the
same wire behaviour.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from client_batch_calls import BATCH_CALLS
from client_key_type_calls import KEY_TYPE_CALLS, KEY_TYPE_PRESENCE
from client_usage_calls import USAGE_CALLS
from test_client_support import FakeCluster, async_cluster, sync_cluster

from meridian.client import AsyncKmsClient, KmsClient, ServiceUnavailableError, Tag
from meridian.proto.kms.v1 import kms_pb2 as pb

HOME = "us-east-1"
CONTEXT = {"purpose": "test", "tenant": "t1"}

# (method, keyword arguments, RPC, the request the server must receive)
CALLS: list[tuple[str, dict[str, Any], str, Any]] = [
    (
        "create_key",
        {
            "policy": "{}",
            "description": "orders",
            "key_usage": "ENCRYPT_DECRYPT",
            "customer_master_key_spec": "SYMMETRIC_DEFAULT",
            "key_spec": "SYMMETRIC_DEFAULT",
            "origin": "AWS_KMS",
            "bypass_policy_lockout_safety_check": True,
            "tags": [Tag("team", "payments"), Tag("env", "dev")],
            "multi_region": True,
        },
        "CreateKey",
        pb.CreateKeyRequest(
            policy="{}",
            description="orders",
            key_usage="ENCRYPT_DECRYPT",
            customer_master_key_spec="SYMMETRIC_DEFAULT",
            key_spec="SYMMETRIC_DEFAULT",
            origin="AWS_KMS",
            bypass_policy_lockout_safety_check=True,
            tags=[
                pb.Tag(tag_key="team", tag_value="payments"),
                pb.Tag(tag_key="env", tag_value="dev"),
            ],
            multi_region=True,
        ),
    ),
    (
        "describe_key",
        {"key_id": "alias/orders", "grant_tokens": ["g1", "g2"]},
        "DescribeKey",
        pb.DescribeKeyRequest(key_id="alias/orders", grant_tokens=["g1", "g2"]),
    ),
    (
        "list_keys",
        {"limit": 5, "marker": "m1"},
        "ListKeys",
        pb.ListKeysRequest(limit=5, marker="m1"),
    ),
    (
        "update_key_description",
        {"key_id": "k1", "description": "new"},
        "UpdateKeyDescription",
        pb.UpdateKeyDescriptionRequest(key_id="k1", description="new"),
    ),
    ("enable_key", {"key_id": "k1"}, "EnableKey", pb.EnableKeyRequest(key_id="k1")),
    ("disable_key", {"key_id": "k1"}, "DisableKey", pb.DisableKeyRequest(key_id="k1")),
    (
        "schedule_key_deletion",
        {"key_id": "k1", "pending_window_in_days": 7},
        "ScheduleKeyDeletion",
        pb.ScheduleKeyDeletionRequest(key_id="k1", pending_window_in_days=7),
    ),
    (
        "cancel_key_deletion",
        {"key_id": "k1"},
        "CancelKeyDeletion",
        pb.CancelKeyDeletionRequest(key_id="k1"),
    ),
    (
        "encrypt",
        {
            "key_id": "k1",
            "plaintext": b"\x00secret\xff",
            "encryption_context": CONTEXT,
            "grant_tokens": ["g"],
            "encryption_algorithm": "SYMMETRIC_DEFAULT",
        },
        "Encrypt",
        pb.EncryptRequest(
            key_id="k1",
            plaintext=b"\x00secret\xff",
            encryption_context=CONTEXT,
            grant_tokens=["g"],
            encryption_algorithm="SYMMETRIC_DEFAULT",
        ),
    ),
    (
        "decrypt",
        {
            "ciphertext_blob": b"blob",
            "encryption_context": CONTEXT,
            "grant_tokens": ["g"],
            "key_id": "k1",
            "encryption_algorithm": "SYMMETRIC_DEFAULT",
        },
        "Decrypt",
        pb.DecryptRequest(
            ciphertext_blob=b"blob",
            encryption_context=CONTEXT,
            grant_tokens=["g"],
            key_id="k1",
            encryption_algorithm="SYMMETRIC_DEFAULT",
        ),
    ),
    (
        "re_encrypt",
        {
            "ciphertext_blob": b"blob",
            "destination_key_id": "k2",
            "source_encryption_context": {"a": "1"},
            "source_key_id": "k1",
            "destination_encryption_context": {"b": "2"},
            "source_encryption_algorithm": "SYMMETRIC_DEFAULT",
            "destination_encryption_algorithm": "SYMMETRIC_DEFAULT",
            "grant_tokens": ["g"],
        },
        "ReEncrypt",
        pb.ReEncryptRequest(
            ciphertext_blob=b"blob",
            destination_key_id="k2",
            source_encryption_context={"a": "1"},
            source_key_id="k1",
            destination_encryption_context={"b": "2"},
            source_encryption_algorithm="SYMMETRIC_DEFAULT",
            destination_encryption_algorithm="SYMMETRIC_DEFAULT",
            grant_tokens=["g"],
        ),
    ),
    (
        "generate_data_key",
        {
            "key_id": "k1",
            "encryption_context": CONTEXT,
            "number_of_bytes": 64,
            "key_spec": None,
            "grant_tokens": ["g"],
        },
        "GenerateDataKey",
        pb.GenerateDataKeyRequest(
            key_id="k1", encryption_context=CONTEXT, number_of_bytes=64, grant_tokens=["g"]
        ),
    ),
    (
        "generate_data_key_without_plaintext",
        {"key_id": "k1", "encryption_context": CONTEXT, "key_spec": "AES_128"},
        "GenerateDataKeyWithoutPlaintext",
        pb.GenerateDataKeyWithoutPlaintextRequest(
            key_id="k1", encryption_context=CONTEXT, key_spec="AES_128"
        ),
    ),
    (
        "generate_random",
        {"number_of_bytes": 16},
        "GenerateRandom",
        pb.GenerateRandomRequest(number_of_bytes=16),
    ),
    (
        "create_alias",
        {"alias_name": "alias/a", "target_key_id": "k1"},
        "CreateAlias",
        pb.CreateAliasRequest(alias_name="alias/a", target_key_id="k1"),
    ),
    (
        "update_alias",
        {"alias_name": "alias/a", "target_key_id": "k2"},
        "UpdateAlias",
        pb.UpdateAliasRequest(alias_name="alias/a", target_key_id="k2"),
    ),
    (
        "delete_alias",
        {"alias_name": "alias/a"},
        "DeleteAlias",
        pb.DeleteAliasRequest(alias_name="alias/a"),
    ),
    (
        "list_aliases",
        {"key_id": "k1", "limit": 10, "marker": "m"},
        "ListAliases",
        pb.ListAliasesRequest(key_id="k1", limit=10, marker="m"),
    ),
    (
        "tag_resource",
        {"key_id": "k1", "tags": {"team": "payments"}},
        "TagResource",
        pb.TagResourceRequest(key_id="k1", tags=[pb.Tag(tag_key="team", tag_value="payments")]),
    ),
    (
        "untag_resource",
        {"key_id": "k1", "tag_keys": ("team", "env")},
        "UntagResource",
        pb.UntagResourceRequest(key_id="k1", tag_keys=["team", "env"]),
    ),
    (
        "list_resource_tags",
        {"key_id": "k1", "limit": 3},
        "ListResourceTags",
        pb.ListResourceTagsRequest(key_id="k1", limit=3),
    ),
    # ---- access control ----
    (
        "put_key_policy",
        {"key_id": "k1", "policy": "{}", "bypass_policy_lockout_safety_check": True},
        "PutKeyPolicy",
        pb.PutKeyPolicyRequest(key_id="k1", policy="{}", bypass_policy_lockout_safety_check=True),
    ),
    (
        "get_key_policy",
        {"key_id": "k1", "policy_name": "default"},
        "GetKeyPolicy",
        pb.GetKeyPolicyRequest(key_id="k1", policy_name="default"),
    ),
    (
        "list_key_policies",
        {"key_id": "k1", "limit": 5},
        "ListKeyPolicies",
        pb.ListKeyPoliciesRequest(key_id="k1", limit=5),
    ),
    (
        "create_grant",
        {
            "key_id": "k1",
            "grantee_principal": "arn:meridian:iam::111122223333:user/bob",
            "operations": ["Decrypt", "Encrypt"],
            "constraints": {"EncryptionContextSubset": CONTEXT},
            "name": "batch",
        },
        "CreateGrant",
        pb.CreateGrantRequest(
            key_id="k1",
            grantee_principal="arn:meridian:iam::111122223333:user/bob",
            operations=["Decrypt", "Encrypt"],
            constraints=pb.GrantConstraints(encryption_context_subset=CONTEXT),
            name="batch",
        ),
    ),
    (
        "list_grants",
        {"key_id": "k1", "grantee_principal": "arn:meridian:iam::111122223333:user/bob"},
        "ListGrants",
        pb.ListGrantsRequest(
            key_id="k1", grantee_principal="arn:meridian:iam::111122223333:user/bob"
        ),
    ),
    (
        "list_retirable_grants",
        {"retiring_principal": "arn:meridian:iam::111122223333:user/ops", "limit": 2},
        "ListRetirableGrants",
        pb.ListRetirableGrantsRequest(
            retiring_principal="arn:meridian:iam::111122223333:user/ops", limit=2
        ),
    ),
    (
        "retire_grant",
        {"grant_token": "token"},
        "RetireGrant",
        pb.RetireGrantRequest(grant_token="token"),
    ),
    (
        "revoke_grant",
        {"key_id": "k1", "grant_id": "g1"},
        "RevokeGrant",
        pb.RevokeGrantRequest(key_id="k1", grant_id="g1"),
    ),
    (
        "put_user_policy",
        {"user_name": "bob", "policy_name": "p", "policy_document": "{}"},
        "PutUserPolicy",
        pb.PutUserPolicyRequest(user_name="bob", policy_name="p", policy_document="{}"),
    ),
    (
        "get_user_policy",
        {"user_name": "bob", "policy_name": "p"},
        "GetUserPolicy",
        pb.GetUserPolicyRequest(user_name="bob", policy_name="p"),
    ),
    (
        "list_user_policies",
        {"user_name": "bob", "max_items": 10},
        "ListUserPolicies",
        pb.ListUserPoliciesRequest(user_name="bob", max_items=10),
    ),
    (
        "delete_user_policy",
        {"user_name": "bob", "policy_name": "p"},
        "DeleteUserPolicy",
        pb.DeleteUserPolicyRequest(user_name="bob", policy_name="p"),
    ),
    (
        "simulate_principal_policy",
        {
            "policy_source_arn": "arn:meridian:iam::111122223333:user/bob",
            "action_names": ["kms:Decrypt"],
            "resource_arns": ["k1"],
            "context_entries": {"kms:EncryptionContext:tenant": "t1"},
        },
        "SimulatePrincipalPolicy",
        pb.SimulatePrincipalPolicyRequest(
            policy_source_arn="arn:meridian:iam::111122223333:user/bob",
            action_names=["kms:Decrypt"],
            resource_arns=["k1"],
            context_entries=[
                pb.ContextEntry(
                    context_key_name="kms:EncryptionContext:tenant",
                    context_key_values=["t1"],
                    context_key_type="string",
                )
            ],
        ),
    ),
]

CALLS += KEY_TYPE_CALLS
CALLS += USAGE_CALLS
CALLS += BATCH_CALLS
# Multi-Region keys (replication/DESIGN.md).
CALLS += [
    (
        "replicate_key",
        {"key_id": "k", "replica_region": "eu-west-1", "description": "d", "tags": {"a": "b"}},
        "ReplicateKey",
        pb.ReplicateKeyRequest(
            key_id="k",
            replica_region="eu-west-1",
            description="d",
            tags=[pb.Tag(tag_key="a", tag_value="b")],
        ),
    ),
    (
        "update_primary_region",
        {"key_id": "k", "primary_region": "eu-west-1"},
        "UpdatePrimaryRegion",
        pb.UpdatePrimaryRegionRequest(key_id="k", primary_region="eu-west-1"),
    ),
]

# Optional proto3 fields: absent when the argument is omitted, present (even at
# zero/False) when given.
PRESENCE: list[tuple[str, dict[str, Any], str, str, Any]] = [
    ("create_key", {}, "CreateKey", "multi_region", None),
    ("create_key", {"multi_region": False}, "CreateKey", "multi_region", False),
    ("list_keys", {}, "ListKeys", "limit", None),
    ("list_keys", {"limit": 0}, "ListKeys", "limit", 0),
    (
        "schedule_key_deletion",
        {"key_id": "k"},
        "ScheduleKeyDeletion",
        "pending_window_in_days",
        None,
    ),
    ("generate_data_key", {"key_id": "k"}, "GenerateDataKey", "number_of_bytes", None),
    (
        "generate_data_key",
        {"key_id": "k", "number_of_bytes": 0},
        "GenerateDataKey",
        "number_of_bytes",
        0,
    ),
    ("generate_random", {}, "GenerateRandom", "number_of_bytes", None),
    ("list_aliases", {}, "ListAliases", "limit", None),
    ("list_resource_tags", {"key_id": "k"}, "ListResourceTags", "limit", None),
]
PRESENCE += KEY_TYPE_PRESENCE


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster() as running:
        for kms in running.kms.values():
            kms.record_only = True
        yield running


@pytest.fixture
async def aio_cluster() -> AsyncIterator[FakeCluster]:
    async with async_cluster() as running:
        for kms in running.kms.values():
            kms.record_only = True
        yield running


def test_the_table_covers_every_rpc() -> None:
    service = pb.DESCRIPTOR.services_by_name["KeyManagementService"]
    assert {rpc for _, _, rpc, _ in CALLS} == set(service.methods_by_name)


@pytest.mark.parametrize("twin", [KmsClient, AsyncKmsClient])
def test_public_methods_take_only_keyword_arguments(twin: type[Any]) -> None:
    for method, _, _, _ in CALLS:
        parameters = list(inspect.signature(getattr(twin, method)).parameters.values())[1:]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), method
        assert "timeout_s" in {p.name for p in parameters}, method


def test_twins_have_the_same_signatures() -> None:
    for method, _, _, _ in CALLS:
        sync_parameters = inspect.signature(getattr(KmsClient, method)).parameters
        async_parameters = inspect.signature(getattr(AsyncKmsClient, method)).parameters
        assert list(sync_parameters) == list(async_parameters), method
        assert inspect.iscoroutinefunction(getattr(AsyncKmsClient, method)), method


@pytest.mark.parametrize(
    ("method", "arguments", "rpc", "expected"), CALLS, ids=[c[0] for c in CALLS]
)
def test_sync_request(
    cluster: FakeCluster, method: str, arguments: dict[str, Any], rpc: str, expected: Any
) -> None:
    with cluster.sync_client() as client:
        result = getattr(client, method)(**arguments)
    assert cluster[HOME].last(rpc) == expected
    assert result.region == HOME


@pytest.mark.parametrize(
    ("method", "arguments", "rpc", "expected"), CALLS, ids=[c[0] for c in CALLS]
)
async def test_async_request(
    aio_cluster: FakeCluster, method: str, arguments: dict[str, Any], rpc: str, expected: Any
) -> None:
    async with aio_cluster.async_client() as client:
        result = await getattr(client, method)(**arguments)
    assert aio_cluster[HOME].last(rpc) == expected
    assert result.region == HOME


@pytest.mark.parametrize(
    ("method", "arguments", "rpc", "field", "value"), PRESENCE, ids=lambda v: str(v)
)
def test_optional_field_presence(
    cluster: FakeCluster,
    method: str,
    arguments: dict[str, Any],
    rpc: str,
    field: str,
    value: Any,
) -> None:
    with cluster.sync_client() as client:
        getattr(client, method)(**arguments)
    request = cluster[HOME].last(rpc)
    assert request.HasField(field) is (value is not None)
    if value is not None:
        assert getattr(request, field) == value


def test_omitted_arguments_are_left_unset(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        client.decrypt(ciphertext_blob=b"blob")
    assert cluster[HOME].last("Decrypt") == pb.DecryptRequest(ciphertext_blob=b"blob")


def test_a_lone_string_for_a_list_is_refused(cluster: FakeCluster) -> None:
    # protobuf would silently split "token" into five one-letter grant tokens.
    with cluster.sync_client() as client, pytest.raises(TypeError, match="grant_tokens"):
        client.describe_key(key_id="k", grant_tokens="token")  # type: ignore[arg-type]
    assert cluster.total_requests() == 0


def test_tags_must_be_tag_values_or_a_mapping(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client, pytest.raises(TypeError, match="Tag"):
        client.tag_resource(key_id="k", tags=[("team", "payments")])  # type: ignore[list-item]


def test_per_call_timeout_is_sent_as_the_deadline(cluster: FakeCluster) -> None:
    cluster[HOME].record_only = False
    cluster[HOME].delay_s = 0.3
    with (
        cluster.sync_client(timeout_s=30) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        client.generate_random(number_of_bytes=1, timeout_s=0.05)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
