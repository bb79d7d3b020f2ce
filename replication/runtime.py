"""Replication as the node's composition root assembles it: identity, the multi-Region key
service, the engine and the gRPC servicers. ``server/node.py`` only calls this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from meridian.proto.replication.v1 import replication_pb2, replication_pb2_grpc
from meridian.proto.replication_admin.v1 import (
    replication_admin_pb2,
    replication_admin_pb2_grpc,
)
from meridian.replication.engine import EngineSettings, ReplicationEngine
from meridian.replication.grpc_transport import GrpcPeerTransport, node_client_credentials
from meridian.replication.identity import LazyIdentity
from meridian.replication.servicer import ReplicationAdminServicer, ReplicationServicer
from meridian.replication.transport import TransportFactory
from meridian.server.audit import AuditSink, ServiceEvent, ServiceEventName
from meridian.server.config import NodeConfig
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.multi_region_service import MultiRegionService
from meridian.server.domain.service import KeyService
from meridian.server.storage.key_material_repository import SqliteKeyMaterialWriter
from meridian.server.storage.replication_repository import (
    SqliteReplicationRepository,
    SqliteReplicationWriter,
)
from meridian.server.storage.repository import SqliteWriter, to_us
from meridian.server.storage.store import SqliteStore


@dataclass
class ReplicationRuntime:
    engine: ReplicationEngine
    multi_region: MultiRegionService

    def add_servicers(self, server: grpc.aio.Server) -> tuple[str, ...]:
        """Register both services; returns their names (for reflection)."""
        replication_pb2_grpc.add_ReplicationServicer_to_server(
            ReplicationServicer(self.engine), server
        )
        replication_admin_pb2_grpc.add_ReplicationAdminServicer_to_server(
            ReplicationAdminServicer(self.engine, self.multi_region), server
        )
        return (
            replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name,
            replication_admin_pb2.DESCRIPTOR.services_by_name["ReplicationAdmin"].full_name,
        )

    def attach_audit(self, sink: AuditSink) -> None:
        """Record every applied change as a SynchronizeMultiRegionKey service event."""

        async def synchronized(key_arn: str, details: dict[str, str | int | bool]) -> None:
            await sink.record_service_event(
                ServiceEvent(
                    ServiceEventName.SYNCHRONIZE_MULTI_REGION_KEY, key_arn=key_arn, details=details
                )
            )

        self.engine.on_synchronized = synchronized

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()


def open_replication(
    config: NodeConfig,
    *,
    service: KeyService,
    store: SqliteStore,
    root_key: RootKeyProvider,
    clock: Clock,
    randbytes: Callable[[int], bytes] = os.urandom,
    transport_factory: TransportFactory | None = None,
    settings: EngineSettings | None = None,
) -> ReplicationRuntime:
    """Build replication for a node and attach multi-Region keys to its key service.

    ``transport_factory`` defaults to mTLS gRPC with the node's own certificate; tests
    pass the in-memory network's.
    """
    identity = LazyIdentity(
        store, config.region, root_key, now_us=lambda: to_us(clock.now()), randbytes=randbytes
    )

    def writer_for(tx: object) -> SqliteReplicationWriter:
        assert isinstance(tx, SqliteWriter), "the key store's transactions are SqliteWriters"
        return SqliteReplicationWriter(tx.connection)

    multi_region = MultiRegionService(
        service=service,
        reader=SqliteReplicationRepository(store.reader.connection),
        writer_for=writer_for,
        regions=(config.region, *(peer.region for peer in config.peers)),
    )
    service.multi_region = multi_region

    def materials_in(tx: object) -> SqliteKeyMaterialWriter:
        assert isinstance(tx, SqliteWriter), "the key store's transactions are SqliteWriters"
        return SqliteKeyMaterialWriter(tx.connection)

    # Rotation of MRKs: staged through multi_region, its tables following the shared view.
    service.key_types.rotation.attach_multi_region(multi_region, materials_in=materials_in)
    if transport_factory is None:
        credentials = node_client_credentials(config)
        transport_factory = lambda peer: GrpcPeerTransport(peer, credentials)  # noqa: E731
    engine = ReplicationEngine(
        region=config.region,
        account_id=config.account_id,
        store=store,
        root_key=root_key,
        identity=identity,
        multi_region=multi_region,
        peers=config.peers,
        transport_factory=transport_factory,
        clock=clock,
        randbytes=randbytes,
        settings=settings,
    )
    # Every record appended (by an operation or the key service's hooks) wakes the shippers.
    multi_region.on_append = engine.wake
    multi_region.await_acknowledged = engine.wait_acknowledged
    return ReplicationRuntime(engine=engine, multi_region=multi_region)
