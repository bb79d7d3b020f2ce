"""Key rotation through the gRPC boundary, with the fake clock: automatic rotation over
years of simulated time, on-demand rotation and its limit, ListKeyRotations, and every
older version still decrypting."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import grpc
import pytest

from conftest import expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def _rotation_status(stub, key_id: str) -> pb.GetKeyRotationStatusResponse:
    return await stub.GetKeyRotationStatus(pb.GetKeyRotationStatusRequest(key_id=key_id))


async def _rotations(stub, key_id: str, include: str = "") -> list[pb.RotationsListEntry]:
    return list(
        (
            await stub.ListKeyRotations(
                pb.ListKeyRotationsRequest(key_id=key_id, include_key_material=include)
            )
        ).rotations
    )


async def test_enable_disable_and_status(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    status = await _rotation_status(stub, key.key_id)
    assert not status.key_rotation_enabled
    assert not status.HasField("rotation_period_in_days")
    assert not status.HasField("next_rotation_date")
    assert status.key_id == key.key_id

    await stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id=key.key_id))
    status = await _rotation_status(stub, key.arn)
    assert status.key_rotation_enabled
    assert status.rotation_period_in_days == 365
    assert status.next_rotation_date.ToDatetime(
        tzinfo=clock.now().tzinfo
    ) == clock.now() + timedelta(days=365)

    # A new period counts from the start of the current cycle.
    clock.advance(timedelta(days=10))
    await stub.EnableKeyRotation(
        pb.EnableKeyRotationRequest(key_id=key.key_id, rotation_period_in_days=90)
    )
    status = await _rotation_status(stub, key.key_id)
    assert status.rotation_period_in_days == 90
    assert status.next_rotation_date.ToDatetime(
        tzinfo=clock.now().tzinfo
    ) == clock.now() + timedelta(days=80)

    await stub.DisableKeyRotation(pb.DisableKeyRotationRequest(key_id=key.key_id))
    status = await _rotation_status(stub, key.key_id)
    assert not status.key_rotation_enabled
    assert not status.HasField("next_rotation_date")


@pytest.mark.parametrize("days", [0, 89, 2561, -1])
async def test_rotation_period_bounds(running_node, days: int) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await expect_error(
        stub.EnableKeyRotation(
            pb.EnableKeyRotationRequest(key_id=key.key_id, rotation_period_in_days=days)
        ),
        INVALID,
        "ValidationException",
    )


async def test_rotation_is_for_symmetric_encryption_keys_only(running_node) -> None:
    stub = running_node.stub
    signer = (
        await stub.CreateKey(pb.CreateKeyRequest(key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY"))
    ).key_metadata
    hmac_key = (
        await stub.CreateKey(
            pb.CreateKeyRequest(key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")
        )
    ).key_metadata
    imported = (await stub.CreateKey(pb.CreateKeyRequest(origin="EXTERNAL"))).key_metadata
    for key_id in (signer.key_id, hmac_key.key_id):
        for call in (
            stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id=key_id)),
            stub.DisableKeyRotation(pb.DisableKeyRotationRequest(key_id=key_id)),
            stub.GetKeyRotationStatus(pb.GetKeyRotationStatusRequest(key_id=key_id)),
            stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key_id)),
            stub.ListKeyRotations(pb.ListKeyRotationsRequest(key_id=key_id)),
        ):
            await expect_error(call, INVALID, "UnsupportedOperationException")
    # Imported material never rotates automatically (on demand, it takes new material).
    await expect_error(
        stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id=imported.key_id)),
        INVALID,
        "UnsupportedOperationException",
    )
    assert not (await _rotation_status(stub, imported.key_id)).key_rotation_enabled


async def test_rotation_settings_follow_the_key_state(running_node) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id=key.key_id))
    await stub.DisableKey(pb.DisableKeyRequest(key_id=key.key_id))
    for call in (
        stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id=key.key_id)),
        stub.DisableKeyRotation(pb.DisableKeyRotationRequest(key_id=key.key_id)),
        stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key.key_id)),
    ):
        await expect_error(call, PRECONDITION, "DisabledException")
    # The status does not change when a key is disabled...
    assert (await _rotation_status(stub, key.key_id)).key_rotation_enabled
    await stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=key.key_id))
    # ...is off while it is pending deletion, and comes back if the deletion is cancelled.
    assert not (await _rotation_status(stub, key.key_id)).key_rotation_enabled
    await expect_error(
        stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id=key.key_id)),
        PRECONDITION,
        "KMSInvalidStateException",
    )
    await stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(key_id=key.key_id))
    assert (await _rotation_status(stub, key.key_id)).key_rotation_enabled
    # Rotation operations take a key id or key ARN, not an alias.
    await stub.CreateAlias(
        pb.CreateAliasRequest(alias_name="alias/rotating", target_key_id=key.key_id)
    )
    await expect_error(
        stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id="alias/rotating")),
        INVALID,
        "ValidationException",
    )


async def test_on_demand_rotation_keeps_every_version_and_stops_at_25(running_node) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    blobs = []
    for number in range(25):
        blobs.append(
            (
                await stub.Encrypt(
                    pb.EncryptRequest(key_id=key.key_id, plaintext=f"v{number}".encode())
                )
            ).ciphertext_blob
        )
        rotated = await stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key.arn))
        assert rotated.key_id == key.key_id
    await expect_error(
        stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key.key_id)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LimitExceededException",
    )
    for number, blob in enumerate(blobs):
        assert (
            await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))
        ).plaintext == f"v{number}".encode()
    rotations = await _rotations(stub, key.key_id)
    assert len(rotations) == 25
    assert {entry.rotation_type for entry in rotations} == {"ON_DEMAND"}
    assert [entry.key_material_state for entry in rotations] == ["NON_CURRENT"] * 24 + ["CURRENT"]
    everything = await _rotations(stub, key.key_id, "ALL_KEY_MATERIAL")
    assert len(everything) == 26
    assert everything[0].key_material_id == key.current_key_material_id
    assert not everything[0].rotation_type and not everything[0].HasField("rotation_date")
    current = (await stub.DescribeKey(pb.DescribeKeyRequest(key_id=key.key_id))).key_metadata
    assert current.current_key_material_id == rotations[-1].key_material_id
    # On-demand rotations do not count against the automatic schedule, nor start one.
    assert not (await _rotation_status(stub, key.key_id)).key_rotation_enabled


async def test_list_key_rotations_pages(running_node) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    for _ in range(5):
        await stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key.key_id))
    seen: list[str] = []
    marker = ""
    for _ in range(10):
        page = await stub.ListKeyRotations(
            pb.ListKeyRotationsRequest(key_id=key.key_id, limit=2, marker=marker)
        )
        seen += [entry.key_material_id for entry in page.rotations]
        if not page.truncated:
            break
        marker = page.next_marker
    assert seen == [entry.key_material_id for entry in await _rotations(stub, key.key_id)]
    assert len(seen) == 5
    await expect_error(
        stub.ListKeyRotations(pb.ListKeyRotationsRequest(key_id=key.key_id, marker="bogus")),
        INVALID,
        "InvalidMarkerException",
    )
    await expect_error(
        stub.ListKeyRotations(
            pb.ListKeyRotationsRequest(key_id=key.key_id, include_key_material="SOME")
        ),
        INVALID,
        "ValidationException",
    )


async def test_automatic_rotation_over_ten_years_of_simulated_time(running_node) -> None:
    """Every 90 days for ten years: 40 rotations, none lost, every ciphertext readable;
    a disabled key waits and rotates as soon as it is enabled again."""
    stub, clock = running_node.stub, running_node.clock
    rotation = running_node.node.service.key_types.rotation
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await stub.EnableKeyRotation(
        pb.EnableKeyRotationRequest(key_id=key.key_id, rotation_period_in_days=90)
    )
    blobs: list[tuple[bytes, str]] = []
    for day in range(0, 3650, 30):
        if day:
            clock.advance(timedelta(days=30))
        await rotation.rotate_due_keys()
        encrypted = await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"%d" % day))
        blobs.append((encrypted.ciphertext_blob, str(day)))
    rotations = await _rotations(stub, key.key_id)
    assert len(rotations) == 40
    assert {entry.rotation_type for entry in rotations} == {"AUTOMATIC"}
    dates = [entry.rotation_date.ToDatetime() for entry in rotations]
    assert dates == sorted(dates)
    assert all(
        later - earlier == timedelta(days=90) for earlier, later in itertools.pairwise(dates)
    )
    for blob, day in blobs:
        assert (
            await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))
        ).plaintext == day.encode()

    # Disabled past its date: no rotation; enabled again: rotates at once, then per period.
    await stub.DisableKey(pb.DisableKeyRequest(key_id=key.key_id))
    clock.advance(timedelta(days=200))
    assert await rotation.rotate_due_keys() == []
    await stub.EnableKey(pb.EnableKeyRequest(key_id=key.key_id))
    assert await rotation.rotate_due_keys() == [key.key_id]
    status = await _rotation_status(stub, key.key_id)
    assert status.next_rotation_date.ToDatetime(
        tzinfo=clock.now().tzinfo
    ) == clock.now() + timedelta(days=90)
    assert await rotation.rotate_due_keys() == []


async def test_the_background_task_rotates_due_keys(running_node) -> None:
    stub, clock = running_node.stub, running_node.clock
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await stub.EnableKeyRotation(
        pb.EnableKeyRotationRequest(key_id=key.key_id, rotation_period_in_days=90)
    )
    clock.advance(timedelta(days=91))
    for _ in range(200):
        if await _rotations(stub, key.key_id):
            break
        await asyncio.sleep(0.01)
    rotations = await _rotations(stub, key.key_id)
    assert [entry.rotation_type for entry in rotations] == ["AUTOMATIC"]
