"""Helpers shared by every test tier: a throwaway PKI and an in-process node.

The in-process node is the real composition root (``meridian.server.node.Node``)
with a fake clock and the real mTLS stack, listening on 127.0.0.1 port 0.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from meridian.cli import cluster, pki
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.config import NodeConfig, RootKeyConfig, TlsConfig
from meridian.server.domain.clock import FakeClock
from meridian.server.node import Node

# SoftHSM2 fixtures for the PKCS#11 root key tests (they skip without SoftHSM2).
pytest_plugins = ["hsm_support"]

REGION = "us-east-1"
ACCOUNT = "111122223333"


@dataclass(frozen=True)
class TestPki:
    directory: Path
    ca_cert: bytes
    client_cert: bytes
    client_key: bytes
    node_cert: Path
    node_key: Path

    def credentials(self, principal: str = "admin") -> grpc.ChannelCredentials:
        cert, key = pki.client_paths(self.directory, principal)
        if not cert.exists():
            pki.issue_client(self.directory, principal)
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_cert,
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestPki]:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_ca(directory)
    node_cert, node_key = pki.issue_node(directory, REGION, ips=["127.0.0.1"])
    client_cert, client_key = pki.issue_client(directory, "admin")
    yield TestPki(
        directory=directory,
        ca_cert=(directory / "ca.pem").read_bytes(),
        client_cert=client_cert.read_bytes(),
        client_key=client_key.read_bytes(),
        node_cert=node_cert,
        node_key=node_key,
    )
    shutil.rmtree(directory, ignore_errors=True)


def node_config(test_pki: TestPki, data_dir: Path, *, listen: str = "127.0.0.1:0") -> NodeConfig:
    return NodeConfig(
        region=REGION,
        account_id=ACCOUNT,
        listen=listen,
        data_dir=data_dir,
        tls=TlsConfig(
            ca_cert=test_pki.directory / "ca.pem", cert=test_pki.node_cert, key=test_pki.node_key
        ),
        root_key=RootKeyConfig(provider="file", path=data_dir / "root.key"),
        sweep_interval_s=0.05,
    )


@dataclass
class RunningNode:
    node: Node
    clock: FakeClock
    channel: grpc.aio.Channel
    stub: kms_pb2_grpc.KeyManagementServiceStub
    endpoint: str


def secure_channel(test_pki: TestPki, endpoint: str, principal: str = "admin") -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        endpoint,
        test_pki.credentials(principal),
        options=[("grpc.ssl_target_name_override", f"{REGION}.node.meridian")],
    )


@pytest.fixture
async def running_node(test_pki: TestPki, tmp_path: Path) -> AsyncIterator[RunningNode]:
    clock = FakeClock()
    node = Node(config=node_config(test_pki, tmp_path / "data"), clock=clock)
    port = await node.start()
    endpoint = f"127.0.0.1:{port}"
    channel = secure_channel(test_pki, endpoint)
    try:
        yield RunningNode(
            node=node,
            clock=clock,
            channel=channel,
            stub=kms_pb2_grpc.KeyManagementServiceStub(channel),
            endpoint=endpoint,
        )
    finally:
        await channel.close()
        await node.stop()


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call (what the SDK maps to an exception)."""
    from google.rpc import error_details_pb2, status_pb2

    for name, value in error.trailing_metadata() or ():
        if name == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    raise AssertionError(f"no ErrorInfo in the error: {error!r}")


async def expect_error(awaitable: object, code: grpc.StatusCode, reason: str) -> str:
    """Await a call that must fail with ``code`` and ``reason``; returns the message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    assert caught.value.code() == code, caught.value
    assert error_reason(caught.value) == reason, caught.value
    return str(caught.value.details())


# ---- principals other than the bootstrap administrator (docs/access-control.md) ----

ALLOW_ALL_POLICY = (
    '{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}'
)


def principal_arn(name: str) -> str:
    return f"arn:meridian:iam::{ACCOUNT}:user/{name}"


async def allow_everything(node: RunningNode, principal: str) -> None:
    """Give ``principal`` an identity policy allowing every action, as the administrator
    would: a test that calls as another principal and is not about access control."""
    from meridian.proto.kms.v1 import kms_pb2

    await node.stub.PutUserPolicy(
        kms_pb2.PutUserPolicyRequest(
            user_name=principal, policy_name="allow-everything", policy_document=ALLOW_ALL_POLICY
        )
    )


def principal_stub(
    test_pki: TestPki, node: RunningNode, principal: str
) -> tuple[grpc.aio.Channel, kms_pb2_grpc.KeyManagementServiceStub]:
    """A channel (close it) and stub that call ``node`` as ``principal``."""
    channel = secure_channel(test_pki, node.endpoint, principal)
    return channel, kms_pb2_grpc.KeyManagementServiceStub(channel)


# ---- end to end: real node processes started through the cluster manager ----


@dataclass
class ClusterHandle:
    directory: Path

    @property
    def file(self) -> Path:
        return self.directory / "cluster.json"

    def region(self, name: str) -> dict:
        return json.loads(self.file.read_text())["regions"][name]

    def stub(self, region: str) -> tuple[grpc.Channel, kms_pb2_grpc.KeyManagementServiceStub]:
        spec = json.loads(self.file.read_text())
        entry = spec["regions"][region]
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(spec["ca_cert"]).read_bytes(),
            private_key=Path(spec["client_key"]).read_bytes(),
            certificate_chain=Path(spec["client_cert"]).read_bytes(),
        )
        channel = grpc.secure_channel(
            entry["endpoint"],
            credentials,
            options=[("grpc.ssl_target_name_override", entry["server_name"])],
        )
        return channel, kms_pb2_grpc.KeyManagementServiceStub(channel)


@pytest.fixture(scope="module")
def single_region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    directory = tmp_path_factory.mktemp("cluster")
    cluster.up(directory, ["us-east-1"])
    try:
        yield ClusterHandle(directory)
    finally:
        cluster.down(directory)


THREE_REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]


@pytest.fixture(scope="module")
def three_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """Three real node processes that replicate to each other (multi-region keys)."""
    directory = tmp_path_factory.mktemp("cluster3")
    cluster.up(directory, THREE_REGIONS)
    try:
        yield ClusterHandle(directory)
    finally:
        cluster.down(directory)
