"""Bad input on the node-to-node service (meridian.replication.v1.Replication), over mTLS.

The test plays the peer region eu-west-1: it holds that region's node certificate and its
own node identity, and crafts batches with the real codec. Unsigned, wrongly signed,
replayed, out-of-epoch, misaddressed, tampered and malformed batches are refused and
logged, and nothing of them is applied: the node's view of the key is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from multi_region_support import node_certificates, region_config, secure_channel
from structlog.testing import capture_logs

from conftest import ACCOUNT, expect_error
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.proto.replication.v1 import replication_pb2 as rpb
from meridian.proto.replication.v1 import replication_pb2_grpc
from meridian.replication.codec import OutgoingEntry, seal_batch
from meridian.replication.engine import EngineSettings
from meridian.replication.identity import NodeIdentity, verify_identity
from meridian.replication.transport import MemoryNetwork
from meridian.server.config import PeerConfig
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto.peer_wrap import material_commitment
from meridian.server.domain.model import KeyState
from meridian.server.domain.multi_region import (
    LocalMeta,
    Record,
    SharedState,
    VersionInfo,
    add_holder,
    force_promote,
    stage_version,
)
from meridian.server.domain.multi_region_codec import (
    state_digest,
)
from meridian.server.node import Node

if TYPE_CHECKING:
    from conftest import TestPki

US, EU = "us-east-1", "eu-west-1"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class Peer:
    """The fake eu-west-1: its channel to the node, its identity, its own log."""

    node: Node
    kms: kms_pb2_grpc.KeyManagementServiceStub
    replication: replication_pb2_grpc.ReplicationStub
    identity: NodeIdentity
    node_identity: object
    log_id: bytes
    key_id: str
    seq: int = 0

    async def state(self) -> SharedState:
        assert self.node.replication is not None
        found = await self.node.replication.engine._reader.get_state(self.key_id)
        assert found is not None
        return found[0]

    def batch(
        self,
        state: SharedState,
        *,
        materials: dict[bytes, bytes] | None = None,
        seq: int | None = None,
        signer: NodeIdentity | None = None,
        snapshot: tuple[int, bool] | None = None,
    ) -> rpb.PushRequest:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return seal_batch(
            signer or self.identity,
            self.node_identity,  # type: ignore[arg-type]
            log_id=self.log_id,
            created_at_us=1,
            entries=[
                OutgoingEntry(
                    seq=0 if snapshot else seq,
                    record=Record(author_region=EU, author_key_state="Enabled", state=state),
                    materials=materials or {},
                )
            ],
            snapshot=snapshot,
        )


@pytest.fixture
async def peer(test_pki: TestPki, tmp_path: Path) -> AsyncIterator[Peer]:
    certificates = node_certificates(test_pki)
    config = region_config(test_pki, US, tmp_path / US, certificates[US])
    config = replace(config, peers=(PeerConfig(region=EU, endpoint="127.0.0.1:9"),))
    # The node's own shipper to eu-west-1 finds nobody on the in-memory network: it backs
    # off quietly while the test speaks for eu-west-1 over gRPC.
    node = Node(
        config=config,
        clock=FakeClock(),
        replication_transport=MemoryNetwork().transport_factory(US),
        # The fake peer acknowledges nothing through the node's own shipper: ReplicateKey
        # need not wait for it.
        replication_settings=EngineSettings(replicate_wait_s=0.0),
    )
    port = await node.start()
    endpoint = f"127.0.0.1:{port}"
    admin = secure_channel(test_pki, endpoint, US)
    cert, key = certificates[EU]
    peer_channel = grpc.aio.secure_channel(
        endpoint,
        grpc.ssl_channel_credentials(
            root_certificates=test_pki.ca_cert,
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        ),
        options=[("grpc.ssl_target_name_override", f"{US}.node.meridian")],
    )
    try:
        kms = kms_pb2_grpc.KeyManagementServiceStub(admin)
        key_id = (await kms.CreateKey(pb.CreateKeyRequest(multi_region=True))).key_metadata.key_id
        await kms.ReplicateKey(pb.ReplicateKeyRequest(key_id=key_id, replica_region=EU))
        identity = NodeIdentity(EU, os.urandom(128))
        replication = replication_pb2_grpc.ReplicationStub(peer_channel)
        log_id = os.urandom(16)
        hello = await replication.Hello(
            rpb.HelloRequest(identity=identity.to_proto(), log_id=log_id)
        )
        assert hello.applied_seq == 0
        yield Peer(
            node=node,
            kms=kms,
            replication=replication,
            identity=identity,
            node_identity=verify_identity(hello.identity),
            log_id=log_id,
            key_id=key_id,
        )
    finally:
        await peer_channel.close()
        await admin.close()
        await node.stop()


async def _as_replica(peer: Peer) -> SharedState:
    """The view eu-west-1 would send: the primary's, plus eu holding every version."""
    state = await peer.state()
    return add_holder(state, region=EU, material_ids=list(state.versions))


