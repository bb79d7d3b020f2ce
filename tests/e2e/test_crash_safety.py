"""DESIGN.md §7.2: no acknowledged write is lost when the node is SIGKILLed at any instant.

Each round makes acknowledged changes (CreateKey, CreateAlias, ScheduleKeyDeletion,
Encrypt), kills the node with SIGKILL right after the last acknowledgement, restarts it
on the same data, and checks that everything acknowledged is there and every old
ciphertext still decrypts. A second test kills the node while a writer is mid-stream.
"""

from __future__ import annotations

import random
import threading
import time

import grpc
import pytest

from meridian.cli import cluster
from meridian.proto.kms.v1 import kms_pb2 as pb

pytestmark = pytest.mark.e2e
REGION = "us-east-1"


def _restart(single_region) -> None:
    cluster.kill(single_region.directory, REGION)
    cluster.start(single_region.directory, REGION)


def test_acknowledged_changes_survive_sigkill(single_region) -> None:
    keys: dict[str, str] = {}  # key id -> state we were told
    aliases: dict[str, str] = {}  # alias -> key id
    ciphertexts: list[tuple[bytes, bytes, dict[str, str]]] = []
    for round_number in range(4):
        channel, stub = single_region.stub(REGION)
        with channel:
            key_id = stub.CreateKey(
                pb.CreateKeyRequest(description=f"round {round_number}")
            ).key_metadata.key_id
            keys[key_id] = "Enabled"
            context = {"round": str(round_number)}
            plaintext = f"secret {round_number}".encode()
            blob = stub.Encrypt(
                pb.EncryptRequest(key_id=key_id, plaintext=plaintext, encryption_context=context)
            )
            ciphertexts.append((blob.ciphertext_blob, plaintext, context))
            alias = f"alias/round-{round_number}"
            stub.CreateAlias(pb.CreateAliasRequest(alias_name=alias, target_key_id=key_id))
            aliases[alias] = key_id
            if round_number % 2 == 1:
                stub.ScheduleKeyDeletion(
                    pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
                )
                keys[key_id] = "PendingDeletion"
        _restart(single_region)  # SIGKILL right after the last acknowledgement

        channel, stub = single_region.stub(REGION)
        with channel:
            for known_key, state in keys.items():
                described = stub.DescribeKey(pb.DescribeKeyRequest(key_id=known_key), timeout=10)
                assert described.key_metadata.key_state == state
            listed = {
                a.alias_name: a.target_key_id
                for a in stub.ListAliases(pb.ListAliasesRequest(limit=1000)).aliases
            }
            for alias, target in aliases.items():
                assert listed.get(alias) == target
            for blob, plaintext, context in ciphertexts:
                try:
                    decrypted = stub.Decrypt(
                        pb.DecryptRequest(ciphertext_blob=blob, encryption_context=context)
                    )
                    assert decrypted.plaintext == plaintext
                except grpc.RpcError as error:
                    # Keys pending deletion refuse crypto, as in AWS; their ciphertexts are kept.
                    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_writer_killed_mid_stream_loses_no_acknowledged_key(single_region) -> None:
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        channel, stub = single_region.stub(REGION)
        with channel:
            while not stop.is_set():
                try:
                    created = stub.CreateKey(pb.CreateKeyRequest(description="stream"), timeout=5)
                except grpc.RpcError:
                    return  # the node is gone; every earlier answer was an acknowledgement
                acknowledged.append(created.key_metadata.key_id)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(random.uniform(0.5, 1.5))
    cluster.kill(single_region.directory, REGION)
    stop.set()
    thread.join(timeout=30)
    assert acknowledged, "the writer made no progress before the kill"
    cluster.start(single_region.directory, REGION)
    channel, stub = single_region.stub(REGION)
    with channel:
        stored: set[str] = set()
        marker = ""
        while True:
            page = stub.ListKeys(pb.ListKeysRequest(limit=1000, marker=marker))
            stored.update(entry.key_id for entry in page.keys)
            if not page.truncated:
                break
            marker = page.next_marker
    missing = [key_id for key_id in acknowledged if key_id not in stored]
    assert missing == [], f"{len(missing)} acknowledged keys lost of {len(acknowledged)}"
