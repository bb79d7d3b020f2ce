"""Batch operations through the real gRPC boundary (docs/batch-operations.md).

Each item of BatchEncrypt/BatchDecrypt/BatchGenerateDataKey is authorized, audited and
answered as the single call would be: a caller allowed on key A but not key B gets
successes for A's items and AccessDeniedException for B's, every item has its own audit
record (the single operation's eventName, its errorCode, tied to the batch by
additionalEventData.batchId), and a failing item never fails the batch.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import grpc
import pytest
from audit_support import all_records, documents, request_id_of, verify_file

from conftest import (
    ACCOUNT,
    RunningNode,
    error_reason,
    expect_error,
    principal_arn,
    principal_stub,
)
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.batch_servicer import BATCH_ITEMS_MAX, BATCH_PLAINTEXT_BYTES_MAX

ALICE = "alice"


async def _new_key(stub: Any) -> str:
    return str((await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.arn)


async def _allow_alice(stub: Any, key_arn: str, condition: dict[str, Any] | None = None) -> None:
    """Key policy: the account root as by default, and alice's crypto use of this key."""
    use: dict[str, Any] = {
        "Sid": "AliceUses",
        "Effect": "Allow",
        "Principal": {"AWS": principal_arn(ALICE)},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": "*",
    }
    if condition is not None:
        use["Condition"] = condition
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Root",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:meridian:iam::{ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            use,
        ],
    }
    await stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key_id=key_arn, policy=json.dumps(policy)))


def _outcomes(results: Any) -> list[str]:
    return [
        "ok" if result.WhichOneof("outcome") == "response" else result.error.reason
        for result in results
    ]


async def _item_records(node: RunningNode, batch_id: str) -> list[dict[str, Any]]:
    records = documents(await all_records(node.channel))
    items = [
        d
        for d in records
        if d["additionalEventData"].get("batchId") == batch_id and d["requestID"] != batch_id
    ]
    return sorted(items, key=lambda d: d["additionalEventData"]["batchItemIndex"])


async def test_each_item_is_authorized_and_audited_as_its_single_call(
    running_node: RunningNode, test_pki
) -> None:
    admin = running_node.stub
    key_a = await _new_key(admin)
    key_b = await _new_key(admin)
    await _allow_alice(admin, key_a)
    channel, alice = principal_stub(test_pki, running_node, ALICE)
    async with channel:
        call = alice.BatchEncrypt(
            pb.BatchEncryptRequest(
                items=[
                    pb.EncryptRequest(key_id=key_a, plaintext=b"one"),
                    pb.EncryptRequest(key_id=key_b, plaintext=b"two"),
                    pb.EncryptRequest(key_id=key_a, plaintext=b"three"),
                ]
            )
        )
        response = await call
        batch_id = await request_id_of(call)
        assert _outcomes(response.results) == ["ok", "AccessDeniedException", "ok"]
        assert response.region == running_node.node.config.region
        assert response.results[0].response.key_id == key_a
        assert "not authorized" in response.results[1].error.message

        # What alice may encrypt she may decrypt, item by item, in the same order.
        blobs = [response.results[i].response.ciphertext_blob for i in (0, 2)]
        b_blob = (
            await admin.Encrypt(pb.EncryptRequest(key_id=key_b, plaintext=b"b"))
        ).ciphertext_blob
        decrypted = await alice.BatchDecrypt(
            pb.BatchDecryptRequest(
                items=[
                    pb.DecryptRequest(ciphertext_blob=blobs[1]),
                    pb.DecryptRequest(ciphertext_blob=b_blob),
                    pb.DecryptRequest(ciphertext_blob=blobs[0]),
                ]
            )
        )
        assert _outcomes(decrypted.results) == ["ok", "AccessDeniedException", "ok"]
        assert decrypted.results[0].response.plaintext == b"three"
        assert decrypted.results[2].response.plaintext == b"one"

    records = await _item_records(running_node, batch_id)
    assert [d["eventName"] for d in records] == ["Encrypt"] * 3
    assert [d.get("errorCode") for d in records] == [None, "AccessDeniedException", None]
    assert [d["resources"][0]["ARN"] for d in records] == [key_a, key_b, key_a]
    assert [d["requestID"] for d in records] == [r.request_id for r in response.results]
    assert all(d["userIdentity"]["arn"] == principal_arn(ALICE) for d in records)
    assert records[1]["meridian"]["authorization"]["decision"] == "deny"
    # The batch call has its own record, which counts the items without repeating them.
    batch = [
        d for d in documents(await all_records(running_node.channel)) if d["requestID"] == batch_id
    ]
    assert len(batch) == 1
    assert batch[0]["eventName"] == "BatchEncrypt"
    assert batch[0]["requestParameters"] == {"itemCount": 3}


