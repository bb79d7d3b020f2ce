"""Construction checks, lazy channels, context managers and the closed state."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from test_client_support import QUIET_ROUTING, FakeCluster, async_cluster, sync_cluster

from meridian.client import AsyncKmsClient, ClientClosedError, ClientConfigError, KmsClient
from meridian.client.errors import UnknownRegionError

ENDPOINTS = {"us-east-1": "127.0.0.1:1", "eu-west-1": "127.0.0.1:2"}


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster() as running:
        yield running


class RecordingFactory:
    """A channel factory that remembers the channels it made."""

    def __init__(self) -> None:
        self.made: list[tuple[str, grpc.Channel]] = []

    def __call__(self, region: str, endpoint: str) -> grpc.Channel:
        channel = grpc.insecure_channel(endpoint)
        self.made.append((region, channel))
        return channel


def test_tls_material_is_required_without_a_channel_factory() -> None:
    with pytest.raises(ClientConfigError, match="ca_cert"):
        KmsClient(ENDPOINTS)
    with pytest.raises(ClientConfigError, match="ca_cert"):
        AsyncKmsClient(ENDPOINTS, ca_cert=b"ca", client_cert=b"cert")


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf")])
def test_timeout_must_be_positive_and_finite(timeout_s: float) -> None:
    with pytest.raises(ClientConfigError, match="timeout_s"):
        KmsClient(ENDPOINTS, channel_factory=RecordingFactory(), timeout_s=timeout_s)


def test_per_call_timeout_is_checked(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client, pytest.raises(ClientConfigError, match="timeout_s"):
        client.generate_random(timeout_s=0)
    assert cluster.total_requests() == 0


def test_server_names_must_name_known_regions() -> None:
    with pytest.raises(UnknownRegionError, match="sa-east-1"):
        KmsClient(
            ENDPOINTS,
            channel_factory=RecordingFactory(),
            server_names={"sa-east-1": "sa-east-1.node.meridian"},
        )


def test_endpoints_are_required() -> None:
    with pytest.raises(ClientConfigError):
        KmsClient({}, channel_factory=RecordingFactory())


def test_secure_channel_settings() -> None:
    client = KmsClient(
        ENDPOINTS,
        ca_cert=b"ca",
        client_cert=b"cert",
        client_key=b"key",
        server_names={"eu-west-1": "eu-west-1.node.meridian"},
    )
    assert client.regions == ("us-east-1", "eu-west-1")
    assert client._channel_options("eu-west-1") == [
        ("grpc.ssl_target_name_override", "eu-west-1.node.meridian")
    ]
    assert client._channel_options("us-east-1") == []
    client.close()


def test_channels_are_opened_lazily_once_per_region(cluster: FakeCluster) -> None:
    factory = RecordingFactory()
    client = KmsClient(cluster.endpoints, channel_factory=factory, routing=QUIET_ROUTING)
    assert factory.made == []
    client.generate_random()
    client.generate_random()
    client.generate_random(timeout_s=1)
    assert [region for region, _ in factory.made] == ["us-east-1"]
    client.close()


def test_close_closes_every_channel_and_forbids_calls(cluster: FakeCluster) -> None:
    factory = RecordingFactory()
    client = KmsClient(
        cluster.endpoints,
        channel_factory=factory,
        preferred_region="eu-west-1",
        routing=QUIET_ROUTING,
    )
    with client:
        client.generate_random()
        client.describe_key(key_id=cluster["us-east-1"].add_key().arn)
        assert not client.is_closed
    assert client.is_closed
    for _, channel in factory.made:
        with pytest.raises(ValueError, match="closed"):
            channel.unary_unary("/x/y")(b"")
    with pytest.raises(ClientClosedError, match="closed"):
        client.generate_random()
    with pytest.raises(ClientClosedError):
        client.list_keys()
    # Paginators check on their first page, not only when built.
    with pytest.raises(ClientClosedError):
        next(client.iter_keys())
    client.close()  # idempotent
    with pytest.raises(ClientClosedError), client:
        pass
    assert sorted(region for region, _ in factory.made) == ["eu-west-1", "us-east-1"]


def test_a_closed_client_opens_no_channel(cluster: FakeCluster) -> None:
    factory = RecordingFactory()
    client = KmsClient(cluster.endpoints, channel_factory=factory)
    client.close()
    with pytest.raises(ClientClosedError):
        client.generate_random()
    assert factory.made == []


async def test_async_lifecycle() -> None:
    made: list[grpc.aio.Channel] = []

    def factory(_region: str, endpoint: str) -> grpc.aio.Channel:
        made.append(grpc.aio.insecure_channel(endpoint))
        return made[-1]

    async with async_cluster() as cluster:
        async with AsyncKmsClient(
            cluster.endpoints, channel_factory=factory, routing=QUIET_ROUTING
        ) as client:
            await client.generate_random()
            await client.generate_random()
        assert client.is_closed
        assert len(made) == 1
        with pytest.raises(ClientClosedError, match="AsyncKmsClient is closed"):
            await client.generate_random()
        with pytest.raises(ClientClosedError):
            await anext(client.iter_keys())
        await client.close()  # idempotent
        with pytest.raises(ClientClosedError):
            async with client:
                pass
