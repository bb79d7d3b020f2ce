"""A node with ``workers = 2`` (server/workers.py): correct across processes.

The node runs as a real supervisor process with two workers on one port. Each test
holds connections to *both* workers: a connection lands on a worker chosen by the
kernel (SO_REUSEPORT), so the helper opens connections until every worker holds one,
telling which worker owns a connection from /proc (Linux only).

What must hold: a change acknowledged by one worker is seen by the next call on any
worker (a disabled key stops encrypting everywhere at once); the audit trail is one
chain with every worker's records and verifies; an idempotent retry that reaches the
other worker gets the first call's answer, even while the first call still runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from meridian.cli.ports import pick_port
from meridian.proto.audit.v1 import audit_pb2, audit_pb2_grpc
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]
REGION = "us-east-1"
WORKERS = 2
START_TIMEOUT_S = 60.0
TOKEN_KEY = "x-meridian-idempotency-token"


@dataclass
class Connection:
    channel: grpc.Channel
    stub: kms_pb2_grpc.KeyManagementServiceStub
    audit: audit_pb2_grpc.AuditStub


@dataclass
class WorkersNode:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path
    # Worker pid -> connections served by that worker.
    connections: dict[int, list[Connection]] = field(default_factory=dict)

    def on_each_worker(self) -> list[Connection]:
        return [connections[0] for connections in self.connections.values()]


def _write_config(test_pki, directory: Path, port: int) -> Path:
    config = directory / "node.toml"
    pki = test_pki.directory
    config.write_text(
        f'region = "{REGION}"\n'
        f'listen = "127.0.0.1:{port}"\n'
        'data_dir = "data"\n'
        f"workers = {WORKERS}\n"
        "[tls]\n"
        f'ca_cert = "{pki / "ca.pem"}"\n'
        f'cert = "{test_pki.node_cert}"\n'
        f'key = "{test_pki.node_key}"\n'
    )
    return config


def _worker_pids(supervisor: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        # Workers are multiprocessing "spawn" children; the resource tracker is not one.
        if parent == supervisor and b"spawn_main" in command:
            pids.append(int(entry))
    return sorted(pids)


def _server_socket_inodes(port: int) -> set[str]:
    """Inodes of established TCP sockets whose local port is the node's."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def _sockets_of(pid: int) -> set[str]:
    inodes = set()
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _connect(test_pki, port: int) -> Connection:
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}",
        test_pki.credentials(),
        options=[
            ("grpc.ssl_target_name_override", f"{REGION}.node.meridian"),
            # A connection of its own: channels otherwise share subchannels (and so
            # land on the same worker).
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )
    stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
    stub.ListKeys(pb.ListKeysRequest(limit=1), timeout=10)  # connect now
    return Connection(channel, stub, audit_pb2_grpc.AuditStub(channel))


def _connect_to_every_worker(node: WorkersNode, test_pki, pids: list[int]) -> None:
    node.connections = {pid: [] for pid in pids}
    for _ in range(64):
        before = {pid: _sockets_of(pid) & _server_socket_inodes(node.port) for pid in pids}
        connection = _connect(test_pki, node.port)
        after = {pid: _sockets_of(pid) & _server_socket_inodes(node.port) for pid in pids}
        owners = [pid for pid in pids if after[pid] - before[pid]]
        assert len(owners) == 1, "a new connection belongs to exactly one worker"
        node.connections[owners[0]].append(connection)
        if all(node.connections.values()):
            return
    raise AssertionError("64 connections never reached every worker")


@pytest.fixture(scope="module")
def workers_node(test_pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersNode]:
    # One node for the module: each test uses keys and tokens of its own.
    tmp_path = tmp_path_factory.mktemp("workers")
    port = pick_port("127.0.0.1")
    config = _write_config(test_pki, tmp_path, port)
    log = tmp_path / "node.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "meridian", "node", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    node = WorkersNode(process, port, tmp_path / "data", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b'"workers": 2' not in log.read_bytes():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the node did not become ready"
            time.sleep(0.1)
        pids = _worker_pids(process.pid)
        assert len(pids) == WORKERS
        _connect_to_every_worker(node, test_pki, pids)
        yield node
    finally:
        for connections in node.connections.values():
            for connection in connections:
                connection.channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def _encrypt_reason(connection: Connection, key_id: str) -> str:
    try:
        connection.stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"), timeout=10)
    except grpc.RpcError as error:
        return _error_reason(error)
    return "ok"


def _error_reason(error: grpc.RpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return f"no status ({error.code()})"  # type: ignore[attr-defined]
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return "no ErrorInfo"


def test_a_change_in_one_worker_is_seen_at_once_by_the_other(workers_node) -> None:
    first, second = workers_node.on_each_worker()
    key_id = first.stub.CreateKey(pb.CreateKeyRequest()).key_metadata.key_id
    for round_number in range(20):
        # Both workers use the key, so both hold it (and its material) in their caches.
        assert _encrypt_reason(first, key_id) == "ok"
        assert _encrypt_reason(second, key_id) == "ok"
        writer, other = (first, second) if round_number % 2 == 0 else (second, first)
        writer.stub.DisableKey(pb.DisableKeyRequest(key_id=key_id), timeout=10)
        # The very next call on either worker is refused: no stale cache window.
        assert _encrypt_reason(other, key_id) == "DisabledException"
        assert _encrypt_reason(writer, key_id) == "DisabledException"
        other.stub.EnableKey(pb.EnableKeyRequest(key_id=key_id), timeout=10)
    assert _encrypt_reason(second, key_id) == "ok"
    first.stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7), timeout=10
    )
    assert _encrypt_reason(second, key_id) == "KMSInvalidStateException"


