"""The audit trail with real node processes (issue 7's end-to-end tests).

- Tampering with the SQLite file (edit, delete, reorder, truncate, replace a digest)
  is caught by `meridian audit verify`, which names the place and exits non-zero; an
  untouched trail verifies.
- A region that rewrites its own history consistently (records, digests and head
  together) is still caught, by the digests another region holds.
- SIGKILL under load: every response a client received has its record after restart.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import ClusterHandle
from meridian.cli import cluster
from meridian.cli.audit_sources import FileSource
from meridian.cli.main import main
from meridian.proto.audit.v1 import audit_pb2 as apb
from meridian.proto.audit.v1 import audit_pb2_grpc
from meridian.proto.kms.v1 import kms_pb2 as pb

pytestmark = pytest.mark.e2e
EAST, WEST = "us-east-1", "eu-west-1"
MERIDIAN = str(Path(sys.executable).parent / "meridian")


@pytest.fixture(scope="module")
def two_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    directory = tmp_path_factory.mktemp("audit-cluster")
    cluster.up(directory, [EAST, WEST])
    try:
        yield ClusterHandle(directory)
    finally:
        cluster.down(directory)


def _work(handle: ClusterHandle, region: str, rounds: int) -> str:
    channel, stub = handle.stub(region)
    with channel:
        arn = stub.CreateKey(pb.CreateKeyRequest(description="audited")).key_metadata.arn
        for n in range(rounds):
            blob = stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=f"m{n}".encode()))
            stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob.ciphertext_blob))
    return str(arn)


def _cli(*args: str) -> tuple[int, str]:
    """Run the real `meridian` command; returns (exit code, stdout + stderr)."""
    done = subprocess.run(
        [MERIDIAN, *args], capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, done.stdout + done.stderr


def _audit_stub(
    handle: ClusterHandle, region: str
) -> tuple[grpc.Channel, audit_pb2_grpc.AuditStub]:
    channel, _ = handle.stub(region)
    return channel, audit_pb2_grpc.AuditStub(channel)


def _wait_for_peer_digests(handle: ClusterHandle, holder: str, origin: str, number: int) -> None:
    deadline = time.monotonic() + 30
    channel, stub = _audit_stub(handle, holder)
    with channel:
        while True:
            page = stub.ListAuditDigests(apb.ListAuditDigestsRequest(origin_region=origin))
            if page.digests and page.digests[-1].number >= number:
                return
            assert time.monotonic() < deadline, f"{holder} never received {origin}'s digests"
            time.sleep(0.1)


# ---- tampering with the file -------------------------------------------------------------


TAMPERING = {
    "edit": (
        "UPDATE audit_records SET body = replace(body, '\"Decrypt\"', '\"Encrypt\"') "
        "WHERE seq = (SELECT seq FROM audit_records WHERE event_name = 'Decrypt' "
        "ORDER BY seq LIMIT 1)"
    ),
    "delete": "DELETE FROM audit_records WHERE seq = 5",
    "reorder": (
        "UPDATE audit_records SET seq = CASE seq WHEN 6 THEN -7 WHEN 7 THEN -6 END "
        "WHERE seq IN (6, 7); UPDATE audit_records SET seq = -seq WHERE seq < 0"
    ),
    "truncate": "DELETE FROM audit_records WHERE seq > (SELECT MAX(seq) - 3 FROM audit_records)",
    "digest": "UPDATE audit_digests SET body = replace(body, '\"recordCount\":', "
    "'\"recordCount\": ') WHERE number = 1",
    "signature": "UPDATE audit_digests SET signature = zeroblob(3309) WHERE number = 1",
}
EXPECTED = {
    "edit": "BROKEN at record",
    "delete": "BROKEN at record 5",
    "reorder": "BROKEN at record 6",
    "truncate": "tail truncated",
    "digest": "BROKEN at digest 1",
    "signature": "BROKEN at digest 1",
}


def test_tampering_with_the_file_is_caught(two_regions: ClusterHandle, tmp_path: Path) -> None:
    _work(two_regions, EAST, rounds=4)
    code, output = _cli("audit", "seal", "--cluster-file", str(two_regions.file), "--region", EAST)
    assert code == 0, output
    _work(two_regions, EAST, rounds=2)
    code, output = _cli(
        "audit", "verify", "--cluster-file", str(two_regions.file), "--region", EAST
    )
    assert code == 0, output
    assert "OK: the trail is complete and unaltered" in output

    # A copy of the live file (WAL included) is what an attacker with disk access edits.
    data_dir = Path(two_regions.region(EAST)["data_dir"])
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    _consistent_copy(data_dir / "meridian.sqlite3", pristine / "meridian.sqlite3")
    code, output = _cli("audit", "verify", "--database", str(pristine / "meridian.sqlite3"))
    assert code == 0, output

    for name, sql in TAMPERING.items():
        copy = tmp_path / name / "meridian.sqlite3"
        copy.parent.mkdir()
        shutil.copy(pristine / "meridian.sqlite3", copy)
        with sqlite3.connect(copy) as connection:
            connection.executescript(sql)
        code, output = _cli("audit", "verify", "--database", str(copy))
        assert code == 1, f"{name}: {output}"
        assert EXPECTED[name] in output, f"{name}: {output}"


def _consistent_copy(source: Path, target: Path) -> None:
    with (
        sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True) as live,
        sqlite3.connect(target) as copy,
    ):
        live.backup(copy)


# ---- a whole region rewriting its history ----------------------------------------------


def test_a_region_rewriting_its_history_is_caught_by_its_peers(two_regions: ClusterHandle) -> None:
    _work(two_regions, EAST, rounds=3)
    channel, stub = _audit_stub(two_regions, EAST)
    with channel:
        sealed = stub.SealAuditDigest(apb.SealAuditDigestRequest())
    _wait_for_peer_digests(two_regions, WEST, EAST, sealed.digest.number)
    code, output = _cli(
        "audit", "verify", "--cluster-file", str(two_regions.file), "--region", EAST
    )
    assert code == 0, output
    assert f"peer {WEST}: holds" in output

    # East's administrator stops the node and removes the last digest and everything it
    # covers, resetting the head so that the file is consistent on its own.
    cluster.kill(two_regions.directory, EAST)
    database = Path(two_regions.region(EAST)["data_dir"]) / "meridian.sqlite3"
    with sqlite3.connect(database) as connection:
        last = connection.execute("SELECT MAX(number) FROM audit_digests").fetchone()[0]
        first_seq = json.loads(
            connection.execute(
                "SELECT body FROM audit_digests WHERE number = ?", (last,)
            ).fetchone()[0]
        )["firstSeq"]
        keep = connection.execute(
            "SELECT seq, hash FROM audit_records WHERE seq = ?", (first_seq - 1,)
        ).fetchone()
        connection.execute("DELETE FROM audit_records WHERE seq >= ?", (first_seq,))
        connection.execute("DELETE FROM audit_digests WHERE number = ?", (last,))
        connection.execute("UPDATE audit_state SET head_seq = ?, head_hash = ?", (keep[0], keep[1]))
    code, output = _cli("audit", "verify", "--database", str(database))
    assert code == 0, output  # on its own, the rewritten file is consistent
    cluster.start(two_regions.directory, EAST)
    code, output = _cli(
        "audit", "verify", "--cluster-file", str(two_regions.file), "--region", EAST
    )
    assert code == 1, output
    assert f"digest {last} is held by {WEST} but missing here" in output


# ---- SIGKILL under load --------------------------------------------------------------------


def test_every_acknowledged_request_has_its_record_after_sigkill(
    two_regions: ClusterHandle,
) -> None:
    arn = _work(two_regions, WEST, rounds=1)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        channel, stub = two_regions.stub(WEST)
        with channel:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if n % 5 == 0:
                        _, call = stub.CreateKey.with_call(pb.CreateKeyRequest(), timeout=5)
                    else:
                        _, call = stub.Encrypt.with_call(
                            pb.EncryptRequest(key_id=arn, plaintext=b"load"), timeout=5
                        )
                except grpc.RpcError:
                    return  # the node is gone; every earlier answer was acknowledged
                request_id = dict(call.trailing_metadata())["x-request-id"]
                with lock:
                    acknowledged.append(request_id)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.8, 1.6))
    cluster.kill(two_regions.directory, WEST)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acknowledged) > 20, "the load made too little progress before the kill"

    cluster.start(two_regions.directory, WEST)
    source = FileSource.from_data_dir(Path(two_regions.region(WEST)["data_dir"]))
    try:
        recorded = {record.columns.request_id for record in source.records()}
    finally:
        source.close()
    missing = [request_id for request_id in acknowledged if request_id not in recorded]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged calls lack a record"
    code, output = _cli(
        "audit", "verify", "--cluster-file", str(two_regions.file), "--region", WEST
    )
    assert code == 0, output


def test_query_answers_who_used_a_key(
    two_regions: ClusterHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    arn = _work(two_regions, EAST, rounds=2)
    code = main(
        [
            "audit", "query", "--cluster-file", str(two_regions.file), "--region", EAST,
            "--key-id", arn, "--operation", "Decrypt", "--start-time", "1d", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert {line["eventName"] for line in lines} == {"Decrypt"}
    assert {line["userIdentity"]["userName"] for line in lines} == {"admin"}
    assert all(line["resources"][0]["ARN"] == arn for line in lines)
    assert all(line["meridianChain"]["seq"] > 0 for line in lines)


def test_export_public_key_and_usage_report(
    two_regions: ClusterHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arn = _work(two_regions, WEST, rounds=3)
    cluster_file = str(two_regions.file)
    out = tmp_path / "west.jsonl"
    assert main(["audit", "export", "--cluster-file", cluster_file, "--region", WEST,
                 "--key-id", arn, "--out", str(out)]) == 0  # fmt: skip
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["eventName"] for line in exported].count("Encrypt") == 3
    assert all(line["awsRegion"] == WEST for line in exported)

    assert main(["audit", "seal", "--cluster-file", cluster_file, "--region", WEST]) == 0
    pem = tmp_path / "west.pem"
    assert main(["audit", "public-key", "--cluster-file", cluster_file, "--region", WEST,
                 "--out", str(pem)]) == 0  # fmt: skip
    capsys.readouterr()
    # Verifying with the pinned key, and with another region's key (which must fail).
    assert main(["audit", "verify", "--cluster-file", cluster_file, "--region", WEST,
                 "--public-key", str(pem)]) == 0  # fmt: skip
    _work(two_regions, EAST, rounds=1)
    assert main(["audit", "seal", "--cluster-file", cluster_file, "--region", EAST]) == 0
    other = tmp_path / "east.pem"
    assert main(["audit", "public-key", "--cluster-file", cluster_file, "--region", EAST,
                 "--out", str(other)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["audit", "verify", "--cluster-file", cluster_file, "--region", WEST,
                 "--public-key", str(other)]) == 1  # fmt: skip
    assert "not trusted" in capsys.readouterr().out

    assert main(["usage", "report", "--cluster-file", cluster_file, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_key = {entry["KeyArn"]: entry for entry in report["TopKeys"]}
    assert by_key[arn]["RequestsByOperation"]["Encrypt"] == 3
    assert by_key[arn]["KeyLastUsage"]["Operation"] == "Decrypt"
    regions = {row["Region"] for row in report["RequestsByRegionAndOperation"]}
    assert regions == {EAST, WEST}
    assert report["TotalCost"] > 0
    assert main(["usage", "report", "--cluster-file", cluster_file]) == 0
    assert "Top 10 keys by requests" in capsys.readouterr().out
