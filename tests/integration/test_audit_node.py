"""The audit trail inside a running node: fail-closed, service events, metrics.

Faults are real SQLite errors on the audit writer's own connection (a full disk is
``PRAGMA max_page_count`` at the current size, a read-only store ``PRAGMA
query_only``), made through ``AuditTrail.run_on_store``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from audit_support import all_records, documents, request_id_of, verify_file, wait_for

from conftest import RunningNode, error_reason, expect_error, node_config, secure_channel
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.audit.settings import MetricsSettings
from meridian.server.domain.clock import FakeClock
from meridian.server.node import Node

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _full_disk(connection: sqlite3.Connection) -> None:
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")


def _disk_space_again(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA max_page_count = 1073741823")


async def _fault(node: Node, function) -> None:  # type: ignore[no-untyped-def]
    assert node.audit is not None and node.audit.trail is not None
    await node.audit.trail.run_on_store(function)


async def _key_count(stub: kms_pb2_grpc.KeyManagementServiceStub) -> int:
    return len((await stub.ListKeys(pb.ListKeysRequest(limit=1000))).keys)


@pytest.mark.parametrize(
    ("fail", "recover"),
    [
        (_full_disk, _disk_space_again),
        (
            lambda connection: connection.execute("PRAGMA query_only = 1"),
            lambda connection: connection.execute("PRAGMA query_only = 0"),
        ),
    ],
    ids=["disk-full", "read-only"],
)
async def test_calls_fail_closed_and_the_node_recovers(
    running_node: RunningNode, fail, recover
) -> None:  # type: ignore[no-untyped-def]
    stub = running_node.stub
    arn = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.arn
    keys_before = await _key_count(stub)
    # Fill the trail's pages so that the next records need a new one.
    for _ in range(20):
        await stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=b"x" * 1000))
    await _fault(running_node.node, fail)

    # A crypto call: refused, and its ciphertext is never sent.
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=b"y" * 1000)),
        UNAVAILABLE,
        "DependencyTimeoutException",
    )
    # A change: refused before it runs when its intent cannot be written (no key
    # appears). On a full disk the small intent may still fit where the record does
    # not: then the key is made, the caller gets KMSInternalException (outcome
    # unknown), and the intent becomes an "Unknown" record once the store recovers.
    create = stub.CreateKey(pb.CreateKeyRequest(description="not while unaudited"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create
    reason = error_reason(caught.value)
    request_id = await request_id_of(create)

    await _fault(running_node.node, recover)
    if reason == "DependencyTimeoutException":
        assert caught.value.code() == UNAVAILABLE
        assert await _key_count(stub) == keys_before
    else:
        assert (reason, caught.value.code()) == ("KMSInternalException", grpc.StatusCode.INTERNAL)
        assert await _key_count(stub) == keys_before + 1
        running_node.clock.advance(timedelta(seconds=301))  # the maintenance loop's tick

        async def recovered() -> bool:
            found = await all_records(running_node.channel, outcome="Unknown")
            return [record.columns.request_id for record in found] == [request_id]

        await wait_for(recovered, what="the intent's Unknown record")
    await stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=b"z"))
    report = verify_file(running_node.node)
    assert report.ok, report.problems


@pytest.fixture
async def node_with_metrics(test_pki, tmp_path: Path) -> AsyncIterator[RunningNode]:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    config = replace(
        node_config(test_pki, tmp_path / "data"),
        metrics=MetricsSettings(listen="127.0.0.1:0"),
    )
    node = Node(config=config, clock=clock)
    port = await node.start()
    endpoint = f"127.0.0.1:{port}"
    channel = secure_channel(test_pki, endpoint)
    try:
        yield RunningNode(
            node, clock, channel, kms_pb2_grpc.KeyManagementServiceStub(channel), endpoint
        )
    finally:
        await channel.close()
        await node.stop()


async def test_the_metrics_endpoint_counts_calls_and_audit_writes(
    node_with_metrics: RunningNode,
) -> None:
    stub = node_with_metrics.stub
    arn = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.arn
    for _ in range(3):
        await stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=b"x"))
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=b"")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )
    port = node_with_metrics.node.metrics_port
    assert port > 0

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    text = await asyncio.to_thread(scrape)
    assert 'meridian_requests_total{operation="Encrypt",outcome="ok"} 3.0' in text
    assert 'meridian_requests_total{operation="Encrypt",outcome="ValidationException"} 1.0' in text
    assert 'meridian_request_duration_seconds_count{operation="Encrypt"} 4.0' in text
    assert "meridian_audit_write_seconds_count" in text
    assert "meridian_replication_lag_seconds" in text
    count_line = next(
        line for line in text.splitlines() if line.startswith("meridian_audit_write_seconds_count")
    )
    assert float(count_line.split()[-1]) >= 5


async def test_the_sweeper_records_deletions_as_service_events(running_node: RunningNode) -> None:
    stub = running_node.stub
    arn = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.arn
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=arn, pending_window_in_days=7)
    )
    running_node.clock.advance(timedelta(days=8))

    async def deleted() -> bool:
        names = [
            d["eventName"] for d in documents(await all_records(running_node.channel, key_id=arn))
        ]
        return "DeleteKey" in names

    await wait_for(deleted, what="the DeleteKey service event")
    events = [
        d
        for d in documents(await all_records(running_node.channel))
        if d["eventName"] == "DeleteKey"
    ]
    assert len(events) == 1
    assert events[0]["eventType"] == "AwsServiceEvent"
    assert events[0]["resources"][0]["ARN"] == arn
    assert events[0]["userIdentity"]["invokedBy"] == "kms.meridian"
    await expect_error(
        stub.DescribeKey(pb.DescribeKeyRequest(key_id=arn)),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )
