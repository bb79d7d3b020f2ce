"""Multi-region keys across three real node processes (mTLS gRPC replication).

- create, replicate, encrypt in one region and decrypt in the others (SDK and CLI);
- kill -9 a replica while the primary keeps writing, restart it, watch it catch up;
- kill -9 the primary, force-promote a replica, bring the old primary back, check that it
  learned the higher epoch, stepped down and merged.

Waiting is deadline-based (``wait_for``): nothing here depends on timing to pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ClusterHandle
from meridian.cli import cluster
from meridian.client import KmsClient, KmsError, NotFoundException

pytestmark = pytest.mark.e2e

US, EU, AP = "us-east-1", "eu-west-1", "ap-south-1"
DEADLINE_S = 60.0


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except KmsError:
            pass  # a region restarting, a replica not there yet: ask again
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.1)


def client(handle: ClusterHandle, region: str | None = None) -> KmsClient:
    return KmsClient.from_cluster_file(handle.file, region=region, timeout_s=10.0)


def state_in(handle: ClusterHandle, region: str, key_id: str) -> str | None:
    with client(handle, region) as kms:
        try:
            return kms.describe_key(key_id=key_id).key_metadata.key_state
        except NotFoundException:
            return None


def caught_up(handle: ClusterHandle, regions: list[str]) -> bool:
    with client(handle) as kms:
        for region in regions:
            status = kms.get_replication_status(region=region, timeout_s=5.0)
            if any(peer.backlog_entries for peer in status.peers if peer.region in regions):
                return False
    return True


def meridian(*args: str, handle: ClusterHandle) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("meridian")
    return subprocess.run(
        [str(script), *args, "--cluster-file", str(handle.file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_replicate_and_decrypt_in_every_region(three_regions: ClusterHandle) -> None:
    handle = three_regions
    with client(handle) as kms:
        key = kms.create_key(multi_region=True, description="e2e").key_metadata
        assert key.key_id.startswith("mrk-")
        replica = kms.replicate_key(key_id=key.arn, replica_region=EU, description="replica")
        assert replica.replica_key_metadata.key_state == "Creating" and replica.region == US
    # The CLI, as an AWS CLI user would.
    created = meridian(
        "kms", "replicate-key", "--key-id", key.arn, "--replica-region", AP, handle=handle
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["ReplicaKeyMetadata"]["Arn"] == key.arn.replace(US, AP)
    for region in (EU, AP):
        wait_for(lambda region=region: state_in(handle, region, key.key_id) == "Enabled", region)
    for source in (US, EU, AP):
        with client(handle, source) as kms:
            sealed = kms.encrypt(key_id=key.key_id, plaintext=f"from {source}".encode())
        for target in (US, EU, AP):
            with client(handle, target) as kms:
                opened = kms.decrypt(ciphertext_blob=sealed.ciphertext_blob)
            assert opened.plaintext == f"from {source}".encode() and opened.region == target
    wait_for(lambda: caught_up(handle, [US, EU, AP]), "the logs to drain")
    status = meridian("replication", "status", "--json", handle=handle)
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert set(document) == {US, EU, AP}
    for region, view in document.items():
        assert {peer["region"] for peer in view["peers"]} == {US, EU, AP} - {region}
        assert all(peer["backlog_entries"] == 0 for peer in view["peers"])
        assert all(peer["connection_state"] == "connected" for peer in view["peers"])


def test_a_replica_killed_while_the_primary_writes_catches_up(
    three_regions: ClusterHandle, record_property: Callable[[str, object], None]
) -> None:
    handle = three_regions
    written: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        with client(handle, US) as kms:
            while not stop.is_set():
                try:
                    key_id = kms.create_key(multi_region=True).key_metadata.key_id
                    kms.replicate_key(key_id=key_id, replica_region=EU)
                    blob = kms.encrypt(key_id=key_id, plaintext=b"written").ciphertext_blob
                except BaseException as error:  # surfaced by the assertion below
                    errors.append(error)
                    return
                written.append((key_id, blob))
                if len(written) >= 50:
                    return

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(written) >= 10, "the primary to write")
    cluster.kill(handle.directory, EU)  # SIGKILL while the primary writes
    try:
        thread.join(timeout=120)
        stop.set()
        assert not errors, errors
        assert len(written) == 50
        with client(handle) as kms:
            head = kms.get_replication_status(region=US).head_seq
            behind = {p.region: p for p in kms.get_replication_status(region=US).peers}[EU]
        assert behind.backlog_entries > 0
    finally:
        stop.set()
        cluster.start(handle.directory, EU)  # the next tests need every region
    started = time.monotonic()

    def applied() -> bool:
        with client(handle) as kms:
            peer = {p.region: p for p in kms.get_replication_status(region=US).peers}[EU]
            return peer.acked_seq >= head

    catch_up_s = wait_for(applied, "the restarted replica to catch up")
    entries = head - behind.acked_seq
    rate = entries / max(catch_up_s, 1e-3)
    record_property("catch_up_entries", entries)
    record_property("catch_up_s", round(catch_up_s, 3))
    # Includes the primary's wait for its next retry (backoff); scripts/measure-catch-up
    # measures the apply rate itself.
    print(f"\ncatch-up: {entries} entries in {catch_up_s:.2f} s after restart ({rate:.0f}/s)")
    for key_id, _ in written:
        wait_for(lambda key_id=key_id: state_in(handle, EU, key_id) == "Enabled", key_id)
    with client(handle, EU) as kms:
        for _, blob in written:
            assert kms.decrypt(ciphertext_blob=blob).plaintext == b"written"
    assert time.monotonic() - started < DEADLINE_S


def test_force_promotion_while_the_primary_is_down_then_merge(three_regions: ClusterHandle) -> None:
    handle = three_regions
    with client(handle, US) as kms:
        key_id = kms.create_key(multi_region=True).key_metadata.key_id
        kms.replicate_key(key_id=key_id, replica_region=EU)
        kms.replicate_key(key_id=key_id, replica_region=AP)
    for region in (EU, AP):
        wait_for(lambda region=region: state_in(handle, region, key_id) == "Enabled", region)
    with client(handle, US) as kms:
        before = kms.encrypt(key_id=key_id, plaintext=b"before").ciphertext_blob
    wait_for(lambda: caught_up(handle, [US, EU, AP]), "the logs to drain")

    cluster.kill(handle.directory, US)  # the primary's region is lost
    forced = meridian(
        "kms",
        "update-primary-region",
        "--key-id",
        key_id,
        "--primary-region",
        EU,
        "--force",
        handle=handle,
    )
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["Region"] == EU
    with client(handle, EU) as kms:
        configuration = kms.describe_key(key_id=key_id).key_metadata.multi_region_configuration
        assert configuration is not None and configuration.multi_region_key_type == "PRIMARY"
        during = kms.encrypt(key_id=key_id, plaintext=b"during").ciphertext_blob
    wait_for(
        lambda: _primary_in(handle, AP, key_id) == EU, "the other replica to follow the new primary"
    )

    cluster.start(handle.directory, US)  # the old primary comes back
    wait_for(lambda: _primary_in(handle, US, key_id) == EU, "the old primary to step down")
    wait_for(lambda: caught_up(handle, [US, EU, AP]), "the merge")
    with client(handle, US) as kms:
        metadata = kms.describe_key(key_id=key_id).key_metadata
        assert metadata.key_state == "Enabled"
        assert metadata.multi_region_configuration is not None
        assert metadata.multi_region_configuration.multi_region_key_type == "REPLICA"
    for region in (US, EU, AP):
        with client(handle, region) as kms:
            assert kms.decrypt(ciphertext_blob=before).plaintext == b"before"
            assert kms.decrypt(ciphertext_blob=during).plaintext == b"during"
    # The old primary refuses shared-property changes now; the new primary accepts them.
    refused = meridian(
        "kms",
        "replicate-key",
        "--key-id",
        key_id,
        "--replica-region",
        AP,
        "--region",
        US,
        handle=handle,
    )
    assert refused.returncode == 254 and "UnsupportedOperationException" in refused.stderr


def _primary_in(handle: ClusterHandle, region: str, key_id: str) -> str | None:
    with client(handle, region) as kms:
        configuration = kms.describe_key(key_id=key_id).key_metadata.multi_region_configuration
    return None if configuration is None else configuration.primary_key.region  # type: ignore[union-attr]


def _rotations(handle: ClusterHandle, region: str, key_id: str) -> list[tuple[str, str]]:
    listed = meridian(
        "kms", "list-key-rotations", "--key-id", key_id, "--region", region, handle=handle
    )
    assert listed.returncode == 0, listed.stderr
    return [
        (entry["KeyMaterialId"], entry["RotationType"])
        for entry in json.loads(listed.stdout)["Rotations"]
    ]


def test_rotating_a_multi_region_key_from_the_cli(three_regions: ClusterHandle) -> None:
    """Issue 8: on-demand rotation of an MRK goes through the two-phase path, end to end."""
    handle = three_regions
    with client(handle) as kms:
        key = kms.create_key(multi_region=True, description="rotated").key_metadata
        for region in (EU, AP):
            kms.replicate_key(key_id=key.arn, replica_region=region)
    for region in (EU, AP):
        wait_for(lambda region=region: state_in(handle, region, key.key_id) == "Enabled", region)
    with client(handle, EU) as kms:
        before = kms.encrypt(key_id=key.key_id, plaintext=b"before").ciphertext_blob
        old_material = kms.decrypt(ciphertext_blob=before).key_material_id

    # At a replica the AWS answer is UnsupportedOperationException; nothing changes.
    refused = meridian(
        "kms", "rotate-key-on-demand", "--key-id", key.key_id, "--region", EU, handle=handle
    )
    assert refused.returncode != 0 and "UnsupportedOperationException" in refused.stderr

    rotated = meridian(
        "kms", "rotate-key-on-demand", "--key-id", key.arn, "--region", US, handle=handle
    )
    assert rotated.returncode == 0, rotated.stderr
    # The rotation completes once every replica holds the new material; then every region
    # lists the same rotation and encrypts under the new material.
    wait_for(lambda: len(_rotations(handle, US, key.key_id)) == 1, "the rotation to complete")
    listed = _rotations(handle, US, key.key_id)
    assert listed[0][1] == "ON_DEMAND" and listed[0][0] != old_material
    for region in (EU, AP):
        wait_for(
            lambda region=region: _rotations(handle, region, key.key_id) == listed,
            f"{region} to list the rotation",
        )
    for source in (US, EU, AP):
        with client(handle, source) as kms:
            sealed = kms.encrypt(key_id=key.key_id, plaintext=source.encode()).ciphertext_blob
        for target in (US, EU, AP):
            with client(handle, target) as kms:
                opened = kms.decrypt(ciphertext_blob=sealed)
                assert opened.plaintext == source.encode()
                assert opened.key_material_id == listed[0][0]
                old = kms.decrypt(ciphertext_blob=before)
                assert old.plaintext == b"before" and old.key_material_id == old_material
