"""A three-region cluster behind its link proxies: geography, partitions, heal, restarts.

Delays are checked as lower bounds (the proxy must never be early) or as comparisons
between regions whose delays differ by tens of milliseconds, never as tight windows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meridian.cli import cluster, cluster_inspect, cluster_network
from meridian.cli.netem.shape import LinkId, ShapeChange
from meridian.client import KmsClient
from meridian.client.errors import ServiceUnavailableError

pytestmark = pytest.mark.e2e

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
CLI_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("network") / "cluster"
    cluster.up(directory, REGIONS)
    try:
        yield directory.resolve()
    finally:
        with contextlib.suppress(cluster.ClusterError):
            cluster.down(directory, stop_timeout_s=5)


@pytest.fixture(autouse=True)
def healed(cluster_dir: Path) -> Iterator[None]:
    """Every test starts and ends with the configured geography and a running proxy."""
    yield
    spec = cluster.load(cluster_dir)
    if not cluster_network.proxy_running(spec):
        cluster_network.start_proxy(spec, lambda line: None)
    cluster_network.restore_all(cluster_dir)


def client(cluster_dir: Path, region: str, timeout_s: float = 10.0) -> KmsClient:
    return KmsClient.from_cluster_file(
        cluster_dir / "cluster.json", region=region, timeout_s=timeout_s
    )


def median_call_s(kms: KmsClient, calls: int = 5) -> float:
    kms.generate_random(number_of_bytes=8)  # the connection's handshake is not a call
    durations = []
    for _ in range(calls):
        started = time.monotonic()
        kms.generate_random(number_of_bytes=8)
        durations.append(time.monotonic() - started)
    return statistics.median(durations)


def peer_health(cluster_dir: Path, caller: str, callee: str, timeout_s: float) -> str:
    """Health of `callee` as `caller`'s node would reach it: through their link's proxy."""
    spec = cluster.load(cluster_dir)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec.ca_cert.read_bytes(),
        private_key=spec.client_key.read_bytes(),
        certificate_chain=spec.client_cert.read_bytes(),
    )
    endpoint = spec.peer_endpoint(caller, callee)
    options = [("grpc.ssl_target_name_override", spec.regions[callee].server_name)]
    with grpc.secure_channel(endpoint, credentials, options=options) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError as error:
            return error.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def meridian(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meridian", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_the_nearest_region_is_the_first_one(cluster_dir: Path) -> None:
    medians = {}
    for region in REGIONS:
        with client(cluster_dir, region) as kms:
            medians[region] = median_call_s(kms)
    # The client sits by us-east-1; eu-west-1 is ~39 ms away, ap-southeast-2 ~111 ms (one way).
    assert medians["us-east-1"] < medians["eu-west-1"] < medians["ap-southeast-2"]
    assert medians["eu-west-1"] >= 2 * 0.037
    assert medians["ap-southeast-2"] >= 2 * 0.105


def test_every_peer_reaches_every_other_through_its_link(cluster_dir: Path) -> None:
    spec = cluster.load(cluster_dir)
    for caller in REGIONS:
        for callee in REGIONS:
            if caller != callee:
                assert spec.peer_endpoint(caller, callee) != spec.regions[callee].direct_endpoint
                assert peer_health(cluster_dir, caller, callee, timeout_s=10) == "SERVING"


def test_a_partitioned_client_link_fails_calls_and_heals(cluster_dir: Path) -> None:
    with (
        client(cluster_dir, "eu-west-1", timeout_s=1.5) as far,
        client(cluster_dir, "us-east-1") as near,
    ):
        far.generate_random(number_of_bytes=8)
        cluster_network.change_links(
            cluster_dir, "client", "eu-west-1", ShapeChange(partitioned=True)
        )
        with pytest.raises(ServiceUnavailableError):
            far.generate_random(number_of_bytes=8)
        # Only that link is cut.
        assert len(near.generate_random(number_of_bytes=8).plaintext) == 8
        cluster_network.change_links(
            cluster_dir, "client", "eu-west-1", ShapeChange(partitioned=False)
        )
        assert far.generate_random(number_of_bytes=8).region == "eu-west-1"


def test_cutting_a_region_off_from_its_peers_leaves_its_clients(cluster_dir: Path) -> None:
    rows = cluster_network.change_links(
        cluster_dir, "eu-west-1", "all", ShapeChange(partitioned=True)
    )
    assert [str(row.link) for row in rows] == [
        "ap-southeast-2<->eu-west-1",
        "eu-west-1<->us-east-1",
    ]
    assert peer_health(cluster_dir, "us-east-1", "eu-west-1", timeout_s=1) == "DEADLINE_EXCEEDED"
    assert peer_health(cluster_dir, "eu-west-1", "ap-southeast-2", timeout_s=1) == (
        "DEADLINE_EXCEEDED"
    )
    assert peer_health(cluster_dir, "us-east-1", "ap-southeast-2", timeout_s=10) == "SERVING"
    with client(cluster_dir, "eu-west-1") as kms:
        assert kms.generate_random(number_of_bytes=8).region == "eu-west-1"
    faults = cluster_network.network_faults(cluster_dir)
    assert set(faults) == {row.link for row in rows}
    assert all("PARTITIONED" in shape for shape in faults.values())

    cluster_network.change_links(cluster_dir, "eu-west-1", "all", ShapeChange(partitioned=False))
    assert peer_health(cluster_dir, "us-east-1", "eu-west-1", timeout_s=10) == "SERVING"
    assert cluster_network.network_faults(cluster_dir) == {}


def test_added_latency_is_measured_and_restored(cluster_dir: Path) -> None:
    with client(cluster_dir, "us-east-1") as kms:
        before = median_call_s(kms)
        changed = meridian(
            "cluster",
            "link",
            "client",
            "us-east-1",
            "--latency-ms",
            "150",
            "--dir",
            str(cluster_dir),
        )
        assert changed.returncode == 0, changed.stderr
        assert changed.stdout.strip() == "client<->us-east-1: 150 ms +/- 0.1 ms"
        assert median_call_s(kms, calls=3) >= 0.300
        restored = meridian(
            "cluster", "link", "client", "us-east-1", "--restore", "--dir", str(cluster_dir)
        )
        assert restored.returncode == 0, restored.stderr
        assert median_call_s(kms) < before + 0.100


def test_a_dead_region_is_refused_at_once_and_comes_back(cluster_dir: Path) -> None:
    cluster.kill(cluster_dir, "ap-southeast-2")
    try:
        with client(cluster_dir, "ap-southeast-2", timeout_s=10) as kms:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailableError):
                kms.generate_random(number_of_bytes=8)
            # The proxy resets the connection: no waiting for the deadline.
            assert time.monotonic() - started < 8
    finally:
        cluster.start(cluster_dir, "ap-southeast-2")
    with client(cluster_dir, "ap-southeast-2") as kms:
        assert kms.generate_random(number_of_bytes=8).region == "ap-southeast-2"
    stats = {str(row.link): row.stats for row in cluster_network.links_report(cluster_dir)}
    assert stats["client<->ap-southeast-2"]["upstream_failures"] >= 1


def test_a_dead_proxy_is_restarted_with_its_faults(cluster_dir: Path) -> None:
    cluster_network.change_links(cluster_dir, "client", "eu-west-1", ShapeChange(partitioned=True))
    spec = cluster.load(cluster_dir)
    assert spec.proxy is not None and spec.proxy.pid is not None
    os.kill(spec.proxy.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cluster_network.proxy_running(cluster.load(cluster_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    states = {item.region: item for item in cluster.status(cluster_dir)}
    # The nodes themselves are fine; `status` probes them directly.
    assert all(item.health == "SERVING" for item in states.values())
    with (
        client(cluster_dir, "us-east-1", timeout_s=2) as kms,
        pytest.raises(ServiceUnavailableError),
    ):
        kms.generate_random(number_of_bytes=8)

    # Starting a region again brings the proxy back, partition included.
    cluster.kill(cluster_dir, "us-east-1")
    notes: list[str] = []
    cluster.start(cluster_dir, "us-east-1", report=notes.append)
    assert any("is gone; starting it again" in note for note in notes)
    with client(cluster_dir, "us-east-1") as kms:
        assert kms.generate_random(number_of_bytes=8).region == "us-east-1"
    with (
        client(cluster_dir, "eu-west-1", timeout_s=1.5) as kms,
        pytest.raises(ServiceUnavailableError),
    ):
        kms.generate_random(number_of_bytes=8)


def test_link_command_errors_are_one_line(cluster_dir: Path) -> None:
    unknown = meridian("cluster", "link", "eu-west-1", "mars", "--dir", str(cluster_dir))
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("meridian cluster link: unknown side 'mars'")
    bad = meridian(
        "cluster", "link", "eu-west-1", "us-east-1", "--loss", "100", "--dir", str(cluster_dir)
    )
    assert bad.returncode == 1
    assert "loss_percent must be between 0 and 99" in bad.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr
    shown = meridian("cluster", "link", "eu-west-1", "us-east-1", "--dir", str(cluster_dir))
    assert shown.stdout.strip() == "eu-west-1<->us-east-1: 39 ms +/- 2 ms"
    listing = meridian("cluster", "links", "--dir", str(cluster_dir), "--json")
    links = json.loads(listing.stdout)["links"]
    assert len(links) == 6
    assert links[str(LinkId.between("client", "us-east-1"))]["current"]["latency_ms"] == 1.0


def test_a_restart_keeps_addresses_and_link_changes(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    first = cluster.up(directory, REGIONS[:2], network="flat")
    try:
        cluster_network.change_links(directory, "client", "eu-west-1", ShapeChange(latency_ms=20))
        cluster.down(directory)
        assert cluster.load(directory).proxy.pid is None  # type: ignore[union-attr]
        notes: list[str] = []
        second = cluster.up(directory, REGIONS[:2], report=notes.append)
        assert any("keeping the link shapes" in note for note in notes)
        for region in REGIONS[:2]:
            assert second.regions[region].endpoint == first.regions[region].endpoint
        rows = cluster_network.links_report(directory, "client", "eu-west-1")
        assert [row.current.latency_ms for row in rows] == [20.0]
        restored = cluster_network.restore_all(directory)
        assert [str(row.link) for row in restored] == ["client<->eu-west-1"]
        assert restored[0].current.latency_ms == 0.0
        assert cluster_network.restore_all(directory) == []
        # `--network direct` takes the proxies away: clients dial the nodes.
        cluster.down(directory)
        third = cluster.up(directory, REGIONS[:2], network="direct")
        assert third.proxy is None
        assert all(entry.endpoint == entry.direct_endpoint for entry in third.regions.values())
        with KmsClient.from_cluster_file(directory / "cluster.json", region="eu-west-1") as kms:
            assert kms.generate_random(number_of_bytes=8).region == "eu-west-1"
        # A network file brings them back, with its own shapes.
        cluster.down(directory)
        network = tmp_path / "network.toml"
        network.write_text(
            'base = "flat"\n[[links]]\nbetween = ["client", "eu-west-1"]\nlatency_ms = 7\n'
        )
        fourth = cluster.up(directory, REGIONS[:2], network=str(network))
        assert fourth.proxy is not None
        rows = cluster_network.links_report(directory, "client", "eu-west-1")
        assert [row.configured.latency_ms for row in rows] == [7.0]
    finally:
        cluster.down(directory)


def test_status_shows_keys_replication_lag_and_the_network(cluster_dir: Path) -> None:
    with client(cluster_dir, "eu-west-1") as kms:
        for _ in range(3):
            kms.create_key(description="counted")
    before = {item.status.region: item for item in cluster_inspect.inspect(cluster_dir).regions}

    def probe(spec: object, region: str, timeout_s: float) -> list[cluster_inspect.PeerLag]:
        # Stands in for the nodes' replication status (issue 3) through the same seam.
        return [
            cluster_inspect.PeerLag(peer, acknowledged_seq=7, backlog_entries=2, lag_s=0.4)
            for peer in REGIONS
            if peer != region
        ]

    cluster_network.change_links(cluster_dir, "client", "eu-west-1", ShapeChange(partitioned=True))
    report = cluster_inspect.inspect(cluster_dir, replication_probe=probe)
    regions = {item.status.region: item for item in report.regions}
    # Asked directly, eu-west-1 answers although its client link is cut.
    assert regions["eu-west-1"].status.health == "SERVING"
    assert regions["eu-west-1"].keys is not None
    assert regions["eu-west-1"].keys.total == before["eu-west-1"].keys.total >= 3  # type: ignore[union-attr]
    assert report.faults == {"client<->eu-west-1": "39 ms +/- 2 ms, PARTITIONED"}
    lines = cluster_inspect.render(report)
    assert lines[0].split() == [
        "REGION",
        "PID",
        "ALIVE",
        "HEALTH",
        "ENDPOINT",
        "KEYS",
        "REPLICATION",
        "LAG",
    ]
    row = next(line for line in lines if line.startswith("eu-west-1"))
    assert "us-east-1 0.4s/2 behind, ap-southeast-2 0.4s/2 behind" in row
    assert "link changed: client<->eu-west-1: 39 ms +/- 2 ms, PARTITIONED" in lines
    assert any(line.startswith("link proxy: running (pid ") for line in lines)

    # The nodes' own status (ReplicationAdmin, issue 3): every peer, or why there is none.
    default = cluster_inspect.inspect(cluster_dir)
    for item in default.regions:
        if item.replication is None:
            assert item.replication_note == cluster_inspect.NOT_REPORTED
            assert f"replication lag: {cluster_inspect.NOT_REPORTED}" in cluster_inspect.render(
                default
            )
        else:
            assert {peer.peer for peer in item.replication} == set(REGIONS) - {item.status.region}
    shown = meridian("cluster", "status", "--dir", str(cluster_dir), "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["regions"]["eu-west-1"]["keys"]["total"] >= 3
    assert document["network"]["changed_links"] == {
        "client<->eu-west-1": "39 ms +/- 2 ms, PARTITIONED"
    }


def test_a_stray_proxy_is_replaced_by_the_next_up(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    first = cluster.up(directory, REGIONS[:1], network="flat")
    try:
        # As if `down` had been interrupted after the nodes: only the proxy still runs.
        cluster.kill(directory, REGIONS[0])
        assert first.proxy is not None and cluster_network.proxy_running(cluster.load(directory))
        second = cluster.up(directory, REGIONS[:1])
        assert second.proxy is not None and second.proxy.pid != first.proxy.pid
        with KmsClient.from_cluster_file(directory / "cluster.json") as kms:
            assert kms.generate_random(number_of_bytes=8).region == REGIONS[0]
    finally:
        cluster.down(directory)
    assert not cluster_network.proxy_running(cluster.load(directory))


def test_commands_on_a_missing_cluster_say_so(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    for args in (
        ("cluster", "link", "client", "us-east-1", "--heal", "--dir", missing),
        ("cluster", "links", "--dir", missing),
        ("drill", "partition", "--dir", missing),
    ):
        completed = meridian(*args)
        assert completed.returncode == 1, args
        assert "does not exist" in completed.stderr
        assert "Traceback" not in completed.stderr


def test_a_proxy_that_cannot_start_fails_up_with_its_log(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    cluster.up(directory, REGIONS[:1], network="flat")
    cluster.down(directory)
    (directory / "network" / "links.json").write_text("{not json")
    with pytest.raises(cluster.ClusterError) as failed:
        cluster.up(directory, REGIONS[:1])
    message = str(failed.value)
    assert message.startswith(
        "the link proxy: it exited with code 1 during startup; last lines of "
    )
    assert "links.json cannot be read" in message
    # Nothing was left running, and the file says so.
    spec = cluster.load(directory)
    assert spec.proxy is not None and spec.proxy.pid is None
    assert all(entry.pid is None for entry in spec.regions.values())
