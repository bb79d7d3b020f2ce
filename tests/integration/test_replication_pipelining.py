"""Catch-up ships the next batch built while the peer applies the one before (issue 9):
every entry still arrives once, in order, and a batch built ahead on a position that did
not come true (a failed push) is dropped, not sent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.replication.v1 import replication_pb2 as replication_pb
from meridian.replication.engine import ReplicationEngine
from meridian.replication.transport import TransportError

if TYPE_CHECKING:
    from conftest import TestPki

from multi_region_support import SETTINGS, MrkCluster, create_mrk, start_cluster, stop_cluster

US, EU = "us-east-1", "eu-west-1"
KEYS = 40  # two log entries each: several batches of SETTINGS' 50 entries


class _FailFirstPush:
    """EU's inbound side, failing the first Push from US (applying nothing of it)."""

    def __init__(self, engine: ReplicationEngine) -> None:
        self._engine = engine
        self.pushes = 0

    async def handle_hello(
        self, caller_region: str, request: replication_pb.HelloRequest
    ) -> replication_pb.HelloResponse:
        return await self._engine.handle_hello(caller_region, request)

    async def handle_push(
        self, caller_region: str, request: replication_pb.PushRequest
    ) -> replication_pb.PushResponse:
        if caller_region == US:
            self.pushes += 1
        if caller_region == US and self.pushes == 1:
            raise TransportError("injected: the link dropped the call")
        return await self._engine.handle_push(caller_region, request)


async def _replicas_in(cluster: MrkCluster, region: str, keys: list[str]) -> bool:
    for key_id in keys:
        if not await cluster.state_is(region, key_id, "Enabled"):
            return False
    return True


async def test_a_backlog_is_shipped_with_batches_built_ahead(
    test_pki: TestPki, tmp_path: Path
) -> None:
    # ReplicateKey into a region that is down waits at most this long (real time).
    settings = replace(SETTINGS, replicate_wait_s=0.05)
    cluster = await start_cluster(test_pki, tmp_path, settings)
    try:
        await cluster.wait_for(cluster.connected, what="the regions to connect")
        cluster.network.set_down(EU)
        keys = [await create_mrk(cluster) for _ in range(KEYS)]
        for key_id in keys:
            await cluster[US].stub.ReplicateKey(
                pb.ReplicateKeyRequest(key_id=key_id, replica_region=EU)
            )
        eu, us = cluster[EU].node.replication, cluster[US].node.replication
        assert eu is not None and us is not None
        flaky = _FailFirstPush(eu.engine)
        cluster.network.register(EU, flaky)
        cluster.network.set_down(EU, down=False)

        await cluster.wait_for(lambda: _replicas_in(cluster, EU, keys), what="every replica")
        await cluster.wait_for(cluster.caught_up, what="every log acknowledged")
        link = us.engine.links[EU]
        # The first push failed with a batch built ahead of it: that one was dropped,
        # and the shipper went on from what EU said it had applied.
        assert flaky.pushes >= 3
        assert link.prepared_dropped >= 1
        # Batches built ahead were sent, and nothing was applied twice or skipped:
        # EU's position is US's head and every replica exists (above).
        assert link.prepared_sent >= 1
        status = await cluster.status(US)
        eu_status = next(peer for peer in status.peers if peer.region == EU)
        eu_inbound = await cluster.status(EU)
        applied = next(i.applied_seq for i in eu_inbound.inbound if i.origin_region == US)
        assert applied == status.head_seq == eu_status.acked_seq
    finally:
        await stop_cluster(cluster)
