"""`meridian node seed-keys` (server/seeding.py): bulk keys a node then serves like its own."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

import conftest
from conftest import ACCOUNT, REGION, node_config, secure_channel
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.config import NodeConfig
from meridian.server.data_dir_lock import DataDirBusy, DataDirLock
from meridian.server.domain.clock import FakeClock
from meridian.server.node import Node, NodeStartError
from meridian.server.seeding import CiphertextSample, SeedOptions, seed_keys

KEYS = 200


def _write_config(path: Path, config: NodeConfig) -> Path:
    path.write_text(
        f'region = "{REGION}"\n'
        f'account_id = "{ACCOUNT}"\n'
        'listen = "127.0.0.1:0"\n'
        f'data_dir = "{config.data_dir}"\n'
        "[tls]\n"
        f'ca_cert = "{config.tls.ca_cert}"\n'
        f'cert = "{config.tls.cert}"\n'
        f'key = "{config.tls.key}"\n'
    )
    return path


def _audit_events(database: Path, name: str) -> list[str]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT body FROM audit_records WHERE event_name = ? ORDER BY seq", (name,)
        ).fetchall()
    return [row[0] for row in rows]


async def test_seeded_keys_are_listed_described_and_usable(
    test_pki: conftest.TestPki, tmp_path: Path
) -> None:
    config = node_config(test_pki, tmp_path / "data")
    seeded_ids: list[str] = []
    report = await seed_keys(
        config,
        SeedOptions(
            count=KEYS,
            description="seeded",
            batch_keys=64,  # several batches, the last one partial
            sample=CiphertextSample(every_keys=50, plaintext=b"a data key"),
            key_ids=seeded_ids.extend,
        ),
        clock=FakeClock(),
    )
    assert report.keys_seeded == KEYS
    assert len(set(seeded_ids)) == KEYS
    assert [key_id for key_id, _ in report.ciphertexts] == [
        key_id for key_id, _ in report.ciphertexts if key_id in seeded_ids
    ]
    assert len(report.ciphertexts) == KEYS // 50

    node = Node(config=config, clock=FakeClock())
    port = await node.start()
    channel = secure_channel(test_pki, f"127.0.0.1:{port}")
    try:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        listed: list[str] = []
        marker = ""
        while True:
            page = await stub.ListKeys(pb.ListKeysRequest(limit=90, marker=marker))
            listed += [entry.key_id for entry in page.keys]
            if not page.truncated:
                break
            marker = page.next_marker
        assert sorted(listed) == sorted(seeded_ids)

        key_id = seeded_ids[KEYS // 2]
        metadata = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))).key_metadata
        assert (metadata.key_state, metadata.key_spec, metadata.description) == (
            "Enabled",
            "SYMMETRIC_DEFAULT",
            "seeded",
        )
        sealed = await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"hello"))
        opened = await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob))
        assert (opened.plaintext, opened.key_id) == (b"hello", metadata.arn)
        # A blob sealed while seeding opens with the material the node unwraps.
        sample_key, blob = report.ciphertexts[-1]
        opened = await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))
        assert opened.plaintext == b"a data key"
        assert opened.key_id.endswith(sample_key)
    finally:
        await channel.close()
        await node.stop()

    (event,) = _audit_events(config.database_path, "SeedKeys")
    assert '"keysSeeded":200' in event.replace(" ", "")
    # Seeded keys are not API calls: no per-key records.
    assert _audit_events(config.database_path, "CreateKey") == []


async def test_seeding_is_refused_while_the_node_runs(
    test_pki: conftest.TestPki, tmp_path: Path
) -> None:
    config = node_config(test_pki, tmp_path / "data")
    config_file = _write_config(tmp_path / "node.toml", config)
    node = Node(config=config, clock=FakeClock())
    await node.start()
    try:
        with pytest.raises(DataDirBusy, match="in use by a node"):
            await seed_keys(config, SeedOptions(count=5))
        code, _, err = await _seed_command(config_file, 5)
        assert code == 1
        assert "stop the node first" in err
    finally:
        await node.stop()
    code, out, _ = await _seed_command(config_file, 5)
    assert code == 0
    assert "seeded 5 SYMMETRIC_DEFAULT keys" in out


async def test_a_node_does_not_start_while_a_tool_holds_its_data_dir(
    test_pki: conftest.TestPki, tmp_path: Path
) -> None:
    config = node_config(test_pki, tmp_path / "data")
    lock = DataDirLock.acquire(config.data_dir, role="seed-keys")
    try:
        with pytest.raises(NodeStartError, match="in use by a seed-keys"):
            await Node(config=config, clock=FakeClock()).start()
    finally:
        lock.release()


async def test_bad_options_are_refused_before_anything_is_written(
    test_pki: conftest.TestPki, tmp_path: Path
) -> None:
    config = node_config(test_pki, tmp_path / "data")
    for options in (SeedOptions(count=0), SeedOptions(count=1, batch_keys=0)):
        with pytest.raises(ValueError, match="must be 1 to"):
            await seed_keys(config, options)
    assert not config.database_path.exists()


async def _seed_command(config_file: Path, count: int) -> tuple[int, str, str]:
    """`meridian node seed-keys` in its own process, as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meridian",
        "node",
        "seed-keys",
        "--config",
        str(config_file),
        "--count",
        str(count),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
