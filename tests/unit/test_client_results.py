"""Responses become typed, frozen results: datetimes, tuples, None for unset, region."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from test_client_support import ACCOUNT, CREATED, FakeCluster, async_cluster, sync_cluster

from meridian.client import (
    AliasListEntry,
    EmptyResult,
    KeyListEntry,
    MultiRegionKey,
    ProtocolError,
    Tag,
    results,
)
from meridian.proto.kms.v1 import kms_pb2 as pb

HOME = "us-east-1"


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster() as running:
        yield running


@pytest.fixture
async def aio_cluster() -> AsyncIterator[FakeCluster]:
    async with async_cluster() as running:
        yield running


def test_key_metadata(cluster: FakeCluster) -> None:
    with cluster.sync_client(preferred_region="eu-west-1") as client:
        created = client.create_key(description="orders", multi_region=True)
    metadata = created.key_metadata
    assert created.region == "eu-west-1"
    assert metadata.aws_account_id == ACCOUNT
    assert metadata.key_id.startswith("mrk-")
    assert metadata.arn == f"arn:meridian:kms:eu-west-1:{ACCOUNT}:key/{metadata.key_id}"
    assert metadata.description == "orders"
    assert metadata.enabled is True
    assert metadata.key_state == "Enabled"
    assert metadata.creation_date == CREATED
    assert metadata.creation_date.tzinfo is not None
    assert metadata.deletion_date is None
    assert metadata.valid_to is None
    assert metadata.pending_deletion_window_in_days is None
    assert metadata.encryption_algorithms == ("SYMMETRIC_DEFAULT",)
    assert metadata.signing_algorithms == ()
    configuration = metadata.multi_region_configuration
    assert configuration is not None
    assert configuration.multi_region_key_type == "PRIMARY"
    assert configuration.primary_key == MultiRegionKey(arn=metadata.arn, region="eu-west-1")
    assert [key.region for key in configuration.replica_keys] == ["eu-west-1"]


def test_single_region_key_has_no_multi_region_configuration(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        metadata = client.create_key().key_metadata
    assert metadata.multi_region is False
    assert metadata.multi_region_configuration is None


def test_results_are_frozen_and_hashable(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        created = client.create_key(tags=[Tag("a", "b")])
        described = client.describe_key(key_id=created.key_metadata.key_id)
    assert described.key_metadata == created.key_metadata
    assert hash(described.key_metadata) == hash(created.key_metadata)
    with pytest.raises(dataclasses.FrozenInstanceError):
        created.region = "elsewhere"  # type: ignore[misc]


def test_schedule_key_deletion(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        key = client.create_key().key_metadata
        scheduled = client.schedule_key_deletion(key_id=key.key_id, pending_window_in_days=7)
        described = client.describe_key(key_id=key.arn).key_metadata
    assert scheduled.key_id == key.arn
    assert scheduled.key_state == "PendingDeletion"
    assert scheduled.pending_window_in_days == 7
    assert scheduled.deletion_date == CREATED + timedelta(days=7)
    assert scheduled.region == HOME
    assert described.deletion_date == scheduled.deletion_date
    assert described.pending_deletion_window_in_days == 7


def test_crypto_results_and_secrets_kept_out_of_repr(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        key = client.create_key().key_metadata
        sealed = client.encrypt(key_id=key.key_id, plaintext=b"top secret")
        opened = client.decrypt(ciphertext_blob=sealed.ciphertext_blob)
        random = client.generate_random(number_of_bytes=4)
    assert sealed.key_id == key.arn
    assert sealed.encryption_algorithm == "SYMMETRIC_DEFAULT"
    assert opened.plaintext == b"top secret"
    assert opened.key_id == key.arn
    assert opened.key_material_id == "0" * 64
    assert random.plaintext == bytes(range(4))
    assert "top secret" not in repr(opened)
    assert "plaintext" not in repr(opened)
    assert "plaintext" not in repr(random)
    assert (sealed.region, opened.region, random.region) == (HOME, HOME, HOME)


def test_aliases_tags_and_empty_results(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        key = client.create_key().key_metadata
        assert client.create_alias(alias_name="alias/orders", target_key_id=key.key_id) == (
            EmptyResult(region=HOME)
        )
        assert client.tag_resource(key_id="alias/orders", tags={"team": "pay"}).region == HOME
        aliases = client.list_aliases()
        tags = client.list_resource_tags(key_id=key.key_id)
    assert aliases.aliases == (
        AliasListEntry(
            alias_name="alias/orders",
            alias_arn=f"arn:meridian:kms:{HOME}:{ACCOUNT}:alias/orders",
            target_key_id=key.key_id,
            creation_date=CREATED,
            last_updated_date=None,
        ),
    )
    assert aliases.next_marker is None
    assert aliases.truncated is False
    assert tags.tags == (Tag("team", "pay"),)


def test_region_falls_back_to_where_the_call_went() -> None:
    # A server that leaves `region` empty still yields a result that says where it ran.
    assert results.empty_result(pb.EnableKeyResponse(), "eu-west-1") == EmptyResult(
        region="eu-west-1"
    )
    assert results.encrypt_result(pb.EncryptResponse(region="us-east-1"), "x").region == "us-east-1"


def test_unset_timestamps_are_none_and_set_ones_are_utc() -> None:
    response = pb.ListAliasesResponse(
        aliases=[pb.AliasListEntry(alias_name="alias/a")], next_marker="", region="r"
    )
    response.aliases[0].last_updated_date.FromDatetime(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    entry = results.list_aliases_result(response, "r").aliases[0]
    assert entry.creation_date is None
    assert entry.last_updated_date == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert entry.last_updated_date.utcoffset() == timedelta(0)


# ---- paginators -----------------------------------------------------------------------


def test_iter_keys_follows_next_marker(cluster: FakeCluster) -> None:
    keys = [cluster[HOME].add_key() for _ in range(5)]
    with cluster.sync_client() as client:
        listed = list(client.iter_keys(limit=2))
        page = client.list_keys(limit=2)
    assert listed == [KeyListEntry(key_id=k.key_id, key_arn=k.arn) for k in keys]
    markers = [request.marker for name, request in cluster[HOME].requests if name == "ListKeys"]
    assert markers == ["", "2", "4", ""]
    assert page.truncated is True
    assert page.next_marker == "2"


def test_iter_aliases_of_one_key(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        first = client.create_key().key_metadata
        second = client.create_key().key_metadata
        for name in ("a", "b", "c"):
            client.create_alias(alias_name=f"alias/{name}", target_key_id=first.key_id)
        client.create_alias(alias_name="alias/z", target_key_id=second.key_id)
        names = [alias.alias_name for alias in client.iter_aliases(key_id=first.arn, limit=1)]
        every = [alias.alias_name for alias in client.iter_aliases()]
    assert names == ["alias/a", "alias/b", "alias/c"]
    assert every == ["alias/a", "alias/b", "alias/c", "alias/z"]


def test_a_repeating_marker_stops_the_paginator(cluster: FakeCluster) -> None:
    for _ in range(5):
        cluster[HOME].add_key()
    cluster[HOME].repeat_marker = True
    with cluster.sync_client() as client, pytest.raises(ProtocolError, match="twice"):
        list(client.iter_keys(limit=2))


async def test_async_results_and_paginators(aio_cluster: FakeCluster) -> None:
    keys = [aio_cluster[HOME].add_key() for _ in range(3)]
    async with aio_cluster.async_client() as client:
        listed = [key.key_id async for key in client.iter_keys(limit=2)]
        metadata = (await client.describe_key(key_id=keys[0].arn)).key_metadata
        await client.create_alias(alias_name="alias/a", target_key_id=keys[0].key_id)
        aliases = [alias.alias_name async for alias in client.iter_aliases(limit=1)]
        aio_cluster[HOME].repeat_marker = True
        with pytest.raises(ProtocolError):
            [key async for key in client.iter_keys(limit=1)]
    assert listed == [key.key_id for key in keys]
    assert metadata.creation_date == CREATED
    assert aliases == ["alias/a"]


def test_strings_aws_may_leave_out_are_none_when_empty() -> None:
    metadata = pb.KeyMetadata(key_id="k", description="")
    result = results.describe_key_result(pb.DescribeKeyResponse(key_metadata=metadata), "r")
    assert result.key_metadata.expiration_model is None
    assert result.key_metadata.current_key_material_id is None
    assert result.key_metadata.description == ""
    decrypted = results.decrypt_result(pb.DecryptResponse(plaintext=b"p"), "r")
    assert decrypted.key_material_id is None
    re_encrypted = results.re_encrypt_result(pb.ReEncryptResponse(source_key_material_id="s"), "r")
    assert (re_encrypted.source_key_material_id, re_encrypted.destination_key_material_id) == (
        "s",
        None,
    )
