"""Rotation of multi-Region keys through the real nodes (three in-process regions, fake
clock, in-memory replication): settings made at the primary and reported everywhere,
refusals at replicas, two-phase on-demand and scheduled rotation, a replica region that
is down holding a rotation back, the on-demand limit across regions, and
ListKeyRotations answering alike in every region."""

from __future__ import annotations

from datetime import timedelta

import grpc
from multi_region_support import MrkCluster, create_mrk, mrk_cluster, replicate

from conftest import expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb

__all__ = ["mrk_cluster"]

US, EU, AP = "us-east-1", "eu-west-1", "ap-south-1"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def _encrypting_version(cluster: MrkCluster, region: str, key_id: str) -> str:
    """The key material id that ``region`` encrypts with now."""
    sealed = await cluster[region].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"v"))
    return await _sealing_version(cluster, region, sealed.ciphertext_blob)


async def _sealing_version(cluster: MrkCluster, region: str, blob: bytes) -> str:
    opened = await cluster[region].stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))
    return str(opened.key_material_id)


async def _rotations(
    cluster: MrkCluster, region: str, key_id: str, include: str = ""
) -> list[tuple[str, str, str, str]]:
    response = await cluster[region].stub.ListKeyRotations(
        pb.ListKeyRotationsRequest(key_id=key_id, include_key_material=include)
    )
    return [
        (
            entry.key_material_id,
            entry.rotation_type,
            entry.key_material_state,
            entry.rotation_date.ToJsonString() if entry.HasField("rotation_date") else "",
        )
        for entry in response.rotations
    ]


async def _status(cluster: MrkCluster, region: str, key_id: str) -> pb.GetKeyRotationStatusResponse:
    return await cluster[region].stub.GetKeyRotationStatus(
        pb.GetKeyRotationStatusRequest(key_id=key_id)
    )


def _settings(status: pb.GetKeyRotationStatusResponse) -> tuple[bool, int, str, str]:
    return (
        status.key_rotation_enabled,
        status.rotation_period_in_days if status.HasField("rotation_period_in_days") else 0,
        status.next_rotation_date.ToJsonString() if status.HasField("next_rotation_date") else "",
        status.on_demand_rotation_start_date.ToJsonString()
        if status.HasField("on_demand_rotation_start_date")
        else "",
    )


async def _rotate(cluster: MrkCluster, region: str, key_id: str) -> None:
    response = await cluster[region].stub.RotateKeyOnDemand(
        pb.RotateKeyOnDemandRequest(key_id=key_id)
    )
    assert response.key_id == key_id and response.region == region


async def _wait_encrypting(cluster: MrkCluster, key_id: str, version: str, *regions: str) -> None:
    async def there() -> bool:
        for region in regions:
            if await _encrypting_version(cluster, region, key_id) != version:
                return False
        return True

    await cluster.wait_for(there, what=f"every region to encrypt with {version[:8]}")


async def _wait_same_rotations(cluster: MrkCluster, key_id: str, *regions: str) -> None:
    async def alike() -> bool:
        for include in ("ROTATIONS_ONLY", "ALL_KEY_MATERIAL"):
            lists = [await _rotations(cluster, region, key_id, include) for region in regions]
            if any(listed != lists[0] for listed in lists):
                return False
        return True

    await cluster.wait_for(alike, what="ListKeyRotations to agree in every region")


async def _move_primary(cluster: MrkCluster, key_id: str, old: str, new: str) -> None:
    """UpdatePrimaryRegion, then wait until the hand-over's Updating window is over."""
    await cluster.wait_for(cluster.caught_up, what="the replica's report")
    await cluster[old].stub.UpdatePrimaryRegion(
        pb.UpdatePrimaryRegionRequest(key_id=key_id, primary_region=new)
    )

    async def moved() -> bool:
        described = await cluster.describe(new, key_id)
        return (
            described is not None
            and described.multi_region_configuration.multi_region_key_type == "PRIMARY"
            and described.key_state == "Enabled"
            and await cluster.state_is(old, key_id, "Enabled")
        )

    await cluster.wait_for(moved, what=f"the primary to move to {new}")


async def _scheduler_pass(cluster: MrkCluster, region: str) -> list[str]:
    """One pass of ``region``'s rotation scheduler; the keys it rotated."""
    service = cluster[region].node.service
    assert service is not None
    return await service.key_types.rotation.rotate_due_keys()