async def test_a_valid_batch_applies_and_its_replay_does_not(peer: Peer) -> None:
    view = await _as_replica(peer)
    request = peer.batch(view)
    applied = await peer.replication.Push(request)
    assert applied.outcome == rpb.PushResponse.APPLIED and applied.applied_seq == 1
    assert await peer.state() == view
    with capture_logs() as logs:
        replayed = await peer.replication.Push(request)
    assert replayed.outcome == rpb.PushResponse.DUPLICATE and replayed.applied_seq == 1
    assert any(entry["event"] == "ignored a duplicate batch" for entry in logs)
    assert await peer.state() == view


@pytest.mark.parametrize(
    "damage",
    ["unsigned", "wrongly signed", "signature of another body", "malformed body"],
)
async def test_bad_signatures_and_bodies_are_refused(peer: Peer, damage: str) -> None:
    before = state_digest(await peer.state())
    request = peer.batch(await _as_replica(peer))
    if damage == "unsigned":
        request = rpb.PushRequest(body=request.body)
    elif damage == "wrongly signed":
        request = peer.batch(await _as_replica(peer), signer=NodeIdentity(EU, os.urandom(128)))
    elif damage == "signature of another body":
        other = peer.batch(await peer.state(), seq=7)
        request = rpb.PushRequest(body=request.body, signature=other.signature)
    else:
        garbage = b"\xff\xff not protobuf"
        request = rpb.PushRequest(
            body=garbage,
            signature=peer.identity.signer.sign(garbage, context=b"meridian/replication/v1/batch"),
        )
    with capture_logs() as logs:
        await expect_error(peer.replication.Push(request), INVALID, "ValidationException")
    assert any(entry["event"] == "refused a replication batch" for entry in logs)
    assert state_digest(await peer.state()) == before
    # Nothing moved the position either: the first real batch is still seq 1.
    ok = await peer.replication.Push(peer.batch(await _as_replica(peer), seq=1))
    assert ok.applied_seq == 1


async def _forced_by_eu(peer: Peer) -> tuple[SharedState, VersionInfo, bytes]:
    """eu-west-1 was promoted by force (epoch 2) and made a version of its own."""
    view = await _as_replica(peer)
    forced, _ = force_promote(
        view,
        LocalMeta(),
        region=EU,
        arn="arn",
        key_state=KeyState.ENABLED,
        current_material_id=view.settings.current_material_id,
    )
    material, material_id = os.urandom(32), os.urandom(32)
    version = VersionInfo(
        material_id=material_id,
        created_at_us=2,
        commitment=material_commitment(material, key_id=peer.key_id, material_id=material_id),
        origin_region=EU,
    )
    return stage_version(forced, region=EU, version=version), version, material


async def test_material_travels_wrapped_and_checked(peer: Peer) -> None:
    state, version, material = await _forced_by_eu(peer)
    before = state_digest(await peer.state())
    # A material that does not match its version's commitment (a relay swapped it).
    forged = peer.batch(state, materials={version.material_id: os.urandom(32)}, seq=1)
    await expect_error(peer.replication.Push(forged), INVALID, "ValidationException")
    # Sealed bytes changed after sealing (and the batch re-signed by a relay that has a
    # node key): the AEAD tag fails.
    good = peer.batch(state, materials={version.material_id: material}, seq=1)
    body = rpb.Batch.FromString(good.body)
    sealed = body.entries[0].materials[0].sealed
    body.entries[0].materials[0].sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    tampered_body = body.SerializeToString()
    tampered = rpb.PushRequest(
        body=tampered_body,
        signature=peer.identity.signer.sign(
            tampered_body, context=b"meridian/replication/v1/batch"
        ),
    )
    await expect_error(peer.replication.Push(tampered), INVALID, "ValidationException")
    assert state_digest(await peer.state()) == before
    # The genuine batch applies: the node now holds eu's version and follows epoch 2.
    assert material not in good.body
    applied = await peer.replication.Push(good)
    assert applied.outcome == rpb.PushResponse.APPLIED
    after = await peer.state()
    assert after.epoch == 2 and after.primary_region == EU
    assert version.material_id in after.versions