async def test_encryption_context_conditions_apply_per_item(
    running_node: RunningNode, test_pki
) -> None:
    admin = running_node.stub
    key = await _new_key(admin)
    await _allow_alice(
        admin, key, {"StringEquals": {"kms:EncryptionContext:purpose": "batch-test"}}
    )
    channel, alice = principal_stub(test_pki, running_node, ALICE)
    async with channel:
        response = await alice.BatchGenerateDataKey(
            pb.BatchGenerateDataKeyRequest(
                items=[
                    pb.GenerateDataKeyRequest(
                        key_id=key, key_spec="AES_256", encryption_context={"purpose": "batch-test"}
                    ),
                    pb.GenerateDataKeyRequest(
                        key_id=key, key_spec="AES_256", encryption_context={"purpose": "other"}
                    ),
                    pb.GenerateDataKeyRequest(key_id=key, number_of_bytes=16),
                ]
            )
        )
    assert _outcomes(response.results) == ["ok", "AccessDeniedException", "AccessDeniedException"]
    first = response.results[0].response
    assert len(first.plaintext) == 32
    opened = await admin.Decrypt(
        pb.DecryptRequest(
            ciphertext_blob=first.ciphertext_blob, encryption_context={"purpose": "batch-test"}
        )
    )
    assert opened.plaintext == first.plaintext