async def _newest_version(cluster: MrkCluster, key_id: str) -> str:
    """The material id of the primary's newest version (staged or not), from its status."""
    status = await cluster.status(US)
    pending = [p.key_material_id for p in status.pending_versions if p.key_id == key_id]
    assert len(pending) == 1, pending
    return str(pending[0])


async def test_on_demand_rotation_reaches_every_region(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    original = await _encrypting_version(cluster, US, key_id)
    before = await cluster[EU].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"old"))
    await _rotate(cluster, US, key_id)

    async def rotated() -> bool:
        return len(await _rotations(cluster, US, key_id)) == 1

    await cluster.wait_for(rotated, what="the rotation to complete")
    [(new_version, rotation_type, state, date)] = await _rotations(cluster, US, key_id)
    assert rotation_type == "ON_DEMAND" and state == "CURRENT" and date
    assert new_version != original
    await _wait_encrypting(cluster, key_id, new_version, US, EU)

    # Made after the rotation in one region, readable in the other, and the old one too.
    for source, target in ((EU, US), (US, EU)):
        sealed = await cluster[source].stub.Encrypt(
            pb.EncryptRequest(key_id=key_id, plaintext=b"new", encryption_context={"k": source})
        )
        opened = await cluster[target].stub.Decrypt(
            pb.DecryptRequest(
                ciphertext_blob=sealed.ciphertext_blob, encryption_context={"k": source}
            )
        )
        assert opened.plaintext == b"new" and opened.key_material_id == new_version
    for region in (US, EU):
        assert await _sealing_version(cluster, region, before.ciphertext_blob) == original

    # A replica made later lists the same history as the others.
    await replicate(cluster, key_id, AP)
    await _wait_same_rotations(cluster, key_id, US, EU, AP)
    everything = await _rotations(cluster, AP, key_id, "ALL_KEY_MATERIAL")
    assert [(entry[0], entry[2]) for entry in everything] == [
        (original, "NON_CURRENT"),
        (new_version, "CURRENT"),
    ]
    for region in (US, EU, AP):
        assert _settings(await _status(cluster, region, key_id)) == (False, 0, "", "")


async def test_rotation_settings_are_made_at_the_primary_and_shown_everywhere(
    mrk_cluster: MrkCluster,
) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    await cluster[US].stub.EnableKeyRotation(
        pb.EnableKeyRotationRequest(key_id=key_id, rotation_period_in_days=180)
    )
    primary = _settings(await _status(cluster, US, key_id))
    assert primary[:2] == (True, 180) and primary[2]

    async def replicated() -> bool:
        return _settings(await _status(cluster, EU, key_id)) == primary

    await cluster.wait_for(replicated, what="the rotation setting to reach the replica")

    # Shared properties change only at the primary (AWS: UnsupportedOperationException).
    for call in (
        cluster[EU].stub.EnableKeyRotation(pb.EnableKeyRotationRequest(key_id=key_id)),
        cluster[EU].stub.DisableKeyRotation(pb.DisableKeyRotationRequest(key_id=key_id)),
        cluster[EU].stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key_id)),
    ):
        await expect_error(call, INVALID, "UnsupportedOperationException")
    # A replica's own state does not change the answer there: it is still a replica.
    await cluster[EU].stub.DisableKey(pb.DisableKeyRequest(key_id=key_id))
    await expect_error(
        cluster[EU].stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key_id)),
        INVALID,
        "UnsupportedOperationException",
    )
    await cluster[EU].stub.EnableKey(pb.EnableKeyRequest(key_id=key_id))
    assert _settings(await _status(cluster, EU, key_id)) == primary

    await cluster[US].stub.DisableKeyRotation(pb.DisableKeyRotationRequest(key_id=key_id))

    async def disabled() -> bool:
        return not (await _status(cluster, EU, key_id)).key_rotation_enabled

    await cluster.wait_for(disabled, what="disabling to reach the replica")
    assert _settings(await _status(cluster, EU, key_id)) == (False, 0, "", "")


