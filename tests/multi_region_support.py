"""In-process multi-region clusters for the replication tests (this module holds no tests).

Every region is the real composition root (``meridian.server.node.Node``) serving its API
over mTLS gRPC on 127.0.0.1 port 0, with one shared fake clock, and the regions replicate
through an in-memory network (``replication/transport.py``) whose links the tests cut and
heal. Waiting is deadline-based: ``wait_for`` advances the fake clock in steps (so that
backoffs and deletion windows run out) until a condition holds or the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from conftest import ACCOUNT, TestPki
from meridian.cli import pki
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.proto.replication_admin.v1 import replication_admin_pb2 as admin_pb
from meridian.proto.replication_admin.v1 import replication_admin_pb2_grpc
from meridian.replication.core.shipper import ShipperLimits
from meridian.replication.engine import EngineSettings
from meridian.replication.transport import MemoryNetwork
from meridian.server.config import NodeConfig, PeerConfig, RootKeyConfig, TlsConfig
from meridian.server.domain.clock import FakeClock
from meridian.server.node import Node

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
WAIT_S_MAX = 20.0


@dataclass
class Region:
    name: str
    node: Node
    channel: grpc.aio.Channel
    stub: kms_pb2_grpc.KeyManagementServiceStub
    admin: replication_admin_pb2_grpc.ReplicationAdminStub
    endpoint: str


@dataclass
class MrkCluster:
    clock: FakeClock
    network: MemoryNetwork
    regions: dict[str, Region] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Region:
        return self.regions[name]

    async def wait_for(
        self, condition: Callable[[], Awaitable[bool]], *, what: str, step_s: float = 0.5
    ) -> None:
        """Advance the fake clock in ``step_s`` steps until ``condition()`` holds."""
        deadline = time.monotonic() + WAIT_S_MAX
        while not await condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {what}")
            self.clock.advance(timedelta(seconds=step_s))
            await asyncio.sleep(0.005)

    async def describe(self, region: str, key_id: str) -> pb.KeyMetadata | None:
        try:
            response = await self[region].stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return response.key_metadata

    async def key_state(self, region: str, key_id: str) -> str | None:
        metadata = await self.describe(region, key_id)
        return None if metadata is None else metadata.key_state

    async def state_is(self, region: str, key_id: str, state: str) -> bool:
        return await self.key_state(region, key_id) == state

    async def status(self, region: str) -> admin_pb.GetReplicationStatusResponse:
        return await self[region].admin.GetReplicationStatus(admin_pb.GetReplicationStatusRequest())

    async def connected(self) -> bool:
        """Every region's shipper to every peer has reached it."""
        for region in self.regions.values():
            status = await self.status(region.name)
            if any(peer.connection_state != "connected" for peer in status.peers):
                return False
        return True

    async def caught_up(self) -> bool:
        """Every region's log is acknowledged by every peer."""
        for region in self.regions.values():
            status = await self.status(region.name)
            if any(peer.backlog_entries for peer in status.peers):
                return False
        return True


def node_certificates(test_pki: TestPki) -> dict[str, tuple[Path, Path]]:
    certificates = {}
    for region in REGIONS:
        cert, key = pki.node_paths(test_pki.directory, region)
        if not cert.exists():
            pki.issue_node(test_pki.directory, region, ips=["127.0.0.1"])
        certificates[region] = (cert, key)
    return certificates


def region_config(
    test_pki: TestPki, region: str, data_dir: Path, certificate: tuple[Path, Path]
) -> NodeConfig:
    return NodeConfig(
        region=region,
        account_id=ACCOUNT,
        listen="127.0.0.1:0",
        data_dir=data_dir,
        tls=TlsConfig(
            ca_cert=test_pki.directory / "ca.pem", cert=certificate[0], key=certificate[1]
        ),
        root_key=RootKeyConfig(provider="file", path=data_dir / "root.key"),
        sweep_interval_s=1.0,
        # Replication goes through the in-memory network, whatever the endpoint; the audit
        # trail's digest shipping dials it, and nothing listens on the discard port.
        peers=tuple(
            PeerConfig(region=peer, endpoint="127.0.0.1:9") for peer in REGIONS if peer != region
        ),
    )


def secure_channel(test_pki: TestPki, endpoint: str, region: str) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        endpoint,
        test_pki.credentials("admin"),
        options=[("grpc.ssl_target_name_override", f"{region}.node.meridian")],
    )


SETTINGS = EngineSettings(
    limits=ShipperLimits(batch_entries_max=50, backoff_initial_s=0.2, backoff_max_s=2.0),
    rpc_timeout_s=5.0,
    retained_entries_max=100_000,
    idle_poll_s=2.0,
)


async def start_cluster(
    test_pki: TestPki, tmp_path: Path, settings: EngineSettings = SETTINGS
) -> MrkCluster:
    clock = FakeClock()
    network = MemoryNetwork()
    cluster = MrkCluster(clock=clock, network=network)
    certificates = node_certificates(test_pki)
    for name in REGIONS:
        node = Node(
            config=region_config(test_pki, name, tmp_path / name, certificates[name]),
            clock=clock,
            replication_transport=network.transport_factory(name),
            replication_settings=settings,
        )
        port = await node.start()
        assert node.replication is not None
        network.register(name, node.replication.engine)
        endpoint = f"127.0.0.1:{port}"
        channel = secure_channel(test_pki, endpoint, name)
        cluster.regions[name] = Region(
            name=name,
            node=node,
            channel=channel,
            stub=kms_pb2_grpc.KeyManagementServiceStub(channel),
            admin=replication_admin_pb2_grpc.ReplicationAdminStub(channel),
            endpoint=endpoint,
        )
    return cluster


async def stop_cluster(cluster: MrkCluster) -> None:
    for region in cluster.regions.values():
        await region.channel.close()
        await region.node.stop()


@pytest.fixture
async def mrk_cluster(test_pki: TestPki, tmp_path: Path) -> AsyncIterator[MrkCluster]:
    cluster = await start_cluster(test_pki, tmp_path)
    try:
        # Shippers that started before their peers registered back off; let them connect.
        await cluster.wait_for(cluster.connected, what="the regions to connect")
        yield cluster
    finally:
        await stop_cluster(cluster)


async def create_mrk(cluster: MrkCluster, region: str = "us-east-1", **fields: object) -> str:
    response = await cluster[region].stub.CreateKey(
        pb.CreateKeyRequest(multi_region=True, **fields)
    )  # type: ignore[arg-type]
    return str(response.key_metadata.key_id)


async def replicate(cluster: MrkCluster, key_id: str, to: str, source: str = "us-east-1") -> None:
    await cluster[source].stub.ReplicateKey(
        pb.ReplicateKeyRequest(key_id=key_id, replica_region=to)
    )
    await cluster.wait_for(
        lambda: cluster.state_is(to, key_id, "Enabled"), what=f"the replica in {to}"
    )