async def test_mixed_failures_carry_the_single_calls_reasons(running_node: RunningNode) -> None:
    admin = running_node.stub
    key = await _new_key(admin)
    disabled = await _new_key(admin)
    good = (await admin.Encrypt(pb.EncryptRequest(key_id=key, plaintext=b"fine"))).ciphertext_blob
    of_disabled = (
        await admin.Encrypt(pb.EncryptRequest(key_id=disabled, plaintext=b"later"))
    ).ciphertext_blob
    await admin.DisableKey(pb.DisableKeyRequest(key_id=disabled))
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    call = admin.BatchDecrypt(
        pb.BatchDecryptRequest(
            items=[
                pb.DecryptRequest(ciphertext_blob=good),
                pb.DecryptRequest(ciphertext_blob=tampered),
                pb.DecryptRequest(ciphertext_blob=of_disabled),
                pb.DecryptRequest(ciphertext_blob=good, encryption_context={"wrong": "context"}),
                pb.DecryptRequest(),
            ]
        )
    )
    response = await call
    assert _outcomes(response.results) == [
        "ok",
        "InvalidCiphertextException",
        "DisabledException",
        "InvalidCiphertextException",
        "ValidationException",
    ]
    assert response.results[0].response.plaintext == b"fine"
    # The same reasons as the single calls give.
    await expect_error(
        admin.Decrypt(pb.DecryptRequest(ciphertext_blob=tampered)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidCiphertextException",
    )
    await expect_error(
        admin.Decrypt(pb.DecryptRequest(ciphertext_blob=of_disabled)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DisabledException",
    )
    records = await _item_records(running_node, await request_id_of(call))
    assert [d["eventName"] for d in records] == ["Decrypt"] * 5
    assert [d.get("errorCode") for d in records] == [
        None,
        "InvalidCiphertextException",
        "DisabledException",
        "InvalidCiphertextException",
        "ValidationException",
    ]

    encrypted = await admin.BatchEncrypt(
        pb.BatchEncryptRequest(
            items=[
                pb.EncryptRequest(key_id=disabled, plaintext=b"x"),
                pb.EncryptRequest(key_id=key, plaintext=b""),
                pb.EncryptRequest(key_id=key, plaintext=b"x" * 4097),
                pb.EncryptRequest(key_id="alias/missing", plaintext=b"x"),
                pb.EncryptRequest(key_id=key, plaintext=b"x"),
            ]
        )
    )
    assert _outcomes(encrypted.results) == [
        "DisabledException",
        "ValidationException",
        "ValidationException",
        "NotFoundException",
        "ok",
    ]


@pytest.mark.parametrize("count", [0, BATCH_ITEMS_MAX + 1])
async def test_item_count_is_bounded(running_node: RunningNode, count: int) -> None:
    key = await _new_key(running_node.stub)
    items = [pb.EncryptRequest(key_id=key, plaintext=b"x")] * count
    call = running_node.stub.BatchEncrypt(pb.BatchEncryptRequest(items=items))
    message = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "ValidationException")
    assert f"1 to {BATCH_ITEMS_MAX} items" in message
    # Refused as a whole: one record (the batch's), none for items.
    batch_id = await request_id_of(call)
    records = documents(await all_records(running_node.channel))
    assert [d["eventName"] for d in records if d["requestID"] == batch_id] == ["BatchEncrypt"]
    tied = [d for d in records if d["additionalEventData"].get("batchId") == batch_id]
    assert [d["requestID"] for d in tied] == [batch_id]


async def test_the_most_items_and_plaintext_bytes_pass(running_node: RunningNode) -> None:
    key = await _new_key(running_node.stub)
    size = BATCH_PLAINTEXT_BYTES_MAX // BATCH_ITEMS_MAX
    items = [pb.EncryptRequest(key_id=key, plaintext=bytes([n]) * size) for n in range(100)]
    response = await running_node.stub.BatchEncrypt(pb.BatchEncryptRequest(items=items))
    assert _outcomes(response.results) == ["ok"] * BATCH_ITEMS_MAX
    decrypted = await running_node.stub.BatchDecrypt(
        pb.BatchDecryptRequest(
            items=[
                pb.DecryptRequest(ciphertext_blob=result.response.ciphertext_blob)
                for result in response.results
            ]
        )
    )
    assert [r.response.plaintext for r in decrypted.results] == [i.plaintext for i in items]


async def test_total_plaintext_is_bounded(running_node: RunningNode) -> None:
    key = await _new_key(running_node.stub)
    items = [pb.EncryptRequest(key_id=key, plaintext=b"x" * 4096) for _ in range(65)]
    assert sum(len(i.plaintext) for i in items) > BATCH_PLAINTEXT_BYTES_MAX
    message = await expect_error(
        running_node.stub.BatchEncrypt(pb.BatchEncryptRequest(items=items)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )
    assert str(BATCH_PLAINTEXT_BYTES_MAX) in message


async def test_a_principal_without_access_gets_every_item_denied(
    running_node: RunningNode, test_pki
) -> None:
    """A principal with no policy at all still reaches the items, each one denied: the
    envelope grants nothing by itself."""
    key = await _new_key(running_node.stub)
    channel, nobody = principal_stub(test_pki, running_node, "nobody")
    async with channel:
        response = await nobody.BatchEncrypt(
            pb.BatchEncryptRequest(items=[pb.EncryptRequest(key_id=key, plaintext=b"x")] * 2)
        )
    assert _outcomes(response.results) == ["AccessDeniedException"] * 2


def _count(node: RunningNode, operation: str, outcome: str) -> float:
    value = node.node.metrics.registry.get_sample_value(
        "meridian_requests_total", {"operation": operation, "outcome": outcome}
    )
    return value or 0.0


async def test_metrics_count_every_item_and_the_batch(running_node: RunningNode) -> None:
    key = await _new_key(running_node.stub)
    before = (
        _count(running_node, "Encrypt", "ok"),
        _count(running_node, "Encrypt", "NotFoundException"),
    )
    await running_node.stub.BatchEncrypt(
        pb.BatchEncryptRequest(
            items=[pb.EncryptRequest(key_id=key, plaintext=b"x")] * 3
            + [pb.EncryptRequest(key_id="alias/none", plaintext=b"x")]
        )
    )
    after = (
        _count(running_node, "Encrypt", "ok"),
        _count(running_node, "Encrypt", "NotFoundException"),
    )
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)
    assert _count(running_node, "BatchEncrypt", "ok") == 1


def _full_disk(connection: sqlite3.Connection) -> None:
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")


def _disk_space_again(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA max_page_count = 1073741823")


async def test_no_item_is_answered_unrecorded(running_node: RunningNode) -> None:
    """The audit trail cannot take records: every item fails closed (its ciphertext is
    never sent). The batch's own, smaller record may still fit (then the batch answers
    with the items' errors) or not (then the batch fails as a whole)."""
    stub = running_node.stub
    key = await _new_key(stub)
    for _ in range(20):  # fill the trail's pages, so that the next records need a new one
        await stub.Encrypt(pb.EncryptRequest(key_id=key, plaintext=b"x" * 1000))
    trail = running_node.node.audit.trail
    await trail.run_on_store(_full_disk)
    items = [pb.EncryptRequest(key_id=key, plaintext=b"y" * 1000)] * 5
    try:
        refused = await stub.BatchEncrypt(pb.BatchEncryptRequest(items=items))
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(error) == "DependencyTimeoutException"
    else:
        assert _outcomes(refused.results) == ["DependencyTimeoutException"] * 5
        assert not any(result.HasField("response") for result in refused.results)
    await trail.run_on_store(_disk_space_again)
    response = await stub.BatchEncrypt(pb.BatchEncryptRequest(items=items))
    assert _outcomes(response.results) == ["ok"] * 5
    report = verify_file(running_node.node)
    assert report.ok, report.problems