async def test_a_replica_region_that_is_down_holds_the_rotation_back(
    mrk_cluster: MrkCluster,
) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    await replicate(cluster, key_id, AP)
    original = await _encrypting_version(cluster, US, key_id)
    cluster.network.set_down(AP)
    # AWS's answer: success at once; the rotation completes asynchronously.
    await _rotate(cluster, US, key_id)
    staged = await _newest_version(cluster, key_id)
    start = _settings(await _status(cluster, US, key_id))[3]
    assert start  # OnDemandRotationStartDate: in progress

    async def eu_holds_it() -> bool:
        status = await cluster.status(US)
        return [list(p.missing_regions) for p in status.pending_versions] == [[AP]]

    await cluster.wait_for(eu_holds_it, what="EU to hold the staged version")
    # Until every replica holds it, every region keeps encrypting with the old version,
    # the rotation is not listed, and another rotation is refused (AWS: ConflictException).
    for region in (US, EU):
        assert await _encrypting_version(cluster, region, key_id) == original
        assert await _rotations(cluster, region, key_id) == []
        assert [
            entry[0] for entry in await _rotations(cluster, region, key_id, "ALL_KEY_MATERIAL")
        ] == [original]
    assert _settings(await _status(cluster, EU, key_id))[3] == start
    await expect_error(
        cluster[US].stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key_id)),
        PRECONDITION,
        "ConflictException",
    )
    # The staged version already decrypts where it is held.
    assert (
        await _sealing_version(
            cluster,
            EU,
            (
                await cluster[US].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"))
            ).ciphertext_blob,
        )
        == original
    )

    cluster.network.set_down(AP, down=False)
    await _wait_encrypting(cluster, key_id, staged, US, EU, AP)
    await _wait_same_rotations(cluster, key_id, US, EU, AP)
    [(listed, rotation_type, state, _)] = await _rotations(cluster, AP, key_id)
    assert (listed, rotation_type, state) == (staged, "ON_DEMAND", "CURRENT")
    assert not (await cluster.status(US)).pending_versions
    for region in (US, EU, AP):
        assert _settings(await _status(cluster, region, key_id))[3] == ""
    # Once complete, the next rotation is accepted.
    await _rotate(cluster, US, key_id)


async def test_scheduled_rotation_runs_at_the_primary_only(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    await cluster[US].stub.EnableKeyRotation(
        pb.EnableKeyRotationRequest(key_id=key_id, rotation_period_in_days=90)
    )

    async def schedule_replicated() -> bool:
        return (await _status(cluster, EU, key_id)).key_rotation_enabled

    await cluster.wait_for(schedule_replicated, what="the schedule to reach the replica")
    original = await _encrypting_version(cluster, US, key_id)
    cluster.clock.advance(timedelta(days=91))
    # The replica's row says the key is due, but a replica never rotates a shared key.
    assert await _scheduler_pass(cluster, EU) == []

    # The primary's lifecycle task (every second of the fake clock) rotates it.
    async def rotated() -> bool:
        return len(await _rotations(cluster, EU, key_id)) == 1

    await cluster.wait_for(rotated, what="the scheduled rotation to complete everywhere")
    [(first, rotation_type, _, _)] = await _rotations(cluster, EU, key_id)
    assert rotation_type == "AUTOMATIC" and first != original
    await _wait_encrypting(cluster, key_id, first, US, EU)
    await _wait_same_rotations(cluster, key_id, US, EU)
    next_date = _settings(await _status(cluster, US, key_id))[2]

    async def next_date_replicated() -> bool:
        return _settings(await _status(cluster, EU, key_id))[2] == next_date

    await cluster.wait_for(next_date_replicated, what="the next date to reach the replica")

    # The schedule is shared: after a move of the primary, the new primary rotates.
    await _move_primary(cluster, key_id, US, EU)
    cluster.clock.advance(timedelta(days=91))
    assert await _scheduler_pass(cluster, US) == []

    async def rotated_again() -> bool:
        return len(await _rotations(cluster, US, key_id)) == 2

    await cluster.wait_for(rotated_again, what="the new primary's scheduled rotation")
    await _wait_same_rotations(cluster, key_id, US, EU)
    listed = await _rotations(cluster, US, key_id)
    assert [entry[1] for entry in listed] == ["AUTOMATIC", "AUTOMATIC"]
    assert listed[0][0] == first


async def test_the_on_demand_limit_counts_across_regions(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    for number in range(1, 26):
        await _rotate(cluster, US, key_id)

        async def done(count: int = number) -> bool:
            return len(await _rotations(cluster, US, key_id)) == count

        await cluster.wait_for(done, what=f"rotation {number}")
    await expect_error(
        cluster[US].stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key_id)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LimitExceededException",
    )
    # The count is part of the shared key: a new primary has no rotations left either.
    await _move_primary(cluster, key_id, US, EU)
    await expect_error(
        cluster[EU].stub.RotateKeyOnDemand(pb.RotateKeyOnDemandRequest(key_id=key_id)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LimitExceededException",
    )
    await _wait_same_rotations(cluster, key_id, US, EU)
    assert len(await _rotations(cluster, EU, key_id)) == 25
