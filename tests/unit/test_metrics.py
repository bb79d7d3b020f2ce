"""The node's metrics registry: replication gauges from replication's status snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from prometheus_client import generate_latest

from meridian.server.metrics import NodeMetrics


@dataclass(frozen=True)
class Peer:
    region: str
    lag_s: float
    backlog_entries: int


@dataclass(frozen=True)
class Snapshot:
    peers: list[Peer]


async def test_replication_lag_and_backlog_per_peer_are_exported() -> None:
    metrics = NodeMetrics()
    taken = asyncio.Event()

    async def snapshot() -> Snapshot:
        taken.set()
        return Snapshot([Peer("eu-west-1", 1.5, 7), Peer("ap-south-1", 0.0, 0)])

    task = asyncio.create_task(metrics.follow_replication(snapshot, interval_s=3600))
    await taken.wait()
    await asyncio.sleep(0)
    text = generate_latest(metrics.registry).decode()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert 'meridian_replication_lag_seconds{peer="eu-west-1"} 1.5' in text
    assert 'meridian_replication_backlog_entries{peer="eu-west-1"} 7.0' in text
    assert 'meridian_replication_backlog_entries{peer="ap-south-1"} 0.0' in text


def test_two_nodes_do_not_share_counters() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.requests.labels(operation="Encrypt", outcome="ok").inc()
    assert "meridian_requests_total" in generate_latest(first.registry).decode()
    assert 'operation="Encrypt"' not in generate_latest(second.registry).decode()
