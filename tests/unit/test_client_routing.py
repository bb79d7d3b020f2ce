"""Which region serves a call: pinned region, home region, and the region in an ARN."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_client_support import ACCOUNT, FakeCluster, async_cluster, sync_cluster

from meridian.client import UnknownRegionError, arn_region
from meridian.client._core import Router
from meridian.client.errors import ClientConfigError

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")


def _arn(region: str, resource: str = "key/1234abcd-12ab-34cd-56ef-1234567890ab") -> str:
    return f"arn:meridian:kms:{region}:{ACCOUNT}:{resource}"


# ---- the router alone ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "region"),
    [
        (_arn("eu-west-1"), "eu-west-1"),
        (_arn("ap-south-1", "alias/orders"), "ap-south-1"),
        (_arn("us-east-1", "key/mrk-" + "0" * 32), "us-east-1"),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", None),
        ("alias/orders", None),
        ("arn:aws:kms:eu-west-1:000000000000:key/x", None),  # not Meridian's partition
        ("arn:meridian:kms:eu-west-1:12:key/x", None),  # not a 12-digit account
        ("arn:meridian:kms:eu-west-1:000000000000:grant/x", None),
    ],
)
def test_arn_region(key_id: str, region: str | None) -> None:
    assert arn_region(key_id) == region


def test_home_is_the_first_region_by_default() -> None:
    router = Router(REGIONS, pinned_region=None, preferred_region=None)
    assert router.home_region == "us-east-1"
    assert router.region_for([]) == "us-east-1"
    assert router.region_for(["alias/orders"]) == "us-east-1"


def test_preferred_region_is_home_but_arns_still_decide() -> None:
    router = Router(REGIONS, pinned_region=None, preferred_region="ap-south-1")
    assert router.region_for(["k"]) == "ap-south-1"
    assert router.region_for([_arn("eu-west-1")]) == "eu-west-1"


def test_a_pinned_region_takes_every_call() -> None:
    router = Router(REGIONS, pinned_region="eu-west-1", preferred_region="ap-south-1")
    assert router.home_region == "eu-west-1"
    # As an AWS client bound to its region: the node there answers for foreign ARNs.
    assert router.region_for([_arn("us-east-1")]) == "eu-west-1"
    assert router.region_for([_arn("sa-east-1")]) == "eu-west-1"


def test_the_first_arn_among_the_fields_decides() -> None:
    router = Router(REGIONS, pinned_region=None, preferred_region=None)
    assert router.region_for(["alias/x", _arn("ap-south-1"), _arn("eu-west-1")]) == "ap-south-1"


def test_an_arn_in_a_region_without_endpoint_is_refused() -> None:
    router = Router(REGIONS, pinned_region=None, preferred_region=None)
    with pytest.raises(UnknownRegionError, match="sa-east-1"):
        router.region_for([_arn("sa-east-1")])


@pytest.mark.parametrize("option", ["pinned_region", "preferred_region"])
def test_unknown_configured_region_is_refused(option: str) -> None:
    with pytest.raises(UnknownRegionError, match="sa-east-1"):
        Router(REGIONS, **{"pinned_region": None, "preferred_region": None, option: "sa-east-1"})


def test_no_regions_is_refused() -> None:
    with pytest.raises(ClientConfigError):
        Router((), pinned_region=None, preferred_region=None)


# ---- calls through the client ----------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster(REGIONS) as running:
        for kms in running.kms.values():
            kms.record_only = True
        yield running


def _served_by(cluster: FakeCluster) -> list[str]:
    return [region for region, kms in cluster.kms.items() if kms.requests]


def test_calls_without_arn_go_home(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        assert client.home_region == "us-east-1"
        client.create_key()
        client.encrypt(key_id="alias/orders", plaintext=b"x")
        # Decrypt without key_id: the home region.
        assert client.decrypt(ciphertext_blob=b"blob").region == "us-east-1"
    assert _served_by(cluster) == ["us-east-1"]


def test_preferred_region_is_home(cluster: FakeCluster) -> None:
    with cluster.sync_client(preferred_region="ap-south-1") as client:
        assert client.generate_random().region == "ap-south-1"
        assert client.list_keys().region == "ap-south-1"
    assert _served_by(cluster) == ["ap-south-1"]


def test_arn_sends_the_call_to_its_region(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        assert client.encrypt(key_id=_arn("eu-west-1"), plaintext=b"x").region == "eu-west-1"
        assert (
            client.decrypt(ciphertext_blob=b"b", key_id=_arn("ap-south-1")).region == "ap-south-1"
        )
        client.describe_key(key_id=_arn("eu-west-1", "alias/orders"))
    assert cluster["eu-west-1"].last("Encrypt").key_id == _arn("eu-west-1")
    assert cluster["eu-west-1"].last("DescribeKey")
    assert cluster["ap-south-1"].last("Decrypt")
    assert not cluster["us-east-1"].requests


def test_re_encrypt_follows_the_destination_key(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        client.re_encrypt(
            ciphertext_blob=b"b",
            source_key_id=_arn("us-east-1"),
            destination_key_id=_arn("ap-south-1"),
        )
        client.re_encrypt(
            ciphertext_blob=b"b", source_key_id=_arn("eu-west-1"), destination_key_id="k"
        )
    assert cluster["ap-south-1"].last("ReEncrypt")
    assert cluster["eu-west-1"].last("ReEncrypt")


def test_alias_calls_follow_the_target_key(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        client.create_alias(alias_name="alias/a", target_key_id=_arn("eu-west-1"))
        client.update_alias(alias_name="alias/a", target_key_id=_arn("ap-south-1"))
        client.delete_alias(alias_name=_arn("eu-west-1", "alias/a"))
    assert [name for name, _ in cluster["eu-west-1"].requests] == ["CreateAlias", "DeleteAlias"]
    assert [name for name, _ in cluster["ap-south-1"].requests] == ["UpdateAlias"]


def test_pinned_client_sends_everything_to_its_region(cluster: FakeCluster) -> None:
    with cluster.sync_client(region="ap-south-1") as client:
        client.encrypt(key_id=_arn("eu-west-1"), plaintext=b"x")
        client.create_key()
        client.decrypt(ciphertext_blob=b"b")
    assert _served_by(cluster) == ["ap-south-1"]


def test_arn_of_an_unknown_region_fails_before_sending(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client, pytest.raises(UnknownRegionError, match="sa-east-1"):
        client.encrypt(key_id=_arn("sa-east-1"), plaintext=b"x")
    assert cluster.total_requests() == 0


async def test_async_client_routes_the_same_way() -> None:
    async with async_cluster(REGIONS) as cluster:
        for kms in cluster.kms.values():
            kms.record_only = True
        async with cluster.async_client(preferred_region="eu-west-1") as client:
            assert (await client.generate_random()).region == "eu-west-1"
            assert (await client.describe_key(key_id=_arn("ap-south-1"))).region == "ap-south-1"
            with pytest.raises(UnknownRegionError):
                await client.describe_key(key_id=_arn("sa-east-1"))
        async with cluster.async_client(region="us-east-1") as client:
            assert (await client.describe_key(key_id=_arn("ap-south-1"))).region == "us-east-1"
