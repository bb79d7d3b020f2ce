"""A received batch is applied whole or not at all, bulk reads and queued writes included
(replication/inbound.py), and the log then delivers it again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.replication.inbound import BatchApplier

if TYPE_CHECKING:
    from conftest import TestPki

from multi_region_support import SETTINGS, MrkCluster, create_mrk, start_cluster, stop_cluster

US, EU = "us-east-1", "eu-west-1"


async def _inbound_position(cluster: MrkCluster, region: str, origin: str) -> int:
    status = await cluster.status(region)
    return next((i.applied_seq for i in status.inbound if i.origin_region == origin), 0)


async def test_a_batch_that_fails_midway_applies_nothing(
    test_pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ReplicateKey into a region that is down waits at most this long (real time).
    settings = replace(SETTINGS, replicate_wait_s=0.05)
    cluster = await start_cluster(test_pki, tmp_path, settings)
    try:
        await cluster.wait_for(cluster.connected, what="the regions to connect")
        cluster.network.set_down(EU)
        keys = [await create_mrk(cluster) for _ in range(4)]
        for key_id in keys:
            await cluster[US].stub.ReplicateKey(
                pb.ReplicateKeyRequest(key_id=key_id, replica_region=EU)
            )
        before = await _inbound_position(cluster, EU, US)

        # The third record that creates a replica fails, after two replicas were created
        # (their key rows written at once, their views and versions queued).
        calls = 0
        original = BatchApplier._write_decision

        async def failing(self: BatchApplier, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("injected failure")
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(BatchApplier, "_write_decision", failing)
        cluster.network.set_down(EU, down=False)

        async def failed_once() -> bool:
            return calls >= 3

        await cluster.wait_for(failed_once, what="the batch to fail", step_s=0.05)
        assert calls == 3  # one batch, stopped at its third replica
        for key_id in keys:
            assert await cluster.describe(EU, key_id) is None
        assert await _inbound_position(cluster, EU, US) == before

        # The sender retries from the receiver's position: now everything arrives.
        async def all_replicated() -> bool:
            return all([await cluster.state_is(EU, key_id, "Enabled") for key_id in keys])

        await cluster.wait_for(all_replicated, what="the replicas after the retry")
        assert await _inbound_position(cluster, EU, US) > before
        await cluster.wait_for(cluster.caught_up, what="the logs to drain")
    finally:
        await stop_cluster(cluster)


async def test_an_append_is_shipped_at_once_not_at_the_next_poll(
    test_pki: TestPki, tmp_path: Path
) -> None:
    # Shippers read the log without the write lock; an append wakes them from inside its
    # still-committing transaction, and they must then look again behind the lock. With
    # the safety-net poll out of reach, only that keeps the replica from waiting.
    cluster = await start_cluster(test_pki, tmp_path, replace(SETTINGS, idle_poll_s=10.0**6))
    try:
        await cluster.wait_for(cluster.connected, what="the regions to connect")
        for _ in range(3):
            key_id = await create_mrk(cluster)
            await cluster[US].stub.ReplicateKey(
                pb.ReplicateKeyRequest(key_id=key_id, replica_region=EU)
            )

            async def replicated(key_id: str = key_id) -> bool:
                return await cluster.state_is(EU, key_id, "Enabled")

            await cluster.wait_for(replicated, what="the replica", step_s=0.01)
    finally:
        await stop_cluster(cluster)
