"""Server-side de-duplication of calls that carry an idempotency token (issue 4).

A retry with the same token gets the first call's answer and acts no second time,
whatever the operation; the token is the principal's own; a token reused for another
request is refused; records outlive a restart and expire after the retention.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

import conftest
from conftest import RunningNode, expect_error, node_config, secure_channel
from meridian.proto.kms.v1 import kms_pb2
from meridian.proto.kms.v1 import kms_pb2_grpc as rpc
from meridian.server.api.idempotency import RETENTION, TOKEN_METADATA_KEY, IdempotencyGuard
from meridian.server.api.interceptor import CURRENT_CALLER
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.model import Caller
from meridian.server.node import Node
from meridian.server.storage.idempotency import SqliteIdempotencyRecords
from meridian.server.storage.store import SqliteStore


def _token(value: str) -> tuple[tuple[str, str], ...]:
    return ((TOKEN_METADATA_KEY, value),)


async def _key_ids(stub: rpc.KeyManagementServiceStub) -> set[str]:
    page = await stub.ListKeys(kms_pb2.ListKeysRequest(limit=1000))
    return {key.key_id for key in page.keys}


async def test_a_retried_create_key_creates_one_key(running_node: RunningNode) -> None:
    stub = running_node.stub
    before = await _key_ids(stub)
    request = kms_pb2.CreateKeyRequest(description="once")
    first = await stub.CreateKey(request, metadata=_token("token-1"))
    again = await stub.CreateKey(request, metadata=_token("token-1"))
    assert again.key_metadata.key_id == first.key_metadata.key_id
    assert again == first
    assert await _key_ids(stub) - before == {first.key_metadata.key_id}
    # Another token is another call.
    other = await stub.CreateKey(request, metadata=_token("token-2"))
    assert other.key_metadata.key_id != first.key_metadata.key_id
    # And no token: no de-duplication at all.
    plain = await stub.CreateKey(request)
    assert plain.key_metadata.key_id not in {first.key_metadata.key_id, other.key_metadata.key_id}


async def test_concurrent_retries_wait_for_the_first(running_node: RunningNode) -> None:
    stub = running_node.stub
    before = await _key_ids(stub)
    request = kms_pb2.CreateKeyRequest(description="race")
    answers = await asyncio.gather(
        *(stub.CreateKey(request, metadata=_token("same-token")) for _ in range(5))
    )
    assert len({answer.key_metadata.key_id for answer in answers}) == 1
    assert len(await _key_ids(stub) - before) == 1


async def test_a_token_reused_for_another_request_is_refused(running_node: RunningNode) -> None:
    stub = running_node.stub
    await stub.CreateKey(kms_pb2.CreateKeyRequest(description="a"), metadata=_token("t"))
    message = await expect_error(
        stub.CreateKey(kms_pb2.CreateKeyRequest(description="b"), metadata=_token("t")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )
    assert "different request" in message


async def test_the_same_token_is_another_principals_own(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "tokens.db")
    guard = IdempotencyGuard(SqliteIdempotencyRecords(store.write_connection), FakeClock())
    runs: list[str] = []

    async def create(request: object, context: object) -> kms_pb2.CreateKeyResponse:
        # Stands in for an operation: it writes (so the token is reserved) and answers.
        async with store.write_connection() as connection:
            await connection.execute("SELECT 1")
        runs.append(CURRENT_CALLER.get().principal_arn)
        return kms_pb2.CreateKeyResponse(region=str(len(runs)))

    class Context:
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return _token("shared")

    handler = guard.wrap("CreateKey", create, kms_pb2.CreateKeyResponse)
    request = kms_pb2.CreateKeyRequest(description="same")
    answers = []
    try:
        for principal in ("alice", "bob", "alice", "bob"):
            reset = CURRENT_CALLER.set(
                Caller(principal_arn=f"arn:meridian:iam::1:user/{principal}")
            )
            try:
                answers.append((await handler(request, Context())).region)
            finally:
                CURRENT_CALLER.reset(reset)
    finally:
        await store.close()
    # Each principal's token is its own: two runs, and each replays its own answer.
    assert answers == ["1", "2", "1", "2"]
    assert [arn.rsplit("/", 1)[-1] for arn in runs] == ["alice", "bob"]


async def test_non_creating_calls_replay_too(running_node: RunningNode) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(kms_pb2.CreateKeyRequest())).key_metadata
    request = kms_pb2.ScheduleKeyDeletionRequest(key_id=key.key_id, pending_window_in_days=7)
    first = await stub.ScheduleKeyDeletion(request, metadata=_token("delete-1"))
    # Without the token the repeat fails (already pending); with it, the first answer.
    assert await stub.ScheduleKeyDeletion(request, metadata=_token("delete-1")) == first
    await expect_error(
        stub.ScheduleKeyDeletion(request),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )


async def test_a_failed_call_that_changed_nothing_runs_again(running_node: RunningNode) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(kms_pb2.CreateKeyRequest())).key_metadata
    request = kms_pb2.ScheduleKeyDeletionRequest(key_id=key.key_id, pending_window_in_days=7)
    await stub.ScheduleKeyDeletion(request)
    await expect_error(
        stub.ScheduleKeyDeletion(request, metadata=_token("later")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )
    await stub.CancelKeyDeletion(kms_pb2.CancelKeyDeletionRequest(key_id=key.key_id))
    # The refusal was not recorded (nothing changed), so the token still works.
    scheduled = await stub.ScheduleKeyDeletion(request, metadata=_token("later"))
    assert scheduled.key_state == "PendingDeletion"


@pytest.mark.parametrize("token", ["", "x" * 129, "no spaces", "semi;colon"])
async def test_malformed_tokens_are_refused(running_node: RunningNode, token: str) -> None:
    await expect_error(
        running_node.stub.CreateKey(kms_pb2.CreateKeyRequest(), metadata=_token(token)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )


async def test_records_survive_a_restart_and_expire(
    test_pki: conftest.TestPki, tmp_path: Path
) -> None:
    clock = FakeClock()
    config = node_config(test_pki, tmp_path / "data")
    request = kms_pb2.CreateKeyRequest(description="durable")

    async def create() -> str:
        node = Node(config=config, clock=clock)
        port = await node.start()
        channel = secure_channel(test_pki, f"127.0.0.1:{port}")
        try:
            stub = rpc.KeyManagementServiceStub(channel)
            response = await stub.CreateKey(request, metadata=_token("restart-1"))
            return str(response.key_metadata.key_id)
        finally:
            await channel.close()
            await node.stop()

    first = await create()
    assert await create() == first
    clock.advance(RETENTION + timedelta(seconds=1))
    assert await create() != first


async def test_expired_records_are_forgotten_as_new_ones_are_stored(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "tokens.db")
    clock = FakeClock()
    guard = IdempotencyGuard(SqliteIdempotencyRecords(store.write_connection), clock)

    async def create(request: object, context: object) -> kms_pb2.CreateKeyResponse:
        async with store.write_connection() as connection:
            await connection.execute("SELECT 1")
        return kms_pb2.CreateKeyResponse(region="r")

    class Context:
        def __init__(self, token: str) -> None:
            self.token = token

        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return _token(self.token)

    async def rows() -> int:
        async with (
            store.write_connection() as connection,
            connection.execute("SELECT COUNT(*) FROM idempotency_tokens") as cursor,
        ):
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    handler = guard.wrap("CreateKey", create, kms_pb2.CreateKeyResponse)
    reset = CURRENT_CALLER.set(Caller(principal_arn="arn:meridian:iam::1:user/alice"))
    try:
        for index in range(3):
            await handler(kms_pb2.CreateKeyRequest(), Context(f"old-{index}"))
        assert await rows() == 3
        clock.advance(RETENTION + timedelta(seconds=1))
        await handler(kms_pb2.CreateKeyRequest(), Context("new"))
        assert await rows() == 1
    finally:
        CURRENT_CALLER.reset(reset)
        await store.close()
