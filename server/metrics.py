"""Prometheus metrics of one node, served over HTTP when ``[metrics] listen`` is set.

Why prometheus-client rather than hand-written text: it is the Prometheus project's
own implementation of the exposition format (escaping, histogram buckets, ``_total``
and ``_created`` conventions, content negotiation), it is small and pure Python with
no dependencies, and its thread-safe metrics and WSGI server run beside the event
loop without blocking it. Each node has its own ``CollectorRegistry``, never the
library's global one, so in-process test nodes do not share counters.

Metrics (all prefixed ``meridian_``):

| name | type | labels |
|---|---|---|
| requests_total | counter | operation, outcome (``ok`` or the AWS error name) |
| request_duration_seconds | histogram | operation |
| audit_write_seconds | histogram | (submission to durable commit of a record) |
| audit_commit_seconds | histogram | (one group commit) |
| audit_batch_items | histogram | (items per group commit) |
| audit_write_failures_total | counter | |
| audit_queue_items | gauge | (records waiting for a commit) |
| audit_unacked_digests | gauge | peer (digests a peer has not acknowledged) |
| keys | gauge | state |
| replication_lag_seconds | gauge | peer |
| replication_backlog_entries | gauge | peer |
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from meridian.server.api.interceptor import CallInfo
from meridian.server.domain.errors import KmsError

log = structlog.get_logger("meridian.metrics")

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
KEY_COUNT_REFRESH_S = 15.0


@dataclass(frozen=True, slots=True)
class PeerReplicationStatus:
    peer_region: str
    lag_s: float
    backlog_entries: int


class ReplicationStatusSource(Protocol):
    """What replication exposes for metrics; read from the metrics HTTP thread."""

    def replication_status(self) -> Sequence[PeerReplicationStatus]: ...


class _PeerLike(Protocol):
    @property
    def region(self) -> str: ...

    @property
    def lag_s(self) -> float: ...

    @property
    def backlog_entries(self) -> int: ...


class ReplicationSnapshot(Protocol):
    """The part of replication's status snapshot the metrics read (EngineStatus)."""

    @property
    def peers(self) -> Sequence[_PeerLike]: ...


class _CachedReplicationStatus:
    def __init__(self) -> None:
        self.statuses: tuple[PeerReplicationStatus, ...] = ()

    def replication_status(self) -> Sequence[PeerReplicationStatus]:
        return self.statuses


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "meridian_requests", "API calls", ["operation", "outcome"], registry=registry
        )
        self.request_duration = Histogram(
            "meridian_request_duration_seconds",
            "API call latency, from receipt to response (audit included)",
            ["operation"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.audit_write = Histogram(
            "meridian_audit_write_seconds",
            "Time from a record's submission to its durable commit",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.audit_commit = Histogram(
            "meridian_audit_commit_seconds",
            "Duration of one group commit",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.audit_batch = Histogram(
            "meridian_audit_batch_items",
            "Items per group commit",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.audit_failures = Counter(
            "meridian_audit_write_failures", "Group commits that failed", registry=registry
        )
        self.audit_queue = Gauge(
            "meridian_audit_queue_items", "Records waiting for a commit", registry=registry
        )
        self.unacked_digests = Gauge(
            "meridian_audit_unacked_digests",
            "Sealed digests a peer region has not acknowledged",
            ["peer"],
            registry=registry,
        )
        self.keys = Gauge("meridian_keys", "Keys by state", ["state"], registry=registry)
        self._replication = _ReplicationCollector()
        registry.register(self._replication)
        self._server: WSGIServer | None = None

    # ---- wiring ----------------------------------------------------------------------

    def hook(self) -> MetricsHook:
        return MetricsHook(self)

    def set_replication_source(self, source: ReplicationStatusSource) -> None:
        self._replication.source = source

    def serve(self, listen: str) -> int:
        """Serve /metrics on ``host:port`` in a daemon thread; returns the bound port."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    async def follow_replication(
        self, snapshot: Callable[[], Awaitable[ReplicationSnapshot]], *, interval_s: float
    ) -> None:
        """Keep the replication gauges current from replication's async status snapshot
        (runs as a node task; the HTTP thread reads the last copy)."""
        source = _CachedReplicationStatus()
        self.set_replication_source(source)
        while True:
            try:
                current = await snapshot()
            except Exception:
                log.exception("reading replication status for metrics failed")
            else:
                source.statuses = tuple(
                    PeerReplicationStatus(peer.region, peer.lag_s, peer.backlog_entries)
                    for peer in current.peers
                )
            await asyncio.sleep(interval_s)

    async def refresh_key_counts(
        self, counts: Callable[[], Awaitable[Mapping[str, int]]], *, interval_s: float
    ) -> None:
        """Keep ``meridian_keys`` current (runs as a node task)."""
        known: set[str] = set()
        while True:
            started = time.monotonic()
            try:
                current = await counts()
            except Exception:
                log.exception("counting keys for metrics failed")
            else:
                for state in known - current.keys():
                    self.keys.labels(state=state).set(0)
                for state, count in current.items():
                    self.keys.labels(state=state).set(count)
                known |= current.keys()
            # Counting reads an index entry per key: in a very large region it is spaced
            # out so that it never takes more than about 5% of a database thread.
            await asyncio.sleep(max(interval_s, 20 * (time.monotonic() - started)))

    # ---- AuditObserver -------------------------------------------------------------------

    def record_durable(self, wait_s: float) -> None:
        self.audit_write.observe(wait_s)

    def batch_committed(self, items: int, commit_s: float) -> None:
        self.audit_batch.observe(items)
        self.audit_commit.observe(commit_s)

    def write_failed(self) -> None:
        self.audit_failures.inc()


class MetricsHook:
    """Counts every call by operation and outcome, and times it (a CallHook)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics
        # labels() takes a lock and builds a key on every call; the children are cached.
        # Operations and AWS error names are finite sets, so the caches stay small.
        self._counters: dict[tuple[str, str], Any] = {}
        self._histograms: dict[str, Any] = {}

    async def before(self, call: CallInfo) -> None:
        return None

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None:
        outcome = "ok" if error is None else error.reason
        slot = (call.operation, outcome)
        counter = self._counters.get(slot)
        if counter is None:
            counter = self._metrics.requests.labels(operation=call.operation, outcome=outcome)
            self._counters[slot] = counter
        counter.inc()
        histogram = self._histograms.get(call.operation)
        if histogram is None:
            histogram = self._metrics.request_duration.labels(operation=call.operation)
            self._histograms[call.operation] = histogram
        histogram.observe(time.perf_counter() - call.started)


class _ReplicationCollector(Collector):
    def __init__(self) -> None:
        self.source: ReplicationStatusSource | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "meridian_replication_lag_seconds", "Replication lag per peer", labels=["peer"]
        )
        backlog = GaugeMetricFamily(
            "meridian_replication_backlog_entries",
            "Log entries a peer has not acknowledged",
            labels=["peer"],
        )
        source = self.source
        if source is not None:
            try:
                statuses = list(source.replication_status())
            except Exception:
                log.exception("reading replication status for metrics failed")
                statuses = []
            for status in statuses:
                lag.add_metric([status.peer_region], status.lag_s)
                backlog.add_metric([status.peer_region], status.backlog_entries)
        yield lag
        yield backlog

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("meridian_replication_lag_seconds", "", labels=["peer"])
        yield GaugeMetricFamily("meridian_replication_backlog_entries", "", labels=["peer"])
