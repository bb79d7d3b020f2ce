"""The deletion sweeper, driven by the fake clock: window edges and cancellation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc

from conftest import expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb


async def _state(stub, key_id: str) -> str | None:
    try:
        described = await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return None
    return described.key_metadata.key_state


async def _settle() -> None:
    """Let the sweeper (interval 0.05 s of fake time, woken by advance) run a pass."""
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_key_is_deleted_exactly_when_the_window_ends(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await stub.CreateAlias(
        pb.CreateAliasRequest(alias_name="alias/doomed", target_key_id=key.key_id)
    )
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key.key_id, pending_window_in_days=7)
    )

    service = running_node.node.service
    clock.advance(timedelta(days=7) - timedelta(microseconds=1))
    await _settle()
    assert await service.delete_due_keys() == []
    assert await _state(stub, key.key_id) == "PendingDeletion", "deleted before the window ended"

    clock.advance(timedelta(microseconds=1))
    assert await service.delete_due_keys() == [key.key_id]
    assert await _state(stub, key.key_id) is None
    aliases = await stub.ListAliases(pb.ListAliasesRequest())
    assert [a.alias_name for a in aliases.aliases] == [], "aliases go with their key"
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"x")),
        grpc.StatusCode.NOT_FOUND,
        "NotFoundException",
    )


async def test_background_sweeper_deletes_due_keys(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
    )
    clock.advance(timedelta(days=8))
    for _ in range(200):
        if await _state(stub, key_id) is None:
            break
        await asyncio.sleep(0.01)
    assert await _state(stub, key_id) is None


async def test_cancelled_deletion_is_never_carried_out(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
    )
    clock.advance(timedelta(days=3))
    await stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(key_id=key_id))
    clock.advance(timedelta(days=30))
    await _settle()
    assert await _state(stub, key_id) == "Disabled"


async def test_old_ciphertext_of_a_deleted_key_is_invalid(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"secret"))
    ).ciphertext_blob
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
    )
    clock.advance(timedelta(days=8))
    await _settle()
    await expect_error(
        stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidCiphertextException",
    )
