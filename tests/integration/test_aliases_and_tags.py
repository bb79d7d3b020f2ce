"""Aliases and tags: AWS's naming rules, limits and errors."""

from __future__ import annotations

import grpc
import pytest

from conftest import ACCOUNT, REGION, expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def new_key(stub) -> pb.KeyMetadata:
    return (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata


async def test_alias_lifecycle(running_node) -> None:
    stub = running_node.stub
    first, second = await new_key(stub), await new_key(stub)
    await stub.CreateAlias(
        pb.CreateAliasRequest(alias_name="alias/app/prod", target_key_id=first.arn)
    )
    await expect_error(
        stub.CreateAlias(
            pb.CreateAliasRequest(alias_name="alias/app/prod", target_key_id=second.key_id)
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "AlreadyExistsException",
    )
    listed = (await stub.ListAliases(pb.ListAliasesRequest())).aliases
    assert [(a.alias_name, a.target_key_id, a.alias_arn) for a in listed] == [
        ("alias/app/prod", first.key_id, f"arn:meridian:kms:{REGION}:{ACCOUNT}:alias/app/prod")
    ]
    await stub.UpdateAlias(
        pb.UpdateAliasRequest(alias_name="alias/app/prod", target_key_id=second.key_id)
    )
    described = await stub.DescribeKey(pb.DescribeKeyRequest(key_id="alias/app/prod"))
    assert described.key_metadata.key_id == second.key_id
    by_key = (await stub.ListAliases(pb.ListAliasesRequest(key_id=first.key_id))).aliases
    assert list(by_key) == []
    await stub.DeleteAlias(pb.DeleteAliasRequest(alias_name="alias/app/prod"))
    await expect_error(
        stub.DeleteAlias(pb.DeleteAliasRequest(alias_name="alias/app/prod")),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )
    await expect_error(
        stub.UpdateAlias(
            pb.UpdateAliasRequest(alias_name="alias/app/prod", target_key_id=first.key_id)
        ),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )


@pytest.mark.parametrize(
    ("alias_name", "reason"),
    [
        ("app", "InvalidAliasNameException"),
        ("alias/", "InvalidAliasNameException"),
        ("alias/has space", "InvalidAliasNameException"),
        ("alias/aws/reserved", "InvalidAliasNameException"),
        ("alias/" + "a" * 251, "ValidationException"),
        ("", "ValidationException"),
        ("alias/ünïcode", "InvalidAliasNameException"),
    ],
)
async def test_create_alias_rejects_bad_names(running_node, alias_name, reason) -> None:
    key = await new_key(running_node.stub)
    await expect_error(
        running_node.stub.CreateAlias(
            pb.CreateAliasRequest(alias_name=alias_name, target_key_id=key.key_id)
        ),
        INVALID,
        reason,
    )


async def test_alias_target_rules(running_node) -> None:
    stub = running_node.stub
    key = await new_key(stub)
    await stub.CreateAlias(pb.CreateAliasRequest(alias_name="alias/one", target_key_id=key.key_id))
    await expect_error(
        stub.CreateAlias(pb.CreateAliasRequest(alias_name="alias/two", target_key_id="alias/one")),
        INVALID,
        "ValidationException",
    )
    await expect_error(
        stub.CreateAlias(
            pb.CreateAliasRequest(
                alias_name="alias/two", target_key_id="00000000-0000-4000-8000-000000000000"
            )
        ),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key.key_id, pending_window_in_days=7)
    )
    await expect_error(
        stub.CreateAlias(pb.CreateAliasRequest(alias_name="alias/two", target_key_id=key.key_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )


async def test_alias_limit_per_key(running_node) -> None:
    stub = running_node.stub
    key = await new_key(stub)
    for index in range(50):
        await stub.CreateAlias(
            pb.CreateAliasRequest(alias_name=f"alias/a{index:02d}", target_key_id=key.key_id)
        )
    await expect_error(
        stub.CreateAlias(
            pb.CreateAliasRequest(alias_name="alias/one-too-many", target_key_id=key.key_id)
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LimitExceededException",
    )
    names: list[str] = []
    marker = ""
    while True:
        page = await stub.ListAliases(
            pb.ListAliasesRequest(key_id=key.key_id, limit=20, marker=marker)
        )
        names += [alias.alias_name for alias in page.aliases]
        if not page.truncated:
            break
        marker = page.next_marker
    assert names == sorted(f"alias/a{index:02d}" for index in range(50))


async def test_tags(running_node) -> None:
    stub = running_node.stub
    key = (
        await stub.CreateKey(
            pb.CreateKeyRequest(tags=[pb.Tag(tag_key="team", tag_value="payments")])
        )
    ).key_metadata
    await stub.TagResource(
        pb.TagResourceRequest(
            key_id=key.arn,
            tags=[
                pb.Tag(tag_key="env", tag_value="prod"),
                pb.Tag(tag_key="team", tag_value="risk"),
            ],
        )
    )
    tags = (await stub.ListResourceTags(pb.ListResourceTagsRequest(key_id=key.key_id))).tags
    assert [(t.tag_key, t.tag_value) for t in tags] == [("env", "prod"), ("team", "risk")]
    await stub.UntagResource(pb.UntagResourceRequest(key_id=key.key_id, tag_keys=["env", "absent"]))
    tags = (await stub.ListResourceTags(pb.ListResourceTagsRequest(key_id=key.key_id))).tags
    assert [(t.tag_key, t.tag_value) for t in tags] == [("team", "risk")]
    await expect_error(
        stub.TagResource(pb.TagResourceRequest(key_id=key.key_id)), INVALID, "ValidationException"
    )
    await expect_error(
        stub.TagResource(
            pb.TagResourceRequest(
                key_id=key.key_id, tags=[pb.Tag(tag_key="k" * 129, tag_value="v")]
            )
        ),
        INVALID,
        "TagException",
    )
    await expect_error(
        stub.TagResource(
            pb.TagResourceRequest(
                key_id=key.key_id, tags=[pb.Tag(tag_key=f"t{i}", tag_value="v") for i in range(50)]
            )
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LimitExceededException",
    )


async def test_list_resource_tags_paginates(running_node) -> None:
    stub = running_node.stub
    key = await new_key(stub)
    await stub.TagResource(
        pb.TagResourceRequest(
            key_id=key.key_id,
            tags=[pb.Tag(tag_key=f"t{i:02d}", tag_value=str(i)) for i in range(25)],
        )
    )
    first = await stub.ListResourceTags(pb.ListResourceTagsRequest(key_id=key.key_id, limit=10))
    assert first.truncated and len(first.tags) == 10
    rest = await stub.ListResourceTags(
        pb.ListResourceTagsRequest(key_id=key.key_id, limit=100, marker=first.next_marker)
    )
    assert not rest.truncated and len(rest.tags) == 15
    assert rest.tags[0].tag_key == "t10"
