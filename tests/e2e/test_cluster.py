"""`meridian cluster` against real node processes: up, status, kill, start, down.

Each test owns its cluster folder, and a fixture stops whatever a failing test left
running, so no node outlives the test session.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.cli import cluster

pytestmark = pytest.mark.e2e

REGIONS = ["us-east-1", "eu-west-1"]
CLI_TIMEOUT_S = 60


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "cluster"
    yield directory
    if (directory / "cluster.json").exists():
        with contextlib.suppress(cluster.ClusterError):
            cluster.down(directory, stop_timeout_s=5)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie has exited and does not count)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def _health(directory: Path) -> dict[str, str]:
    return {item.region: item.health for item in cluster.status(directory)}


def _meridian(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("meridian")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "meridian"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False
    )


def test_lifecycle_up_status_kill_start_down(cluster_dir: Path) -> None:
    spec = cluster.up(cluster_dir, REGIONS)

    document = json.loads((cluster_dir / "cluster.json").read_text())
    root = cluster_dir.resolve()
    assert document["format"] == 1
    assert document["account_id"] == "000000000000"
    assert document["principal"] == "admin"
    assert document["ca_cert"] == str(root / "pki" / "ca.pem")
    assert document["client_cert"] == str(root / "pki" / "clients" / "admin.pem")
    assert document["client_key"] == str(root / "pki" / "clients" / "admin.key")
    assert list(document["regions"]) == REGIONS
    for index, region in enumerate(REGIONS):
        entry = document["regions"][region]
        host, _, port = entry["endpoint"].rpartition(":")
        assert host == f"127.0.0.{11 + index}"
        assert 0 < int(port) < 65536
        assert entry["server_name"] == f"{region}.node.meridian"
        assert isinstance(entry["pid"], int)
        assert _running(entry["pid"])
        assert entry["config"] == str(root / "regions" / region / "node.toml")
        assert entry["data_dir"] == str(root / "regions" / region / "data")
        assert entry["log"] == str(root / "regions" / region / "node.log")
        config = tomllib.loads(Path(entry["config"]).read_text())
        assert config["region"] == region
        # Clients reach the region through its link proxy, on the region's own address.
        assert config["listen"] == entry["direct_endpoint"] != entry["endpoint"]
        assert entry["direct_endpoint"].rpartition(":")[0] == host
        assert (Path(entry["config"]).parent / config["tls"]["key"]).resolve() == (
            root / "pki" / "nodes" / f"{region}.key"
        )
        assert [peer["region"] for peer in config["peers"]] == [r for r in REGIONS if r != region]
        # Peers dial each other through the proxy of their link.
        assert {peer["region"]: peer["endpoint"] for peer in config["peers"]} == entry[
            "peer_endpoints"
        ]
    assert _running(document["proxy"]["pid"])
    assert _health(cluster_dir) == {"us-east-1": "SERVING", "eu-west-1": "SERVING"}

    with pytest.raises(cluster.ClusterError) as running:
        cluster.up(cluster_dir, REGIONS)
    assert str(running.value) == (
        f"cluster in {root} is already running (regions us-east-1, eu-west-1); "
        f"run `meridian cluster down --dir {root}` first"
    )

    # A crash drill: the other region keeps serving.
    killed = cluster.kill(cluster_dir, "eu-west-1")
    assert killed == spec.regions["eu-west-1"].pid
    assert not _running(killed)
    statuses = {item.region: item for item in cluster.status(cluster_dir)}
    assert not statuses["eu-west-1"].alive
    assert statuses["eu-west-1"].health == "unreachable"
    assert statuses["us-east-1"].alive
    assert statuses["us-east-1"].health == "SERVING"
    with pytest.raises(cluster.ClusterError, match="region eu-west-1 is not running"):
        cluster.kill(cluster_dir, "eu-west-1")
    with pytest.raises(cluster.ClusterError, match="unknown region 'ap-south-1'"):
        cluster.kill(cluster_dir, "ap-south-1")

    # The restarted node must come back on the port its peers know; a squatter is named.
    endpoint = spec.regions["eu-west-1"].direct_endpoint
    host, _, port = endpoint.rpartition(":")
    with socket.socket() as squatter:
        # Connections of the killed node may linger in TIME_WAIT on the port.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((host, int(port)))
        squatter.listen()
        with pytest.raises(cluster.ClusterError, match=f"port {endpoint} .* is in use"):
            cluster.start(cluster_dir, "eu-west-1")

    restarted = cluster.start(cluster_dir, "eu-west-1")
    assert restarted.regions["eu-west-1"].direct_endpoint == endpoint
    assert _health(cluster_dir) == {"us-east-1": "SERVING", "eu-west-1": "SERVING"}
    with pytest.raises(cluster.ClusterError, match="region eu-west-1 is already running"):
        cluster.start(cluster_dir, "eu-west-1")

    pids = [entry.pid for entry in cluster.load(cluster_dir).regions.values()]
    assert cluster.down(cluster_dir) == {"us-east-1": "stopped", "eu-west-1": "stopped"}
    assert not any(_running(pid) for pid in pids if pid is not None)
    document = json.loads((cluster_dir / "cluster.json").read_text())
    assert [entry["pid"] for entry in document["regions"].values()] == [None, None]
    assert cluster.down(cluster_dir) == {"us-east-1": "not running", "eu-west-1": "not running"}


def test_up_restarts_a_stopped_cluster_on_its_data(cluster_dir: Path) -> None:
    first = cluster.up(cluster_dir, REGIONS)
    # The node creates its root key on first start; a restart on the same data keeps it.
    root_keys = {
        region: (entry.data_dir / "root.key").read_bytes()
        for region, entry in first.regions.items()
    }
    ca = (cluster_dir / "pki" / "ca.pem").read_bytes()
    cluster.down(cluster_dir)

    # A pid that names some other process (here: this test) is stale, never signalled.
    document = json.loads((cluster_dir / "cluster.json").read_text())
    document["regions"]["us-east-1"]["pid"] = os.getpid()
    (cluster_dir / "cluster.json").write_text(json.dumps(document))
    (stale,) = [item for item in cluster.status(cluster_dir) if item.region == "us-east-1"]
    assert not stale.alive
    assert stale.note == f"process {os.getpid()} is gone; treated as stopped"

    notes: list[str] = []
    second = cluster.up(cluster_dir, REGIONS, report=notes.append)
    assert any("is gone; treating it as stopped" in note for note in notes)
    assert (cluster_dir / "pki" / "ca.pem").read_bytes() == ca
    for region, entry in second.regions.items():
        assert entry.host == first.regions[region].host
        assert entry.data_dir == first.regions[region].data_dir
        assert (entry.data_dir / "root.key").read_bytes() == root_keys[region]
    assert _health(cluster_dir) == {"us-east-1": "SERVING", "eu-west-1": "SERVING"}


def test_up_quotes_the_log_of_a_node_that_cannot_start(cluster_dir: Path) -> None:
    cluster.up(cluster_dir, REGIONS)
    cluster.down(cluster_dir)
    (cluster_dir / "pki" / "nodes" / "eu-west-1.key").write_text("not a key\n")

    # Whether the node exits or hangs after such an error, `up` must end with the log.
    with pytest.raises(cluster.ClusterError) as failed:
        cluster.up(cluster_dir, REGIONS, ready_timeout_s=10)
    message = str(failed.value)
    assert message.startswith("region eu-west-1: ")
    log = cluster_dir.resolve() / "regions" / "eu-west-1" / "node.log"
    assert f"last lines of {log}:" in message
    quoted = message.partition(f"last lines of {log}:\n")[2].splitlines()
    this_start = log.read_text().rpartition("--- meridian cluster: starting eu-west-1")[2]
    assert 0 < len(quoted) <= 20
    assert quoted[-1].strip() == this_start.splitlines()[-1].strip()
    # Only this start's output is quoted, not the previous run's shutdown.
    assert "node stopped" not in message
    # What `up` started, it stopped again.
    regions = json.loads((cluster_dir / "cluster.json").read_text())["regions"]
    assert [entry["pid"] for entry in regions.values()] == [None, None]


def test_a_single_region_cluster_has_no_peers(cluster_dir: Path) -> None:
    spec = cluster.up(cluster_dir, ["ap-south-1"])
    config = tomllib.loads(spec.regions["ap-south-1"].config.read_text())
    assert "peers" not in config
    assert _health(cluster_dir) == {"ap-south-1": "SERVING"}


def test_commands_on_a_missing_cluster_say_so(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for operation in (
        lambda: cluster.status(missing),
        lambda: cluster.down(missing),
        lambda: cluster.kill(missing, "us-east-1"),
        lambda: cluster.start(missing, "us-east-1"),
    ):
        with pytest.raises(cluster.ClusterError, match="does not exist"):
            operation()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(cluster.ClusterError, match=r"no cluster in .* \(cluster.json is missing\)"):
        cluster.status(empty)
    (empty / "cluster.json").write_text('{"format": 2}')
    with pytest.raises(cluster.ClusterError, match="not a valid cluster file"):
        cluster.down(empty)
    with pytest.raises(cluster.ClusterError, match="invalid region name"):
        cluster.up(tmp_path / "bad", ["us-east-1", "Mars"])
    with pytest.raises(cluster.ClusterError, match="more than once"):
        cluster.up(tmp_path / "bad", ["us-east-1", "us-east-1"])


def test_command_line_up_status_down(cluster_dir: Path) -> None:
    directory = str(cluster_dir)
    up = _meridian("cluster", "up", "--regions", ",".join(REGIONS), "--dir", directory)
    assert up.returncode == 0, up.stderr
    assert "SERVING" in up.stdout

    status = _meridian("cluster", "status", "--dir", directory, "--json")
    assert status.returncode == 0, status.stderr
    regions = json.loads(status.stdout)["regions"]
    assert list(regions) == REGIONS
    assert all(item["alive"] and item["health"] == "SERVING" for item in regions.values())

    table = _meridian("cluster", "status", "--dir", directory)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["REGION", "PID", "ALIVE", "HEALTH", "ENDPOINT", "KEYS", "REPLICATION", "LAG"]

    again = _meridian("cluster", "up", "--regions", ",".join(REGIONS), "--dir", directory)
    assert again.returncode == 1
    assert "is already running (regions us-east-1, eu-west-1)" in again.stderr
    assert "Traceback" not in again.stderr

    down = _meridian("cluster", "down", "--dir", directory)
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines() == ["us-east-1: stopped", "eu-west-1: stopped"]
    pids = [item["pid"] for item in regions.values()]
    assert not any(_running(pid) for pid in pids)

    stopped = json.loads(_meridian("cluster", "status", "--dir", directory, "--json").stdout)
    assert [item["alive"] for item in stopped["regions"].values()] == [False, False]

    missing = _meridian("cluster", "status", "--dir", str(cluster_dir.parent / "nowhere"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = _meridian("cluster", "kill", "ap-south-1", "--dir", directory)
    assert unknown.returncode == 1
    assert "unknown region 'ap-south-1'" in unknown.stderr
