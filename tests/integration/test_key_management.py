"""Key lifecycle through the real gRPC stack: AWS semantics, limits and error reasons."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from conftest import ACCOUNT, REGION, expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def create(stub, **fields) -> pb.KeyMetadata:
    return (await stub.CreateKey(pb.CreateKeyRequest(**fields))).key_metadata


async def test_create_key_metadata_follows_aws(running_node) -> None:
    metadata = await create(running_node.stub, description="orders")
    assert metadata.key_state == "Enabled"
    assert metadata.enabled
    assert metadata.key_spec == "SYMMETRIC_DEFAULT"
    assert metadata.customer_master_key_spec == "SYMMETRIC_DEFAULT"
    assert metadata.key_usage == "ENCRYPT_DECRYPT"
    assert metadata.origin == "AWS_KMS"
    assert metadata.key_manager == "CUSTOMER"
    assert list(metadata.encryption_algorithms) == ["SYMMETRIC_DEFAULT"]
    assert metadata.arn == f"arn:meridian:kms:{REGION}:{ACCOUNT}:key/{metadata.key_id}"
    assert metadata.aws_account_id == ACCOUNT
    assert len(metadata.current_key_material_id) == 64
    assert not metadata.multi_region
    assert not metadata.HasField("deletion_date")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        # Specs the cryptography package cannot serve (docs/key-types.md).
        ({"key_spec": "SM2", "key_usage": "SIGN_VERIFY"}, "UnsupportedOperationException"),
        ({"key_spec": "ML_KEM_512"}, "UnsupportedOperationException"),
        ({"key_spec": "NOT_A_SPEC"}, "ValidationException"),
        ({"key_usage": "SIGN_VERIFY"}, "ValidationException"),
        (
            {"key_spec": "SYMMETRIC_DEFAULT", "customer_master_key_spec": "RSA_2048"},
            "ValidationException",
        ),
        ({"origin": "AWS_CLOUDHSM"}, "UnsupportedOperationException"),
        ({"origin": "NOWHERE"}, "ValidationException"),
        # Multi-Region keys are symmetric (AWS_KMS) only for now (replication/DESIGN.md).
        (
            {"multi_region": True, "key_spec": "HMAC_256", "key_usage": "GENERATE_VERIFY_MAC"},
            "UnsupportedOperationException",
        ),
        ({"description": "x" * 8193}, "ValidationException"),
        ({"policy": "not json"}, "MalformedPolicyDocumentException"),
        ({"tags": [pb.Tag(tag_key="aws:reserved", tag_value="v")]}, "TagException"),
        ({"tags": [pb.Tag(tag_key="", tag_value="v")]}, "TagException"),
        (
            {"tags": [pb.Tag(tag_key=f"k{i}", tag_value="v") for i in range(51)]},
            "LimitExceededException",
        ),
    ],
)
async def test_create_key_rejects_bad_input(running_node, fields, reason) -> None:
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if reason == "LimitExceededException" else INVALID
    await expect_error(running_node.stub.CreateKey(pb.CreateKeyRequest(**fields)), code, reason)
    listed = await running_node.stub.ListKeys(pb.ListKeysRequest())
    assert list(listed.keys) == [], "a refused CreateKey must create nothing"


async def test_describe_key_by_id_arn_alias_and_alias_arn(running_node) -> None:
    stub = running_node.stub
    metadata = await create(stub)
    await stub.CreateAlias(
        pb.CreateAliasRequest(alias_name="alias/app", target_key_id=metadata.key_id)
    )
    alias_arn = f"arn:meridian:kms:{REGION}:{ACCOUNT}:alias/app"
    for reference in (metadata.key_id, metadata.arn, "alias/app", alias_arn):
        described = await stub.DescribeKey(pb.DescribeKeyRequest(key_id=reference))
        assert described.key_metadata.key_id == metadata.key_id


@pytest.mark.parametrize(
    ("key_id", "code", "reason"),
    [
        ("", INVALID, "ValidationException"),
        ("x" * 2049, INVALID, "ValidationException"),
        ("not-a-key", NOT_FOUND, "NotFoundException"),
        ("00000000-0000-4000-8000-000000000000", NOT_FOUND, "NotFoundException"),
        ("alias/missing", NOT_FOUND, "NotFoundException"),
        ("alias/bad name", INVALID, "InvalidAliasNameException"),
        (
            "arn:meridian:kms:eu-west-1:111122223333:key/00000000-0000-4000-8000-000000000000",
            NOT_FOUND,
            "NotFoundException",
        ),
        ("arn:aws:kms:us-east-1:111122223333:key/x", INVALID, "InvalidArnException"),
        ("arn:meridian:kms:us-east-1:111122223333:widget/x", INVALID, "InvalidArnException"),
    ],
)
async def test_describe_key_bad_references(running_node, key_id, code, reason) -> None:
    await expect_error(
        running_node.stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id)), code, reason
    )


async def test_list_keys_paginates_without_gaps(running_node) -> None:
    stub = running_node.stub
    created = {(await create(stub)).key_id for _ in range(7)}
    seen: list[str] = []
    marker = ""
    pages = 0
    while True:
        page = await stub.ListKeys(pb.ListKeysRequest(limit=3, marker=marker))
        pages += 1
        seen.extend(entry.key_id for entry in page.keys)
        for entry in page.keys:
            assert entry.key_arn.endswith(entry.key_id)
        if not page.truncated:
            assert page.next_marker == ""
            break
        marker = page.next_marker
    assert pages == 3
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("limit", [0, 1001, -1])
async def test_list_keys_limit_bounds(running_node, limit) -> None:
    await expect_error(
        running_node.stub.ListKeys(pb.ListKeysRequest(limit=limit)), INVALID, "ValidationException"
    )


@pytest.mark.parametrize("marker", ["garbage!", "YWxpYXNlcwp4", "x" * 2000])
async def test_list_keys_bad_marker(running_node, marker) -> None:
    await expect_error(
        running_node.stub.ListKeys(pb.ListKeysRequest(marker=marker)),
        INVALID,
        "InvalidMarkerException",
    )


async def test_enable_disable_and_crypto_refusal(running_node) -> None:
    stub = running_node.stub
    key_id = (await create(stub)).key_id
    await stub.DisableKey(pb.DisableKeyRequest(key_id=key_id))
    described = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))).key_metadata
    assert (described.key_state, described.enabled) == ("Disabled", False)
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x")),
        PRECONDITION,
        "DisabledException",
    )
    await stub.EnableKey(pb.EnableKeyRequest(key_id=key_id))
    await stub.EnableKey(pb.EnableKeyRequest(key_id=key_id))  # idempotent, as in AWS
    await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"))


async def test_update_key_description(running_node) -> None:
    stub = running_node.stub
    key_id = (await create(stub, description="old")).key_id
    await stub.UpdateKeyDescription(
        pb.UpdateKeyDescriptionRequest(key_id=key_id, description="new")
    )
    described = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))).key_metadata
    assert described.description == "new"
    await expect_error(
        stub.UpdateKeyDescription(
            pb.UpdateKeyDescriptionRequest(key_id=key_id, description="d" * 8193)
        ),
        INVALID,
        "ValidationException",
    )


@pytest.mark.parametrize("days", [6, 31, 0, 365])
async def test_schedule_deletion_window_bounds(running_node, days) -> None:
    key_id = (await create(running_node.stub)).key_id
    await expect_error(
        running_node.stub.ScheduleKeyDeletion(
            pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=days)
        ),
        INVALID,
        "ValidationException",
    )
    described = (
        await running_node.stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))
    ).key_metadata
    assert described.key_state == "Enabled"


async def test_schedule_and_cancel_deletion(running_node) -> None:
    stub = running_node.stub
    key = await create(stub)
    scheduled = await stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=key.key_id))
    assert scheduled.pending_window_in_days == 30, "AWS's default window is 30 days"
    assert scheduled.key_state == "PendingDeletion"
    assert scheduled.key_id == key.arn
    expected = running_node.clock.now() + timedelta(days=30)
    assert scheduled.deletion_date.ToDatetime().replace(tzinfo=expected.tzinfo) == expected
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x")),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    await expect_error(
        stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=key.key_id)),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    await expect_error(
        stub.EnableKey(pb.EnableKeyRequest(key_id=key.key_id)),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    cancelled = await stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(key_id=key.key_id))
    assert cancelled.key_id == key.arn
    described = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id))).key_metadata
    assert described.key_state == "Disabled", (
        "a cancelled deletion leaves the key disabled, as in AWS"
    )
    assert not described.HasField("deletion_date")
    await expect_error(
        stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(key_id=key.key_id)),
        PRECONDITION,
        "KMSInvalidStateException",
    )
