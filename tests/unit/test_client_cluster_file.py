"""cluster.json: parsing, its errors, and clients built from it (over real mTLS too)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_client_support import FakeKms, SyncFakeServicer, sync_cluster

from meridian.client import (
    AsyncKmsClient,
    ClusterFileError,
    KmsClient,
    ServiceUnavailableError,
    load_cluster_file,
)
from meridian.proto.kms.v1 import kms_pb2_grpc


def _write(directory: Path, regions: dict[str, Any], **overrides: Any) -> Path:
    for name in ("ca.pem", "admin.pem", "admin.key"):
        (directory / name).write_bytes(f"--- {name} ---".encode())
    document = {
        "format": 1,
        "account_id": "000000000000",
        "ca_cert": "ca.pem",
        "client_cert": str(directory / "admin.pem"),
        "client_key": "admin.key",
        "principal": "admin",
        "regions": regions,
        **overrides,
    }
    path = directory / "cluster.json"
    path.write_text(json.dumps(document))
    return path


def _region(endpoint: str, server_name: str | None = None, pid: int | None = 1) -> dict[str, Any]:
    return {"endpoint": endpoint, "server_name": server_name, "pid": pid}


def test_load_keeps_region_order_and_resolves_paths(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "eu-west-1": _region("127.0.0.12:7001", "eu-west-1.node.meridian"),
            "us-east-1": _region("127.0.0.11:7001", None, pid=None),
            "ap-south-1": _region("127.0.0.13:7001", "ap-south-1.node.meridian"),
        },
    )
    cluster = load_cluster_file(path)
    assert [region.name for region in cluster.regions] == ["eu-west-1", "us-east-1", "ap-south-1"]
    assert list(cluster.endpoints) == ["eu-west-1", "us-east-1", "ap-south-1"]
    assert cluster.server_names == {
        "eu-west-1": "eu-west-1.node.meridian",
        "ap-south-1": "ap-south-1.node.meridian",
    }
    assert cluster.regions[1].pid is None
    assert cluster.ca_cert == tmp_path / "ca.pem"
    assert cluster.client_cert == tmp_path / "admin.pem"
    tls = cluster.read_tls_material()
    assert tls.client_key == b"--- admin.key ---"
    assert "admin.key" not in repr(tls)
    assert cluster.principal == "admin"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (json.dumps({"format": 2}), "format 2"),
        (json.dumps({"format": 1, "regions": {}}), "names no regions"),
        (json.dumps({"format": 1, "regions": []}), '"regions" must be a JSON object'),
        (
            json.dumps({"format": 1, "regions": {"us-east-1": {"endpoint": "h:1"}}}),
            'needs a string "ca_cert"',
        ),
        (
            json.dumps(
                {
                    "format": 1,
                    "ca_cert": "a",
                    "client_cert": "b",
                    "client_key": "c",
                    "regions": {"us-east-1": {"server_name": "x"}},
                }
            ),
            'region "us-east-1" needs a string "endpoint"',
        ),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(content)
    with pytest.raises(ClusterFileError, match=message):
        load_cluster_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="does not exist"):
        load_cluster_file(tmp_path / "nope.json")
    with pytest.raises(ClusterFileError, match="cannot read"):
        load_cluster_file(tmp_path)  # a folder


def test_missing_tls_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"us-east-1": _region("h:1")})
    (tmp_path / "admin.key").unlink()
    with pytest.raises(ClusterFileError, match="client_key"):
        KmsClient.from_cluster_file(path)


def test_from_cluster_file_uses_the_files_regions(tmp_path: Path) -> None:
    with sync_cluster(("us-east-1", "eu-west-1")) as running:
        regions = {name: _region(endpoint) for name, endpoint in running.endpoints.items()}
        path = _write(tmp_path, regions)

        def insecure(_region: str, endpoint: str) -> grpc.Channel:
            return grpc.insecure_channel(endpoint)

        with KmsClient.from_cluster_file(path, channel_factory=insecure) as client:
            assert client.regions == ("us-east-1", "eu-west-1")
            assert client.generate_random().region == "us-east-1"
        with KmsClient.from_cluster_file(
            path, preferred_region="eu-west-1", channel_factory=insecure, timeout_s=3
        ) as client:
            assert client.generate_random().region == "eu-west-1"
        with KmsClient.from_cluster_file(path, region="eu-west-1", channel_factory=insecure) as c:
            assert c.pinned_region == "eu-west-1"


def test_async_from_cluster_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"us-east-1": _region("h:1"), "eu-west-1": _region("h:2", "e.node")})
    client = AsyncKmsClient.from_cluster_file(path, preferred_region="eu-west-1")
    assert client.home_region == "eu-west-1"
    assert client._channel_options("eu-west-1") == [("grpc.ssl_target_name_override", "e.node")]


# ---- real mTLS, with the node certificate of the shared test PKI ------------------------


@pytest.fixture
def mtls_endpoint(test_pki: Any) -> Iterator[str]:
    """A fake us-east-1 node serving mTLS with the test PKI's node certificate."""
    credentials = grpc.ssl_server_credentials(
        [(test_pki.node_key.read_bytes(), test_pki.node_cert.read_bytes())],
        root_certificates=test_pki.ca_cert,
        require_client_auth=True,
    )
    with ThreadPoolExecutor(max_workers=4) as executor:
        server = grpc.server(executor)
        kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(
            SyncFakeServicer(FakeKms("us-east-1")), server
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        try:
            # "localhost" is in the node certificate; the test below proves that the
            # client checks server_name rather than the address it dials.
            yield f"localhost:{port}"
        finally:
            server.stop(None).wait()


def _mtls_cluster_file(directory: Path, test_pki: Any, endpoint: str, server_name: str) -> Path:
    path = directory / "cluster.json"
    clients = test_pki.directory / "clients"
    document = {
        "format": 1,
        "account_id": "000000000000",
        "ca_cert": str(test_pki.directory / "ca.pem"),
        "client_cert": str(clients / "admin.pem"),
        "client_key": str(clients / "admin.key"),
        "principal": "admin",
        "regions": {"us-east-1": {"endpoint": endpoint, "server_name": server_name, "pid": 1}},
    }
    path.write_text(json.dumps(document))
    return path


def test_mtls_with_server_name_override(tmp_path: Path, test_pki: Any, mtls_endpoint: str) -> None:
    path = _mtls_cluster_file(tmp_path, test_pki, mtls_endpoint, "us-east-1.node.meridian")
    with KmsClient.from_cluster_file(path, timeout_s=5) as client:
        assert client.generate_random(number_of_bytes=3).plaintext == b"\x00\x01\x02"


def test_mtls_refuses_a_node_with_another_name(
    tmp_path: Path, test_pki: Any, mtls_endpoint: str
) -> None:
    path = _mtls_cluster_file(tmp_path, test_pki, mtls_endpoint, "eu-west-1.node.meridian")
    with (
        KmsClient.from_cluster_file(path, timeout_s=5) as client,
        pytest.raises(ServiceUnavailableError),
    ):
        client.generate_random()
