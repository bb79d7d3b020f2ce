"""`cluster status` reads replication lag from a node's ReplicationAdmin service over mTLS.

A stand-in node (the real TLS stack, a fake servicer) answers GetReplicationStatus; a
node without the service answers UNIMPLEMENTED, which status reports as "not reported".
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

import conftest
from meridian.cli import cluster_inspect, pki
from meridian.cli.cluster_state import ClusterSpec, RegionEntry
from meridian.proto.replication_admin.v1 import replication_admin_pb2, replication_admin_pb2_grpc


class FakeAdmin(replication_admin_pb2_grpc.ReplicationAdminServicer):
    def GetReplicationStatus(
        self, request: replication_admin_pb2.GetReplicationStatusRequest, context: object
    ) -> replication_admin_pb2.GetReplicationStatusResponse:
        response = replication_admin_pb2.GetReplicationStatusResponse(region=conftest.REGION)
        response.peers.add(
            region="eu-west-1",
            connection_state="connected",
            acked_seq=41,
            backlog_entries=3,
            lag_s=1.25,
        )
        response.peers.add(region="ap-southeast-2", connection_state="backing-off", acked_seq=7)
        return response


def serve(test_pki: conftest.TestPki, with_admin: bool) -> tuple[grpc.Server, int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    if with_admin:
        replication_admin_pb2_grpc.add_ReplicationAdminServicer_to_server(FakeAdmin(), server)
    credentials = grpc.ssl_server_credentials(
        [(test_pki.node_key.read_bytes(), test_pki.node_cert.read_bytes())],
        root_certificates=test_pki.ca_cert,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def spec_for(test_pki: conftest.TestPki, port: int, tmp_path: Path) -> ClusterSpec:
    client_cert, client_key = pki.client_paths(test_pki.directory, "admin")
    entry = RegionEntry(
        endpoint="127.0.0.1:1",  # the client proxy: status must not use it
        server_name=pki.node_server_name(conftest.REGION),
        pid=None,
        config=tmp_path / "node.toml",
        data_dir=tmp_path,
        log=tmp_path / "node.log",
        direct_endpoint=f"127.0.0.1:{port}",
    )
    return ClusterSpec(
        directory=tmp_path,
        account_id="000000000000",
        ca_cert=test_pki.directory / "ca.pem",
        client_cert=client_cert,
        client_key=client_key,
        principal="admin",
        regions={conftest.REGION: entry},
    )


@pytest.fixture
def admin_node(test_pki: conftest.TestPki) -> Iterator[int]:
    server, port = serve(test_pki, with_admin=True)
    yield port
    server.stop(None)


def test_peers_and_their_lag_come_from_the_node(
    test_pki: conftest.TestPki, admin_node: int, tmp_path: Path
) -> None:
    peers = cluster_inspect.replication_from_node(
        spec_for(test_pki, admin_node, tmp_path), conftest.REGION, 5
    )
    assert peers == [
        cluster_inspect.PeerLag("eu-west-1", 41, 3, 1.25, "connected"),
        cluster_inspect.PeerLag("ap-southeast-2", 7, 0, 0.0, "backing-off"),
    ]


def test_a_node_without_replication_is_reported_as_such(
    test_pki: conftest.TestPki, tmp_path: Path
) -> None:
    server, port = serve(test_pki, with_admin=False)
    try:
        with pytest.raises(cluster_inspect.ReplicationUnavailable) as caught:
            cluster_inspect.replication_from_node(
                spec_for(test_pki, port, tmp_path), conftest.REGION, 5
            )
    finally:
        server.stop(None)
    assert str(caught.value) == cluster_inspect.NOT_REPORTED
