"""Multi-region keys through the real node: three in-process regions, in-memory replication.

ReplicateKey, shared vs independent properties, UpdatePrimaryRegion and its Updating
window, PendingReplicaDeletion, forced promotion and the merge, snapshots, status.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from conftest import expect_error
from meridian.cli import pki
from meridian.client import (
    AsyncKmsClient,
    Tag,
    UnknownRegionError,
    UnsupportedOperationException,
)
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.proto.replication.v1 import replication_pb2 as replication_pb
from meridian.proto.replication.v1 import replication_pb2_grpc
from meridian.proto.replication_admin.v1 import replication_admin_pb2 as admin_pb
from meridian.proto.replication_admin.v1 import replication_admin_pb2_grpc
from meridian.server.domain.model import KeyVersion
from meridian.server.domain.multi_region_codec import (
    state_digest,
)
from meridian.server.domain.service import material_aad
from meridian.server.storage.replication_repository import SqliteReplicationWriter

if TYPE_CHECKING:
    from conftest import TestPki

from multi_region_support import (
    SETTINGS,
    MrkCluster,
    create_mrk,
    mrk_cluster,
    replicate,
    start_cluster,
    stop_cluster,
)

__all__ = ["mrk_cluster"]

US, EU, AP = "us-east-1", "eu-west-1", "ap-south-1"


async def _views(cluster: MrkCluster, key_id: str) -> dict[str, str]:
    """Each region's digest of the key's shared state (only regions that hold a view)."""
    digests = {}
    for name, region in cluster.regions.items():
        assert region.node.replication is not None
        found = await region.node.replication.engine._reader.get_state(key_id)
        if found is not None:
            digests[name] = state_digest(found[0])
    return digests


async def test_create_replicate_and_decrypt_anywhere(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    created = await cluster[US].stub.CreateKey(
        pb.CreateKeyRequest(multi_region=True, description="orders")
    )
    key = created.key_metadata
    assert key.key_id.startswith("mrk-") and key.multi_region
    assert key.multi_region_configuration.multi_region_key_type == "PRIMARY"
    assert key.multi_region_configuration.primary_key.region == US
    assert list(key.multi_region_configuration.replica_keys) == []

    replicated = await cluster[US].stub.ReplicateKey(
        pb.ReplicateKeyRequest(
            key_id=key.arn,
            replica_region=EU,
            description="orders in Europe",
            tags=[pb.Tag(tag_key="team", tag_value="payments")],
        )
    )
    replica = replicated.replica_key_metadata
    assert replica.key_state == "Creating"
    assert replica.arn == key.arn.replace(US, EU)
    assert replica.multi_region_configuration.multi_region_key_type == "REPLICA"
    assert [t.tag_key for t in replicated.replica_tags] == ["team"]
    assert replicated.region == US

    await cluster.wait_for(lambda: cluster.state_is(EU, key.key_id, "Enabled"), what="replica")
    described = await cluster.describe(EU, key.key_id)
    assert described is not None
    assert described.description == "orders in Europe"
    assert described.multi_region_configuration.primary_key.region == US
    assert [r.region for r in described.multi_region_configuration.replica_keys] == [EU]
    tags = await cluster[EU].stub.ListResourceTags(pb.ListResourceTagsRequest(key_id=key.key_id))
    assert [(t.tag_key, t.tag_value) for t in tags.tags] == [("team", "payments")]
    primary = await cluster.describe(US, key.key_id)
    assert primary is not None
    assert [r.arn for r in primary.multi_region_configuration.replica_keys] == [replica.arn]

    context = {"tenant": "acme"}
    for source, target in ((US, EU), (EU, US)):
        sealed = await cluster[source].stub.Encrypt(
            pb.EncryptRequest(key_id=key.key_id, plaintext=b"secret", encryption_context=context)
        )
        opened = await cluster[target].stub.Decrypt(
            pb.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob, encryption_context=context)
        )
        assert opened.plaintext == b"secret"
        assert opened.region == target
        assert opened.key_id == key.arn.replace(US, target)
    # A region without a replica has no such key.
    assert await cluster.describe(AP, key.key_id) is None
    await cluster.wait_for(cluster.caught_up, what="the logs to drain")
    views = await _views(cluster, key.key_id)
    assert set(views) == {US, EU} and len(set(views.values())) == 1


async def test_replicate_key_refusals(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    stub = cluster[US].stub
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    invalid, failed = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION

    def call(key: str, region: str, where: str = US) -> object:
        return cluster[where].stub.ReplicateKey(
            pb.ReplicateKeyRequest(key_id=key, replica_region=region)
        )

    await expect_error(call(key_id, EU), grpc.StatusCode.ALREADY_EXISTS, "AlreadyExistsException")
    await expect_error(call(key_id, US), invalid, "ValidationException")
    await expect_error(call(key_id, "xx-nowhere-9"), invalid, "UnsupportedOperationException")
    await expect_error(call(key_id, "not a region"), invalid, "ValidationException")
    await expect_error(call(key_id, ""), invalid, "ValidationException")
    # Only the primary, in its region, is replicated (AWS; localstack#13102).
    message = await expect_error(
        call(key_id, AP, where=EU), invalid, "UnsupportedOperationException"
    )
    assert "primary" in message
    single = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    await expect_error(call(single, EU), invalid, "UnsupportedOperationException")
    await stub.CreateAlias(pb.CreateAliasRequest(alias_name="alias/mrk", target_key_id=key_id))
    await expect_error(call("alias/mrk", AP), invalid, "ValidationException")
    await stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
    )
    await expect_error(call(key_id, AP), failed, "KMSInvalidStateException")


async def test_independent_properties_stay_per_region(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster, description="primary")
    await replicate(cluster, key_id, EU)
    await cluster[EU].stub.DisableKey(pb.DisableKeyRequest(key_id=key_id))
    await cluster[EU].stub.UpdateKeyDescription(
        pb.UpdateKeyDescriptionRequest(key_id=key_id, description="changed in Europe")
    )
    await cluster.wait_for(cluster.caught_up, what="the logs to drain")
    primary = await cluster.describe(US, key_id)
    assert primary is not None
    assert primary.key_state == "Enabled" and primary.description == "primary"
    await cluster[US].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"))
    await expect_error(
        cluster[EU].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DisabledException",
    )


async def test_update_primary_region_moves_the_primary(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    await replicate(cluster, key_id, AP)
    await cluster.wait_for(cluster.caught_up, what="reports of the replicas' states")
    # Cut the new primary off so that the hand-over's Updating window stays observable.
    cluster.network.partition(US, EU)
    cluster.network.partition(AP, EU)
    response = await cluster[US].stub.UpdatePrimaryRegion(
        pb.UpdatePrimaryRegionRequest(key_id=key_id, primary_region=EU)
    )
    assert response.region == US
    assert await cluster.key_state(US, key_id) == "Updating"
    old = await cluster.describe(US, key_id)
    assert old is not None and old.multi_region_configuration.multi_region_key_type == "REPLICA"
    # Cryptography keeps working while Updating; management of shared properties does not.
    sealed = await cluster[US].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"during"))
    await expect_error(
        cluster[US].stub.DisableKey(pb.DisableKeyRequest(key_id=key_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )
    await expect_error(
        cluster[US].stub.ReplicateKey(pb.ReplicateKeyRequest(key_id=key_id, replica_region=AP)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UnsupportedOperationException",
    )
    cluster.network.partition(US, EU, cut=False)
    cluster.network.partition(AP, EU, cut=False)
    await cluster.wait_for(lambda: cluster.state_is(US, key_id, "Enabled"), what="old primary")
    await cluster.wait_for(lambda: cluster.state_is(EU, key_id, "Enabled"), what="new primary")
    new = await cluster.describe(EU, key_id)
    assert new is not None and new.multi_region_configuration.multi_region_key_type == "PRIMARY"
    await cluster.wait_for(cluster.caught_up, what="the logs to drain")
    for region in (US, AP):
        described = await cluster.describe(region, key_id)
        assert described is not None
        assert described.multi_region_configuration.primary_key.region == EU
    opened = await cluster[AP].stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob)
    )
    assert opened.plaintext == b"during"
    # The old primary's writes are refused now; the new primary's are not.
    await expect_error(
        cluster[US].stub.UpdatePrimaryRegion(
            pb.UpdatePrimaryRegionRequest(key_id=key_id, primary_region=AP)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UnsupportedOperationException",
    )
    views = await _views(cluster, key_id)
    assert len(set(views.values())) == 1


async def test_update_primary_region_refusals(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    await cluster.wait_for(cluster.caught_up, what="reports")

    def move(region: str) -> object:
        return cluster[US].stub.UpdatePrimaryRegion(
            pb.UpdatePrimaryRegionRequest(key_id=key_id, primary_region=region)
        )

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_error(move(US), invalid, "UnsupportedOperationException")
    await expect_error(move(AP), grpc.StatusCode.NOT_FOUND, "NotFoundException")
    await expect_error(move(""), invalid, "ValidationException")
    await cluster[EU].stub.DisableKey(pb.DisableKeyRequest(key_id=key_id))
    await cluster.wait_for(cluster.caught_up, what="the replica's report")
    await expect_error(move(EU), grpc.StatusCode.FAILED_PRECONDITION, "DisabledException")
    await cluster[US].stub.DisableKey(pb.DisableKeyRequest(key_id=key_id))
    await expect_error(move(EU), grpc.StatusCode.FAILED_PRECONDITION, "DisabledException")


async def test_primary_with_replicas_waits_in_pending_replica_deletion(
    mrk_cluster: MrkCluster,
) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    scheduled = await cluster[US].stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
    )
    assert scheduled.key_state == "PendingReplicaDeletion"
    assert not scheduled.HasField("deletion_date")
    primary = await cluster.describe(US, key_id)
    assert primary is not None and not primary.HasField("deletion_date")
    await expect_error(
        cluster[US].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "KMSInvalidStateException",
    )
    # The replica is still usable, and is deleted on its own schedule.
    await cluster[EU].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"))
    await cluster[EU].stub.ScheduleKeyDeletion(
        pb.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7)
    )
    await cluster.wait_for(
        lambda: cluster.state_is(US, key_id, "PendingDeletion"),
        what="the primary's window to start once the replica is gone",
        step_s=86400.0,
    )
    assert await cluster.describe(EU, key_id) is None
    primary = await cluster.describe(US, key_id)
    assert primary is not None and primary.HasField("deletion_date")
    await cluster.wait_for(
        lambda: _absent(cluster, US, key_id), what="the primary's deletion", step_s=86400.0
    )


async def _absent(cluster: MrkCluster, region: str, key_id: str) -> bool:
    return await cluster.describe(region, key_id) is None


async def test_cancel_pending_replica_deletion(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    await cluster[US].stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(key_id=key_id))
    cancelled = await cluster[US].stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(key_id=key_id))
    assert cancelled.key_id.endswith(key_id)
    assert await cluster.key_state(US, key_id) == "Disabled"


async def test_status_reports_peers_backlog_and_lag(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    cluster.network.set_down(EU)
    await cluster[US].stub.ReplicateKey(pb.ReplicateKeyRequest(key_id=key_id, replica_region=AP))

    async def eu_behind() -> bool:
        status = await cluster.status(US)
        peer = {p.region: p for p in status.peers}[EU]
        return peer.backlog_entries > 0 and peer.connection_state == "backing-off"

    await cluster.wait_for(eu_behind, what="the status to show the backlog")
    before = (await cluster.status(US)).peers
    lag_before = {p.region: p for p in before}[EU].lag_s
    cluster.clock.advance(timedelta(seconds=30))
    status = await cluster.status(US)
    assert status.region == US and status.multi_region_keys == 1
    peers = {peer.region: peer for peer in status.peers}
    assert set(peers) == {EU, AP}
    # The lag is the age of the oldest entry the peer has not acknowledged.
    assert peers[EU].lag_s == pytest.approx(lag_before + 30.0)
    assert peers[EU].last_error and peers[EU].pinned
    assert peers[AP].connection_state == "connected"
    cluster.network.set_down(EU, down=False)
    await cluster.wait_for(cluster.caught_up, what="the backlog to drain")
    peer = {p.region: p for p in (await cluster.status(US)).peers}[EU]
    assert peer.backlog_entries == 0 and peer.lag_s == 0 and peer.connection_state == "connected"
    inbound = {i.origin_region: i for i in (await cluster.status(EU)).inbound}
    assert inbound[US].applied_seq == peer.acked_seq


@pytest.mark.parametrize("principal", ["admin"])
async def test_status_is_an_operator_call(mrk_cluster: MrkCluster, principal: str) -> None:
    response = await mrk_cluster[US].admin.GetReplicationStatus(
        admin_pb.GetReplicationStatusRequest()
    )
    assert len(response.signing_key_fingerprint) == 64


# ---- two-phase rotation (the hook the rotation feature calls) ---------------------------


async def _rotate(cluster: MrkCluster, region: str, key_id: str) -> tuple[bool, bytes]:
    """Rotate an MRK the way the rotation feature does: store the version (step 1), then
    hand it to the two-phase hook instead of making it current (docs of stage_version)."""
    service = cluster[region].node.service
    assert service is not None and service.multi_region is not None
    material, material_id = os.urandom(32), os.urandom(32)
    version = KeyVersion(
        key_id=key_id,
        material_id=material_id,
        created_at=cluster.clock.now(),
        wrapped_material=await service.root_key.wrap(
            material, aad=material_aad(key_id, material_id)
        ),
    )
    async with service.store.write() as tx:
        key = await tx.get_key(key_id)
        assert key is not None
        await SqliteReplicationWriter(tx.connection).insert_version(version)
        current_now = await service.multi_region.stage_version(tx, key, version, material)
        if current_now:
            key.current_material_id = material_id
            await tx.update_key(key)
    return current_now, material_id


async def _encrypting_version(cluster: MrkCluster, region: str, key_id: str) -> str:
    sealed = await cluster[region].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"v"))
    opened = await cluster[region].stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob)
    )
    return str(opened.key_material_id)


async def test_rotation_is_two_phase(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    alone, first = await _rotate(cluster, US, key_id)
    assert alone  # no replica: current at once
    assert await _encrypting_version(cluster, US, key_id) == first.hex()
    await replicate(cluster, key_id, EU)
    await replicate(cluster, key_id, AP)
    cluster.network.set_down(AP)
    current_now, pending = await _rotate(cluster, US, key_id)
    assert not current_now
    # Shipped to every replica first: until AP acknowledges, the primary (and EU, which
    # already holds it) keep encrypting with the previous version.

    async def eu_holds_it() -> bool:
        status = await cluster.status(US)
        return [p.missing_regions for p in status.pending_versions] == [[AP]]

    await cluster.wait_for(eu_holds_it, what="EU to acknowledge the pending version")
    status = await cluster.status(US)
    assert [p.key_material_id for p in status.pending_versions] == [pending.hex()]
    assert status.pending_versions[0].primary_region == US
    assert await _encrypting_version(cluster, US, key_id) == first.hex()
    assert await _encrypting_version(cluster, EU, key_id) == first.hex()
    await expect_error(
        cluster[EU].stub.ReplicateKey(pb.ReplicateKeyRequest(key_id=key_id, replica_region=AP)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UnsupportedOperationException",
    )
    cluster.network.set_down(AP, down=False)

    async def promoted() -> bool:
        return await _encrypting_version(cluster, US, key_id) == pending.hex()

    await cluster.wait_for(promoted, what="the version to become current")
    await cluster.wait_for(cluster.caught_up, what="the logs to drain")
    assert not (await cluster.status(US)).pending_versions
    for region in (EU, AP):
        assert await _encrypting_version(cluster, region, key_id) == pending.hex()


async def test_a_replica_made_later_gets_every_version(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    blobs = []
    for _ in range(3):
        await _rotate(cluster, US, key_id)
        sealed = await cluster[US].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"old"))
        blobs.append(sealed.ciphertext_blob)
    await replicate(cluster, key_id, AP)
    for blob in blobs:
        opened = await cluster[AP].stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))
        assert opened.plaintext == b"old"


# ---- forced promotion and the merge ------------------------------------------------------


async def test_forced_promotion_then_the_old_primary_merges(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)
    await replicate(cluster, key_id, AP)
    await cluster.wait_for(cluster.caught_up, what="the logs to drain")
    # The primary's region is cut off from the others, but keeps serving its clients.
    for other in (EU, AP):
        cluster.network.partition(US, other)
    forced = await cluster[EU].admin.ForcePrimaryRegion(
        admin_pb.ForcePrimaryRegionRequest(key_id=key_id, primary_region=EU)
    )
    assert forced.primary_region == EU and forced.epoch == 2 and forced.region == EU
    described = await cluster.describe(EU, key_id)
    assert described is not None
    assert described.multi_region_configuration.multi_region_key_type == "PRIMARY"
    # Split brain, by design: each side rotates and encrypts. Both rotations stay pending:
    # each side's live members include the other side, which has not acknowledged them,
    # so nobody encrypts with a version some replica may lack.
    before = await _encrypting_version(cluster, US, key_id)
    _, old_side = await _rotate(cluster, US, key_id)
    _, new_side = await _rotate(cluster, EU, key_id)
    from_old = await cluster[US].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"old"))
    from_new = await cluster[EU].stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"new"))
    assert await _encrypting_version(cluster, US, key_id) == before
    assert await _encrypting_version(cluster, EU, key_id) == before
    # The old primary still believes it is primary (it cannot know).
    stale = await cluster.describe(US, key_id)
    assert stale is not None and stale.multi_region_configuration.multi_region_key_type == "PRIMARY"
    for other in (EU, AP):
        cluster.network.partition(US, other, cut=False)
    await cluster.wait_for(
        lambda: _encrypting(cluster, EU, key_id, new_side), what="the new primary's rotation"
    )
    await cluster.wait_for(cluster.caught_up, what="the merge")

    async def merged() -> bool:
        views = await _views(cluster, key_id)
        return len(views) == 3 and len(set(views.values())) == 1

    await cluster.wait_for(merged, what="the views to converge")
    old = await cluster.describe(US, key_id)
    assert old is not None and old.multi_region_configuration.multi_region_key_type == "REPLICA"
    assert old.multi_region_configuration.primary_key.region == EU
    assert old.key_state == "Enabled"
    # The new primary's epoch won: its version is current everywhere. The old primary's
    # version was merged, never dropped: every region holds it.
    for region in (US, EU, AP):
        assert await _encrypting_version(cluster, region, key_id) == new_side.hex()
        engine = cluster[region].node.replication
        assert engine is not None
        held = await engine.engine._reader.held_material_ids(key_id)
        assert {old_side, new_side} <= held
        for blob, plaintext in ((from_old, b"old"), (from_new, b"new")):
            opened = await cluster[region].stub.Decrypt(
                pb.DecryptRequest(ciphertext_blob=blob.ciphertext_blob)
            )
            assert opened.plaintext == plaintext


async def _encrypting(cluster: MrkCluster, region: str, key_id: str, version: bytes) -> bool:
    return await _encrypting_version(cluster, region, key_id) == version.hex()


async def test_forced_promotion_refusals(mrk_cluster: MrkCluster) -> None:
    cluster = mrk_cluster
    key_id = await create_mrk(cluster)
    await replicate(cluster, key_id, EU)

    def force(where: str, region: str, key: str = key_id) -> object:
        return cluster[where].admin.ForcePrimaryRegion(
            admin_pb.ForcePrimaryRegionRequest(key_id=key, primary_region=region)
        )

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_error(force(US, US), invalid, "UnsupportedOperationException")
    await expect_error(force(US, EU), invalid, "ValidationException")  # sent to the wrong region
    await expect_error(force(AP, AP), grpc.StatusCode.NOT_FOUND, "NotFoundException")
    single = (await cluster[EU].stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    await expect_error(force(EU, EU, single), invalid, "UnsupportedOperationException")


# ---- snapshots ------------------------------------------------------------------------


async def test_a_peer_behind_the_retained_tail_gets_a_snapshot(
    test_pki: TestPki, tmp_path: Path
) -> None:
    settings = replace(SETTINGS, retained_entries_max=3)
    cluster = await start_cluster(test_pki, tmp_path, settings)
    try:
        await cluster.wait_for(cluster.connected, what="the regions to connect")
        key_ids = [await create_mrk(cluster) for _ in range(4)]
        for key_id in key_ids:
            await replicate(cluster, key_id, AP)
        cluster.network.set_down(AP)
        for key_id in key_ids:
            await cluster[US].stub.ReplicateKey(
                pb.ReplicateKeyRequest(key_id=key_id, replica_region=EU)
            )
        status = await cluster.status(US)
        assert status.first_retained_seq > 1  # entries AP never acknowledged were pruned
        cluster.network.set_down(AP, down=False)
        await cluster.wait_for(cluster.caught_up, what="the snapshot")
        for key_id in key_ids:
            described = await cluster.describe(AP, key_id)
            assert described is not None
            regions = [r.region for r in described.multi_region_configuration.replica_keys]
            assert regions == sorted([AP, EU])
    finally:
        await stop_cluster(cluster)


# ---- who may call what ---------------------------------------------------------------


async def test_nodes_cannot_call_the_kms_api_and_users_cannot_replicate(
    mrk_cluster: MrkCluster, test_pki: TestPki
) -> None:
    region = mrk_cluster[US]
    cert, key = pki.node_paths(test_pki.directory, EU)
    node_credentials = grpc.ssl_channel_credentials(
        root_certificates=test_pki.ca_cert,
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", f"{US}.node.meridian")]
    async with grpc.aio.secure_channel(
        region.endpoint, node_credentials, options=options
    ) as channel:
        kms = kms_pb2_grpc.KeyManagementServiceStub(channel)
        await expect_error(
            kms.CreateKey(pb.CreateKeyRequest()),
            grpc.StatusCode.PERMISSION_DENIED,
            "AccessDeniedException",
        )
        admin = replication_admin_pb2_grpc.ReplicationAdminStub(channel)
        await expect_error(
            admin.GetReplicationStatus(admin_pb.GetReplicationStatusRequest()),
            grpc.StatusCode.PERMISSION_DENIED,
            "AccessDeniedException",
        )
    replication = replication_pb2_grpc.ReplicationStub(region.channel)  # the admin's channel
    await expect_error(
        replication.Hello(replication_pb.HelloRequest()),
        grpc.StatusCode.PERMISSION_DENIED,
        "AccessDeniedException",
    )


# ---- the SDK (the async twin; the e2e tests use the blocking one) ----------------------


async def test_the_async_sdk_replicates_moves_and_reports(
    mrk_cluster: MrkCluster, test_pki: TestPki
) -> None:
    cluster = mrk_cluster
    cert, key = pki.client_paths(test_pki.directory, "admin")
    client = AsyncKmsClient(
        {name: region.endpoint for name, region in cluster.regions.items()},
        ca_cert=test_pki.ca_cert,
        client_cert=cert.read_bytes(),
        client_key=key.read_bytes(),
        server_names={name: f"{name}.node.meridian" for name in cluster.regions},
        preferred_region=US,
    )
    async with client:
        created = await client.create_key(multi_region=True, description="sdk")
        key_id = created.key_metadata.key_id
        replicated = await client.replicate_key(
            key_id=created.key_metadata.arn, replica_region=EU, tags={"team": "payments"}
        )
        assert replicated.region == US
        assert replicated.replica_key_metadata.key_state == "Creating"
        assert replicated.replica_tags == (Tag("team", "payments"),)
        await cluster.wait_for(lambda: cluster.state_is(EU, key_id, "Enabled"), what="replica")
        status = await client.get_replication_status(region=US)
        assert status.region == US and {p.region for p in status.peers} == {EU, AP}
        with pytest.raises(UnknownRegionError):
            await client.get_replication_status(region="sa-east-1")
        # A forced promotion goes to the promoted region, whatever the home region is.
        moved = await client.update_primary_region(key_id=key_id, primary_region=EU, force=True)
        assert moved.region == EU
        forced_again = client.force_primary_region(key_id=key_id, primary_region=EU)
        with pytest.raises(UnsupportedOperationException):
            await forced_again
    # The promoted region reads its own write at once. (A DescribeKey through the SDK above
    # may be served by any replica, the nearest first: us-east-1 shows the new primary only
    # once the log has reached it — eventual consistency, so the others are waited for.)
    async with replace_region(client, EU) as pinned:
        described = await pinned.describe_key(key_id=key_id)
        assert described.region == EU
        configuration = described.key_metadata.multi_region_configuration
        assert configuration is not None and configuration.primary_key is not None
        assert configuration.primary_key.region == EU
    await cluster.wait_for(
        lambda: _primary_is(cluster, US, key_id, EU), what="us-east-1 to learn the new primary"
    )


def replace_region(client: AsyncKmsClient, region: str) -> AsyncKmsClient:
    """A client like ``client`` but pinned to ``region`` (every call goes there)."""
    return AsyncKmsClient(
        dict(client._endpoints),
        ca_cert=client._ca_cert,
        client_cert=client._client_cert,
        client_key=client._client_key,
        server_names=dict(client._server_names),
        region=region,
    )


async def _primary_is(cluster: MrkCluster, region: str, key_id: str, primary: str) -> bool:
    described = await cluster.describe(region, key_id)
    return (
        described is not None and described.multi_region_configuration.primary_key.region == primary
    )
