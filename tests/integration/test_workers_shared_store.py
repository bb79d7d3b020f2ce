"""Two worker nodes on one data directory, in-process (server/workers.py).

Each worker is a complete ``Node`` with its ``WorkerRole``; here each listens on a
port of its own, so a test chooses exactly which worker serves each call (the real
supervisor puts them on one port: tests/e2e/test_workers.py). What must hold across
workers: a change acknowledged by one is seen by the next call on the other, whatever
it had cached; the audit trail is one chain that verifies, whoever sealed; an
idempotency token acts once, whichever worker the retries reach.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from audit_support import all_records, audit_stub, request_id_of, verify_file
from key_type_support import import_material

from conftest import (
    RunningNode,
    expect_error,
    node_config,
    principal_arn,
    secure_channel,
)
from meridian.proto.audit.v1 import audit_pb2 as apb
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.domain.clock import FakeClock
from meridian.server.node import Node
from meridian.server.storage.commit_counter import SharedCommitCounter
from meridian.server.worker_role import WorkerRole

TOKEN_KEY = "x-meridian-idempotency-token"
ALLOW_ENCRYPT = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
    '"Action": ["kms:Encrypt"], "Resource": "*"}]}'
)


@dataclass
class Workers:
    first: RunningNode
    second: RunningNode

    @property
    def both(self) -> tuple[RunningNode, RunningNode]:
        return self.first, self.second


@pytest.fixture
async def workers(test_pki, tmp_path: Path) -> AsyncIterator[Workers]:
    clock = FakeClock()
    data_dir = tmp_path / "data"
    running: list[RunningNode] = []
    try:
        # Worker 0 first and alone, as the supervisor starts them.
        for index in range(2):
            node = Node(
                config=node_config(test_pki, data_dir), clock=clock, worker=WorkerRole(index, 2)
            )
            port = await node.start()
            endpoint = f"127.0.0.1:{port}"
            channel = secure_channel(test_pki, endpoint)
            running.append(
                RunningNode(
                    node, clock, channel, kms_pb2_grpc.KeyManagementServiceStub(channel), endpoint
                )
            )
        yield Workers(running[0], running[1])
    finally:
        for worker in reversed(running):
            await worker.channel.close()
            await worker.node.stop()


async def _encrypt(worker: RunningNode, key_id: str) -> None:
    await worker.stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"secret"))


def test_the_commit_counter_is_shared_through_its_file(tmp_path: Path) -> None:
    first = SharedCommitCounter.in_directory(tmp_path)
    second = SharedCommitCounter.in_directory(tmp_path)
    try:
        start = second.value()
        assert first.bump() == start + 1
        assert second.value() == start + 1
        assert second.bump() == start + 2
        assert first.value() == start + 2
        # A worker opening it later keeps the count.
        third = SharedCommitCounter.in_directory(tmp_path)
        assert third.value() == start + 2
        third.close()
    finally:
        first.close()
        second.close()


async def test_key_state_changed_in_one_worker_holds_at_once_in_the_other(
    workers: Workers,
) -> None:
    key_id = (await workers.first.stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    for writer, other in (workers.both, workers.both[::-1]):
        # Both have the key and its material cached.
        await _encrypt(writer, key_id)
        await _encrypt(other, key_id)
        await writer.stub.DisableKey(pb.DisableKeyRequest(key_id=key_id))
        await expect_error(
            _encrypt(other, key_id), grpc.StatusCode.FAILED_PRECONDITION, "DisabledException"
        )
        await other.stub.EnableKey(pb.EnableKeyRequest(key_id=key_id))
        await _encrypt(writer, key_id)
    await workers.second.stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
    )
    await expect_error(
        _encrypt(workers.first, key_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )


async def test_grants_and_identity_policies_changed_in_one_worker_hold_in_the_other(
    workers: Workers, test_pki
) -> None:
    key = (await workers.first.stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    grant = await workers.first.stub.CreateGrant(
        pb.CreateGrantRequest(
            key_id=key.key_id, grantee_principal=principal_arn("bob"), operations=["Encrypt"]
        )
    )
    channels = [secure_channel(test_pki, worker.endpoint, "bob") for worker in workers.both]
    bob = [kms_pb2_grpc.KeyManagementServiceStub(channel) for channel in channels]
    request = pb.EncryptRequest(key_id=key.arn, plaintext=b"x")
    try:
        for stub in bob:
            await stub.Encrypt(request)  # allowed by the grant, now cached in both
        await workers.second.stub.RevokeGrant(
            pb.RevokeGrantRequest(key_id=key.key_id, grant_id=grant.grant_id)
        )
        for stub in bob:
            await expect_error(
                stub.Encrypt(request), grpc.StatusCode.PERMISSION_DENIED, "AccessDeniedException"
            )
        # An identity policy put through one worker allows at once through the other.
        await workers.second.stub.PutUserPolicy(
            pb.PutUserPolicyRequest(
                user_name="bob", policy_name="encrypt", policy_document=ALLOW_ENCRYPT
            )
        )
        for stub in bob:
            await stub.Encrypt(request)
        await workers.first.stub.DeleteUserPolicy(
            pb.DeleteUserPolicyRequest(user_name="bob", policy_name="encrypt")
        )
        for stub in bob:
            await expect_error(
                stub.Encrypt(request), grpc.StatusCode.PERMISSION_DENIED, "AccessDeniedException"
            )
    finally:
        for channel in channels:
            await channel.close()


async def test_material_deleted_in_one_worker_is_gone_from_the_other(workers: Workers) -> None:
    # Decrypt of a ciphertext whose version was deleted: the other worker held that
    # version's material in its cache.
    first, second = workers.both
    key = (await first.stub.CreateKey(pb.CreateKeyRequest(origin="EXTERNAL"))).key_metadata
    await import_material(first.stub, key.key_id, os.urandom(32))
    blob = (
        await first.stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x"))
    ).ciphertext_blob
    await second.stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))  # cached in second
    await first.stub.DeleteImportedKeyMaterial(
        pb.DeleteImportedKeyMaterialRequest(key_id=key.key_id)
    )
    await expect_error(
        second.stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )


async def test_one_audit_chain_holds_both_workers_records_and_verifies(
    workers: Workers,
) -> None:
    request_ids = []
    for round_number in range(3):
        for worker in workers.both:
            call = worker.stub.GenerateRandom(pb.GenerateRandomRequest(number_of_bytes=8))
            await call
            request_ids.append(await request_id_of(call))
        # Either worker may be asked to seal (SealAuditDigest reaches any of them).
        sealer = workers.both[round_number % 2]
        sealed = await audit_stub(sealer.channel).SealAuditDigest(apb.SealAuditDigestRequest())
        assert sealed.sealed
    records = await all_records(workers.second.channel)
    recorded = {record.columns.request_id for record in records}
    assert set(request_ids) <= recorded
    seqs = [record.seq for record in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "one gapless sequence"
    report = verify_file(workers.first.node)
    assert report.ok, report
    # Both workers report the current head (the first call's record is the second's
    # head) and the digest the other may have sealed.
    heads = [
        (await audit_stub(worker.channel).GetAuditTrailInfo(apb.GetAuditTrailInfoRequest()))
        for worker in workers.both
    ]
    assert heads[0].head_seq + 1 == heads[1].head_seq
    assert heads[0].head_seq >= seqs[-1]
    assert heads[0].last_digest_number == heads[1].last_digest_number == 3


async def test_an_idempotency_token_acts_once_across_workers(workers: Workers) -> None:
    first, second = workers.both
    metadata = ((TOKEN_KEY, "across-workers"),)
    created = await first.stub.CreateKey(pb.CreateKeyRequest(description="a"), metadata=metadata)
    retried = await second.stub.CreateKey(pb.CreateKeyRequest(description="a"), metadata=metadata)
    assert retried.key_metadata.key_id == created.key_metadata.key_id
    for attempt in range(10):
        metadata = ((TOKEN_KEY, f"at-once-{attempt}"),)
        answers = await asyncio.gather(
            *(
                worker.stub.CreateKey(pb.CreateKeyRequest(description="b"), metadata=metadata)
                for worker in workers.both
            )
        )
        assert answers[0].key_metadata.key_id == answers[1].key_metadata.key_id
    listed = await first.stub.ListKeys(pb.ListKeysRequest(limit=1000))
    assert len(listed.keys) == 11
