"""Real node processes with their root key in SoftHSM2 (issue 11).

- a cluster region on SoftHSM2 serves keys and survives SIGKILL with the same token;
- `meridian node rewrap-root --from file --to pkcs11` moves a live region's material
  into the token while the node serves; the job is SIGKILLed half-way, resumed, verified,
  and the region then runs without its key file;
- a node whose PIN is wrong refuses to start and says so; `meridian hsm check` reports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tomli_w

from meridian.cli import cluster
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
CLI_TIMEOUT_S = 120
CONTEXT = {"drill": "hsm"}
PKCS11_HEADER = b"\x01\x02"


@pytest.fixture
def cluster_dir(tmp_path: Path, softhsm) -> Iterator[Path]:
    del softhsm  # only for its skip when SoftHSM2 is missing
    directory = tmp_path / "cluster"
    yield directory
    if (directory / "cluster.json").exists():
        with contextlib.suppress(cluster.ClusterError):
            cluster.down(directory, stop_timeout_s=5)


def meridian(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "meridian", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@contextlib.contextmanager
def kms(directory: Path, region: str = REGION) -> Iterator[kms_pb2_grpc.KeyManagementServiceStub]:
    spec = cluster.load(directory)
    entry = spec.regions[region]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec.ca_cert.read_bytes(),
        private_key=spec.client_key.read_bytes(),
        certificate_chain=spec.client_cert.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", entry.server_name)]
    with grpc.secure_channel(entry.endpoint, credentials, options=options) as channel:
        yield kms_pb2_grpc.KeyManagementServiceStub(channel)


def create_keys(directory: Path, count: int) -> list[tuple[bytes, bytes]]:
    """`count` keys, one ciphertext under each."""
    ciphertexts = []
    with kms(directory) as stub:
        for number in range(count):
            key_id = stub.CreateKey(pb.CreateKeyRequest()).key_metadata.key_id
            plaintext = f"secret {number}".encode()
            blob = stub.Encrypt(
                pb.EncryptRequest(key_id=key_id, plaintext=plaintext, encryption_context=CONTEXT)
            ).ciphertext_blob
            ciphertexts.append((blob, plaintext))
    return ciphertexts


def decrypt_all(directory: Path, ciphertexts: list[tuple[bytes, bytes]]) -> None:
    with kms(directory) as stub:
        for blob, plaintext in ciphertexts:
            response = stub.Decrypt(
                pb.DecryptRequest(ciphertext_blob=blob, encryption_context=CONTEXT), timeout=10
            )
            assert response.plaintext == plaintext


def up(directory: Path, *, hsm: bool) -> cluster.ClusterSpec:
    """`meridian cluster up` in a process of its own.

    `up` opens every region's root key to install the AWS endpoint's access key; with an
    HSM region that would load SoftHSM2 into this test process under the cluster's
    configuration, and a process loads a PKCS#11 module only once (the in-process HSM
    tests need the session's).
    """
    arguments = ["cluster", "up", "--regions", REGION, "--dir", str(directory)]
    arguments += ["--network", "direct"] + (["--hsm-region", REGION] if hsm else [])
    meridian(*arguments)
    return cluster.load(directory)


def material_headers(database: Path) -> dict[bytes, int]:
    """How many key versions are under each provider (read-only; the node keeps writing)."""
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT substr(wrapped_material, 1, 2), COUNT(*) FROM key_versions GROUP BY 1"
        ).fetchall()
    return {bytes(header): count for header, count in rows}


def test_a_region_on_softhsm2_survives_sigkill(cluster_dir: Path) -> None:
    spec = up(cluster_dir, hsm=True)
    entry = spec.regions[REGION]
    config = tomllib.loads(entry.config.read_text())
    assert config["root_key"]["provider"] == "pkcs11"
    assert "previous" not in config["root_key"]
    ciphertexts = create_keys(cluster_dir, 3)
    assert not (entry.data_dir / "root.key").exists()
    assert material_headers(entry.data_dir / "meridian.sqlite3") == {PKCS11_HEADER: 3}

    cluster.kill(cluster_dir, REGION)
    cluster.start(cluster_dir, REGION)
    decrypt_all(cluster_dir, ciphertexts)

    checked = meridian("hsm", "check", "--config", str(entry.config))
    assert "node uses:  aes-gcm" in checked.stdout
    assert f"token:      '{REGION}'" in checked.stdout


def test_rewrap_root_is_online_crash_safe_and_verified(cluster_dir: Path) -> None:
    keys = 120
    spec = up(cluster_dir, hsm=False)
    entry = spec.regions[REGION]
    database = entry.data_dir / "meridian.sqlite3"
    ciphertexts = create_keys(cluster_dir, keys)
    assert material_headers(database) == {b"\x01\x01": keys}

    # The region gets a token; its config now names the HSM first and the key file as
    # the previous root key. One restart, then the node serves both kinds of rows.
    cluster.down(cluster_dir)
    spec = up(cluster_dir, hsm=True)
    config = tomllib.loads(entry.config.read_text())
    assert config["root_key"]["provider"] == "pkcs11"
    assert config["root_key"]["previous"] == {"provider": "file", "path": "root.key"}

    command = [sys.executable, "-m", "meridian", "node", "rewrap-root", "--config",
               str(entry.config), "--from", "file", "--to", "pkcs11", "--batch-size", "4",
               "--pause-ms", "50"]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while material_headers(database).get(PKCS11_HEADER, 0) < 12:
            assert job.poll() is None, job.stdout.read() if job.stdout else ""
            assert time.monotonic() < deadline, "the migration made no progress"
            time.sleep(0.01)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        if job.stdout:
            job.stdout.close()
    assert job.returncode == -signal.SIGKILL
    headers = material_headers(database)
    # Killed half-way: whole batches moved, the rest untouched, nothing else.
    assert set(headers) == {b"\x01\x01", PKCS11_HEADER}
    assert sum(headers.values()) == keys
    assert headers[PKCS11_HEADER] % 4 == 0

    # The node serves every key through the half-done migration.
    decrypt_all(cluster_dir, ciphertexts)
    with kms(cluster_dir) as stub:
        new_key = stub.CreateKey(pb.CreateKeyRequest()).key_metadata.key_id
        ciphertexts.append(
            (
                stub.Encrypt(
                    pb.EncryptRequest(key_id=new_key, plaintext=b"new", encryption_context=CONTEXT)
                ).ciphertext_blob,
                b"new",
            )
        )

    resumed = meridian(*command[3:])
    assert "done: everything stored is under the pkcs11 root key" in resumed.stdout
    assert material_headers(database) == {PKCS11_HEADER: keys + 1}
    verified = meridian(*command[3:11], "--verify-only")
    assert "0 remain under file" in verified.stdout

    # Without the key file, the region restarts on the HSM alone and serves everything.
    (entry.data_dir / "root.key").rename(cluster_dir / "root.key.retired")
    cluster.down(cluster_dir)
    spec = up(cluster_dir, hsm=False)
    assert "previous" not in tomllib.loads(entry.config.read_text())["root_key"]
    decrypt_all(cluster_dir, ciphertexts)


def test_rewrap_root_refuses_a_config_without_both_root_keys(tmp_path: Path, softhsm) -> None:
    del softhsm
    config = tmp_path / "node.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "region": REGION,
                "listen": "127.0.0.1:0",
                "data_dir": "data",
                "tls": {"ca_cert": "ca.pem", "cert": "n.pem", "key": "n.key"},
            }
        )
    )
    result = meridian(
        "node", "rewrap-root", "--config", str(config), "--from", "file", "--to", "pkcs11",
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "[root_key.previous]" in result.stderr


def test_node_with_a_wrong_pin_refuses_to_start(tmp_path: Path, softhsm, test_pki) -> None:
    del softhsm
    hsm_dir = tmp_path / "hsm"
    init = meridian("hsm", "init", "--dir", str(hsm_dir), "--token-label", "pin-drill")
    assert "root key 'meridian-root-key' generated" in init.stdout
    wrong_pin = tmp_path / "wrong.pin"
    wrong_pin.write_text("not-the-pin\n")
    wrong_pin.chmod(0o600)
    root_key = tomllib.loads(init.stdout.split("# the node config's root key:")[1])["root_key"]
    root_key["pin_file"] = str(wrong_pin)
    config = tmp_path / "node.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "region": REGION,
                "listen": "127.0.0.1:0",
                "data_dir": "data",
                "tls": {
                    "ca_cert": str(test_pki.directory / "ca.pem"),
                    "cert": str(test_pki.node_cert),
                    "key": str(test_pki.node_key),
                },
                "root_key": root_key,
            }
        )
    )
    environment = dict(os.environ)
    environment.pop("SOFTHSM2_CONF", None)
    result = subprocess.run(
        [sys.executable, "-m", "meridian", "node", "--config", str(config)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=environment, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "token 'pin-drill' refused the PIN (wrong PIN)" in result.stderr
    assert "not-the-pin" not in result.stderr