async def test_out_of_epoch_records_are_refused_and_nothing_applied(peer: Peer) -> None:
    state, _, _ = await _forced_by_eu(peer)
    await peer.replication.Push(peer.batch(state, seq=1))
    current = await peer.state()
    assert current.epoch == 2
    # A record of epoch 1 (e.g. a replayed old one, or a stale region's) changes nothing.
    stale = await _as_replica(peer)
    stale = replace(stale, settings=replace(stale.settings, epoch=1, rotation_enabled=True))
    with capture_logs() as logs:
        response = await peer.replication.Push(peer.batch(stale, seq=2))
    assert response.outcome == rpb.PushResponse.APPLIED and response.refused_records == 1
    assert any(entry["event"] == "refused a replication record" for entry in logs)
    assert await peer.state() == current


async def test_misaddressed_and_impersonating_batches_are_refused(peer: Peer) -> None:
    before = state_digest(await peer.state())
    view = await _as_replica(peer)
    for field, value in (("destination_region", "ap-south-1"), ("origin_region", "ap-south-1")):
        body = rpb.Batch.FromString(peer.batch(view, seq=1).body)
        setattr(body, field, value)
        data = body.SerializeToString()
        request = rpb.PushRequest(
            body=data,
            signature=peer.identity.signer.sign(data, context=b"meridian/replication/v1/batch"),
        )
        await expect_error(peer.replication.Push(request), INVALID, "ValidationException")
    assert state_digest(await peer.state()) == before


async def test_a_gap_is_refused_until_the_missing_entries_come(peer: Peer) -> None:
    view = await _as_replica(peer)
    response = await peer.replication.Push(peer.batch(view, seq=5))
    assert response.outcome == rpb.PushResponse.GAP and response.applied_seq == 0
    assert await peer.state() != view


async def test_malformed_records_are_refused(peer: Peer) -> None:
    view = await _as_replica(peer)
    body = rpb.Batch.FromString(peer.batch(view, seq=1).body)
    body.entries[0].record.state.settings.current_material_id = b"\x00" * 32
    data = body.SerializeToString()
    request = rpb.PushRequest(
        body=data,
        signature=peer.identity.signer.sign(data, context=b"meridian/replication/v1/batch"),
    )
    await expect_error(peer.replication.Push(request), INVALID, "ValidationException")
    body.entries[0].record.author_key_state = "Sleeping"
    data = body.SerializeToString()
    request = rpb.PushRequest(
        body=data,
        signature=peer.identity.signer.sign(data, context=b"meridian/replication/v1/batch"),
    )
    await expect_error(peer.replication.Push(request), INVALID, "ValidationException")


async def test_identities_are_pinned(peer: Peer) -> None:
    other = NodeIdentity(EU, os.urandom(128))
    await expect_error(
        peer.replication.Hello(rpb.HelloRequest(identity=other.to_proto(), log_id=peer.log_id)),
        grpc.StatusCode.PERMISSION_DENIED,
        "AccessDeniedException",
    )
    posing = NodeIdentity("ap-south-1", os.urandom(128))
    await expect_error(
        peer.replication.Hello(rpb.HelloRequest(identity=posing.to_proto(), log_id=peer.log_id)),
        grpc.StatusCode.PERMISSION_DENIED,
        "AccessDeniedException",
    )
    forged = peer.identity.to_proto()
    forged.signature = b"\x00" * len(forged.signature)
    await expect_error(
        peer.replication.Hello(rpb.HelloRequest(identity=forged, log_id=peer.log_id)),
        INVALID,
        "ValidationException",
    )
    # The pinned identity is still the one that works.
    hello = await peer.replication.Hello(
        rpb.HelloRequest(identity=peer.identity.to_proto(), log_id=peer.log_id)
    )
    assert hello.identity.region == US


async def test_a_push_before_hello_is_refused(test_pki: TestPki, tmp_path: Path) -> None:
    certificates = node_certificates(test_pki)
    config = replace(
        region_config(test_pki, US, tmp_path / US, certificates[US]),
        peers=(PeerConfig(region=EU, endpoint="127.0.0.1:9"),),
        account_id=ACCOUNT,
    )
    node = Node(
        config=config,
        clock=FakeClock(),
        replication_transport=MemoryNetwork().transport_factory(US),
    )
    port = await node.start()
    cert, key = certificates[EU]
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        grpc.ssl_channel_credentials(
            root_certificates=test_pki.ca_cert,
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        ),
        options=[("grpc.ssl_target_name_override", f"{US}.node.meridian")],
    )
    try:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        await expect_error(
            stub.Push(rpb.PushRequest(body=b"x", signature=b"y")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "KMSInvalidStateException",
        )
    finally:
        await channel.close()
        await node.stop()