def test_a_grant_revoked_in_one_worker_stops_allowing_in_the_other(workers_node, test_pki) -> None:
    first, second = workers_node.on_each_worker()
    key = first.stub.CreateKey(pb.CreateKeyRequest()).key_metadata
    grantee = "arn:meridian:iam::000000000000:user/grantee"
    grant = first.stub.CreateGrant(
        pb.CreateGrantRequest(key_id=key.key_id, grantee_principal=grantee, operations=["Encrypt"])
    )
    # The grantee's connections: again one per worker.
    pids = list(workers_node.connections)
    grantee_on = {}
    for _ in range(64):
        channel = grpc.secure_channel(
            f"127.0.0.1:{workers_node.port}",
            test_pki.credentials("grantee"),
            options=[
                ("grpc.ssl_target_name_override", f"{REGION}.node.meridian"),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        before = {pid: _sockets_of(pid) & _server_socket_inodes(workers_node.port) for pid in pids}
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        request = pb.EncryptRequest(key_id=key.arn, plaintext=b"x")
        stub.Encrypt(request, timeout=10)  # allowed by the grant; caches it
        after = {pid: _sockets_of(pid) & _server_socket_inodes(workers_node.port) for pid in pids}
        (owner,) = [pid for pid in pids if after[pid] - before[pid]]
        if owner in grantee_on:
            channel.close()
            continue
        grantee_on[owner] = (channel, stub)
        if len(grantee_on) == len(pids):
            break
    assert len(grantee_on) == len(pids)
    try:
        second.stub.RevokeGrant(pb.RevokeGrantRequest(key_id=key.key_id, grant_id=grant.grant_id))
        for _, stub in grantee_on.values():
            with pytest.raises(grpc.RpcError) as refused:
                stub.Encrypt(pb.EncryptRequest(key_id=key.arn, plaintext=b"x"), timeout=10)
            assert _error_reason(refused.value) == "AccessDeniedException"
    finally:
        for channel, _ in grantee_on.values():
            channel.close()


def test_the_audit_trail_is_one_chain_with_every_workers_records(workers_node) -> None:
    request_ids = []
    for connection in workers_node.on_each_worker():
        for _ in range(5):
            _, call = connection.stub.GenerateRandom.with_call(
                pb.GenerateRandomRequest(number_of_bytes=8), timeout=10
            )
            request_ids.append(dict(call.trailing_metadata())["x-request-id"])
    first = workers_node.on_each_worker()[0]
    sealed = first.audit.SealAuditDigest(audit_pb2.SealAuditDigestRequest(), timeout=10)
    assert sealed.sealed
    recorded = set()
    after_seq = 0
    while True:
        page = first.audit.ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(after_seq=after_seq, limit=1000), timeout=10
        )
        recorded.update(record.request_id for record in page.records)
        if not page.truncated:
            break
        after_seq = page.next_after_seq
    assert set(request_ids) <= recorded
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "meridian",
            "audit",
            "verify",
            "--data-dir",
            str(workers_node.data_dir),
            "--no-peers",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_idempotent_retry_on_the_other_worker_gets_the_first_answer(workers_node) -> None:
    first, second = workers_node.on_each_worker()
    metadata = ((TOKEN_KEY, "retry-across-workers"),)
    created = first.stub.CreateKey(
        pb.CreateKeyRequest(description="once"), metadata=metadata, timeout=10
    )
    retried = second.stub.CreateKey(
        pb.CreateKeyRequest(description="once"), metadata=metadata, timeout=10
    )
    assert retried.key_metadata.key_id == created.key_metadata.key_id


def _create_everywhere_at_once(connections: list[Connection], token: str) -> list[str]:
    """CreateKey with one token on every connection at the same instant; each answer
    (a key id, or the error)."""
    results: list[str] = []
    start = threading.Barrier(len(connections))

    def create(connection: Connection) -> None:
        start.wait()
        try:
            response = connection.stub.CreateKey(
                pb.CreateKeyRequest(description=f"simultaneous {token}"),
                metadata=((TOKEN_KEY, token),),
                timeout=30,
            )
        except grpc.RpcError as error:
            results.append(f"{error.code()}: {_error_reason(error)}")  # type: ignore[attr-defined]
            return
        results.append(response.key_metadata.key_id)

    threads = [threading.Thread(target=create, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_simultaneous_retries_on_both_workers_act_once(workers_node) -> None:
    connections = workers_node.on_each_worker()
    for attempt in range(10):
        results = _create_everywhere_at_once(connections, f"simultaneous-{attempt}")
        assert len(results) == len(connections)
        assert len(set(results)) == 1, results
    keys = connections[0].stub.ListKeys(pb.ListKeysRequest(limit=1000)).keys
    made = [
        key
        for key in keys
        if connections[0]
        .stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id))
        .key_metadata.description.startswith("simultaneous")
    ]
    assert len(made) == 10


@pytest.mark.parametrize("ending", ["kill-a-worker", "sigterm", "kill-the-supervisor"])
def test_how_a_node_of_workers_ends(test_pki, tmp_path, ending: str) -> None:
    """A dead worker stops the node (exit 1); SIGTERM stops it cleanly (exit 0); a
    SIGKILLed supervisor takes its workers with it (none keeps serving the port)."""
    port = pick_port("127.0.0.1")
    config = _write_config(test_pki, tmp_path, port)
    log = tmp_path / "node.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "meridian", "node", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b'"workers": 2' not in log.read_bytes():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pids = _worker_pids(process.pid)
        assert len(pids) == WORKERS
        if ending == "kill-a-worker":
            os.kill(pids[1], signal.SIGKILL)
            assert process.wait(timeout=60) == 1
        elif ending == "sigterm":
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        else:
            process.kill()
            process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while not all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in pids):
            assert time.monotonic() < deadline, "a worker outlived its node"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
