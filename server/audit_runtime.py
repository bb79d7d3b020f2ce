"""Builds the node's audit subsystem: trail, hook, servicers, digest shipping.

Called only by the composition root (``node.py``), which decides when each piece
starts and stops; this module keeps the wiring of the audit pieces out of it.

Order at start: the key store is open (migrations ran) -> audit storage -> trail
(signing key, chain head) -> the gRPC server is built with the hook and servicers ->
:meth:`AuditRuntime.start` (writer, intent recovery, first seal, shipping). At stop:
the gRPC server has drained -> :meth:`AuditRuntime.close` (final seal, writer
drained) -> the key store closes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc
import structlog

from meridian.proto.audit.v1 import audit_pb2, audit_pb2_grpc
from meridian.server.api.audit_hook import AuditHook
from meridian.server.api.audit_servicer import AuditExchangeServicer, AuditServicer
from meridian.server.api.audit_transport import GrpcDigestTransport
from meridian.server.api.interceptor import CallHook
from meridian.server.audit.last_usage import KeyLastUsage
from meridian.server.audit.queries import AliasLookup, AuditQueries
from meridian.server.audit.settings import AuditSettings
from meridian.server.audit.shipping import DigestInbox, DigestShipper, DigestTransport
from meridian.server.audit.sink import AuditSink, NullAuditSink
from meridian.server.audit.trail import AuditTrail
from meridian.server.config import NodeConfig
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.ports import KeyRepository
from meridian.server.metrics import NodeMetrics
from meridian.server.storage.audit_store import SqliteAuditStorage

log = structlog.get_logger("meridian.audit")

SERVICE_NAMES = (
    audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditExchange"].full_name,
)
GAUGE_REFRESH_S = 5.0


@dataclass
class AuditRuntime:
    storage: SqliteAuditStorage
    settings: AuditSettings
    trail: AuditTrail | None = None
    hook: AuditHook | None = None
    queries: AuditQueries | None = None
    inbox: DigestInbox | None = None
    shipper: DigestShipper | None = None
    transport: DigestTransport | None = None
    metrics: NodeMetrics | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        config: NodeConfig,
        *,
        root_key: RootKeyProvider,
        clock: Clock,
        keys: KeyRepository,
        metrics: NodeMetrics | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
        transport: DigestTransport | None = None,
        shared_chain: bool = False,
        sealer: bool = True,
    ) -> AuditRuntime:
        """Open the audit subsystem of a node whose key store is already open."""
        settings = config.audit
        alias_lookup = alias_lookup_in(keys)
        storage = await SqliteAuditStorage.open(config.database_path)
        runtime = cls(storage=storage, settings=settings, metrics=metrics)
        if not settings.enabled:
            log.warning("the audit trail is disabled: calls are not recorded")
            return runtime
        try:
            trail = await AuditTrail.open(
                storage=storage,
                settings=settings,
                region=config.region,
                account_id=config.account_id,
                clock=clock,
                root_key=root_key,
                randbytes=randbytes,
                observer=metrics,
                # Several worker processes: one chain, sealed by worker 0 (server/workers.py).
                shared_chain=shared_chain,
                sealer=sealer,
            )
        except BaseException:
            await storage.close()
            raise
        runtime.trail = trail
        runtime.hook = AuditHook(
            trail,
            region=config.region,
            account_id=config.account_id,
            clock=clock,
            alias_lookup=alias_lookup,
        )
        runtime.queries = AuditQueries(
            storage,
            region=config.region,
            account_id=config.account_id,
            alias_lookup=alias_lookup,
            own_public_keys=lambda: trail.public_keys,
        )
        runtime.inbox = DigestInbox(storage, clock, own_region=config.region)
        peers = {peer.region: peer.endpoint for peer in config.peers}
        if peers:
            runtime.transport = transport or _grpc_transport(config, peers)
            runtime.shipper = DigestShipper(
                storage,
                runtime.transport,
                clock,
                own_region=config.region,
                peers=list(peers),
                public_keys=lambda: trail.public_keys,
            )
            trail.on_sealed(runtime.shipper.wake)
        return runtime

    # ---- what the node wires in ------------------------------------------------------

    @property
    def hooks(self) -> list[CallHook]:
        return [self.hook] if self.hook is not None else []

    @property
    def sink(self) -> AuditSink:
        """For subsystems that record service events (rotation, replication, sweeper)."""
        return self.trail if self.trail is not None else NullAuditSink()

    @property
    def last_usage(self) -> KeyLastUsage | None:
        if self.trail is None:
            return None
        return KeyLastUsage(self.storage, tracking_start_us=self.trail.tracking_start_us)

    def add_servicers(self, server: grpc.aio.Server, clock: Clock) -> tuple[str, ...]:
        """Register the audit services; returns their names (for reflection)."""
        if self.trail is None or self.queries is None or self.inbox is None:
            return ()
        shipper = self.shipper
        audit_pb2_grpc.add_AuditServicer_to_server(
            AuditServicer(
                self.trail,
                self.queries,
                clock,
                peer_positions=lambda: dict(shipper.positions) if shipper else {},
            ),
            server,
        )
        audit_pb2_grpc.add_AuditExchangeServicer_to_server(
            AuditExchangeServicer(self.inbox, region=self.trail.region), server
        )
        return SERVICE_NAMES

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.trail is None:
            return
        await self.trail.start()
        if self.shipper is not None:
            self._tasks.append(asyncio.create_task(self.shipper.run(), name="audit-shipper"))
        if self.metrics is not None:
            self._tasks.append(asyncio.create_task(self._gauges(), name="audit-gauges"))

    async def close(self) -> None:
        """After the API has drained: stop shipping, seal, drain the writer, close."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.trail is not None:
            await self.trail.close()
        if isinstance(self.transport, GrpcDigestTransport):
            await self.transport.close()
        await self.storage.close()

    async def _gauges(self) -> None:
        metrics, trail = self.metrics, self.trail
        assert metrics is not None
        assert trail is not None
        while True:
            metrics.audit_queue.set(trail.queued)
            last = trail.last_digest
            if self.shipper is not None and last is not None:
                for peer, acked in self.shipper.positions.items():
                    metrics.unacked_digests.labels(peer=peer).set(last.digest.number - acked)
            await asyncio.sleep(GAUGE_REFRESH_S)


def alias_lookup_in(keys: KeyRepository) -> AliasLookup:
    """The key id an alias points at, for naming the key in a record."""

    async def lookup(alias_name: str) -> str | None:
        alias = await keys.get_alias(alias_name)
        return None if alias is None else alias.target_key_id

    return lookup


def _grpc_transport(config: NodeConfig, peers: Mapping[str, str]) -> GrpcDigestTransport:
    return GrpcDigestTransport(
        peers,
        ca_cert=config.tls.ca_cert.read_bytes(),
        node_cert=config.tls.cert.read_bytes(),
        node_key=config.tls.key.read_bytes(),
    )
