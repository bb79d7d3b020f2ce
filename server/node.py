"""The composition root: builds one regional node from its configuration and runs it.

Nothing else wires components together. Clock and randomness are injected here so
tests can run a node in-process with a fake clock on port 0.

Shutdown order (STYLE.md 9): health NOT_SERVING -> gRPC server stop (in-flight calls
drain) -> background tasks -> database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection

from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc
from meridian.replication.engine import EngineSettings
from meridian.replication.runtime import ReplicationRuntime, open_replication
from meridian.replication.transport import TransportFactory
from meridian.server import event_loop
from meridian.server.api.authorization import AuthorizationHook
from meridian.server.api.commit_observer import OtherWorkersCommits
from meridian.server.api.idempotency import IdempotencyGuard, deduplicating
from meridian.server.api.interceptor import CallHook, RequestInterceptor
from meridian.server.api.node_principals import NodePrincipalGuard
from meridian.server.api.servicer import KeyManagementServicer
from meridian.server.audit_runtime import AuditRuntime
from meridian.server.config import NodeConfig
from meridian.server.data_dir_lock import DataDirBusy, DataDirLock
from meridian.server.domain.access.authorizer import Authorizer
from meridian.server.domain.access.service import AccessService
from meridian.server.domain.clock import Clock, SystemClock
from meridian.server.domain.crypto.rootkey import RootKeyError
from meridian.server.domain.crypto.rootkey_ring import RootKeyRing
from meridian.server.domain.model import Key
from meridian.server.domain.service import KeyService
from meridian.server.gateway.app import AwsGateway
from meridian.server.gateway.wiring import start_aws_gateway
from meridian.server.key_lifecycle import run_key_lifecycle
from meridian.server.metrics import NodeMetrics
from meridian.server.rootkeys import open_root_keys
from meridian.server.storage.access_repository import SqliteAccessStore
from meridian.server.storage.commit_counter import SharedCommitCounter
from meridian.server.storage.idempotency import SqliteIdempotencyRecords
from meridian.server.storage.key_material_repository import SqliteKeyMaterialStore
from meridian.server.storage.store import SqliteStore
from meridian.server.sweeper import run_deletion_sweeper
from meridian.server.worker_role import WorkerRole

log = structlog.get_logger("meridian.node")

# Bounds on what a caller can make the node allocate: the largest legal request is a
# 32 KB policy; a megabyte leaves room without inviting memory exhaustion.
MESSAGE_BYTES_MAX = 1024 * 1024
SHUTDOWN_GRACE_S = 5.0


class NodeStartError(Exception):
    """The node cannot start: unreadable TLS files, a port it cannot bind, a bad root key."""


@dataclass
class Node:
    config: NodeConfig
    clock: Clock
    randbytes: Callable[[int], bytes] = os.urandom
    # Root keys built by the caller (tests); None builds them from the config. Either way
    # the node owns them and closes them when it stops.
    root_keys: RootKeyRing | None = None
    # How replication reaches peers: None is mTLS gRPC to the config's [[peers]]; tests
    # pass an in-memory network's factory (replication/transport.py).
    replication_transport: TransportFactory | None = None
    replication_settings: EngineSettings | None = None
    # One of several worker processes of this node (server/workers.py); None: alone.
    worker: WorkerRole | None = None

    def __post_init__(self) -> None:
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._store: SqliteStore | None = None
        # Held from start to stop, so offline tools (seed-keys) refuse to write meanwhile.
        self._data_dir_lock: DataDirLock | None = None
        self._health_servicer: AsyncHealthServicer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.service: KeyService | None = None
        self.access: AccessService | None = None
        # The AWS-compatible endpoint, when [aws_gateway] turns it on.
        self.aws_gateway: AwsGateway | None = None
        # The audit trail (server/audit_runtime.py) and the Prometheus metrics.
        self.audit: AuditRuntime | None = None
        self.metrics = NodeMetrics()
        self.metrics_port = 0
        # Multi-Region keys and the replication log (replication/DESIGN.md).
        self.replication: ReplicationRuntime | None = None

    async def start(self) -> int:
        """Open storage, start serving; returns the bound port."""
        config = self.config
        credentials = _server_credentials(config)
        try:
            # Shared: a node's worker processes all hold it; seed-keys needs it alone.
            self._data_dir_lock = DataDirLock.acquire(config.data_dir, role="node", shared=True)
        except DataDirBusy as error:
            raise NodeStartError(str(error)) from None
        except OSError as error:
            raise NodeStartError(f"cannot lock the data directory: {error}") from None
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            if self.root_keys is None:
                self.root_keys = await open_root_keys(config.root_key, randbytes=self.randbytes)
            root_key = self.root_keys
        except (OSError, RootKeyError) as error:
            self._release_data_dir()
            raise NodeStartError(f"cannot open the root key: {error}") from None
        shares_database = self.worker is not None and self.worker.shares_database
        self._store = await SqliteStore.open(
            config.database_path,
            commits=SharedCommitCounter.in_directory(config.data_dir) if shares_database else None,
            key_cache_entries_max=config.caches.keys_max,
        )
        self.service = KeyService(
            region=config.region,
            account_id=config.account_id,
            store=self._store,
            root_key=root_key,
            clock=self.clock,
            randbytes=self.randbytes,
            key_materials=SqliteKeyMaterialStore(self._store),
            material_cache_entries_max=config.caches.materials_max,
        )
        # The replication identity is unwrapped on first use, not here (replication/identity.py).
        replication = open_replication(
            config,
            service=self.service,
            store=self._store,
            root_key=root_key,
            clock=self.clock,
            randbytes=self.randbytes,
            transport_factory=self.replication_transport,
            settings=self.replication_settings,
        )
        self.replication = replication
        access_store = SqliteAccessStore(self._store)
        self.access = AccessService(
            authorizer=Authorizer(
                region=config.region,
                account_id=config.account_id,
                keys=self._store,
                access=access_store,
                clock=self.clock,
                administrators=config.access.administrators,
                describe_multi_region=self._describe_multi_region,
            ),
            store=access_store,
            clock=self.clock,
            randbytes=self.randbytes,
        )
        if shares_database:
            # Another worker's commit clears this worker's caches of committed state.
            self._store.on_other_writers_commit(self.access.authorizer.identity_policies_changed)
            self._store.on_other_writers_commit(self.access.authorizer.grants_changed)
            self._store.on_other_writers_commit(self.service.forget_all_materials)
        self.audit = await AuditRuntime.open(
            config,
            root_key=root_key,
            clock=self.clock,
            keys=self._store.reader,
            metrics=self.metrics,
            randbytes=self.randbytes,
            shared_chain=shares_database,
            sealer=self._runs_background,
        )
        interceptor = RequestInterceptor(account_id=config.account_id, hooks=self._call_hooks())
        server = grpc.aio.server(
            interceptors=[interceptor],
            options=[
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                # Worker processes share the port; a lone node must own it.
                ("grpc.so_reuseport", 1 if shares_database else 0),
            ],
        )
        servicer = KeyManagementServicer(self.service, self.access)
        servicer.last_usage = self.audit.last_usage
        # Batch operations run each item through the same hooks as a single call.
        servicer.batch_pipeline = interceptor.pipeline
        audit_services = self.audit.add_servicers(server, self.clock)
        replication_services = replication.add_servicers(server)
        # Retries carrying an idempotency token are answered once (server/api/idempotency.py).
        idempotency = IdempotencyGuard(
            SqliteIdempotencyRecords(self._store.write_connection),
            self.clock,
            shared_store=shares_database,
        )
        kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(
            deduplicating(servicer, idempotency), server
        )
        health_servicer = AsyncHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (
                kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
                *audit_services,
                *replication_services,
            ),
            server,
        )
        try:
            self.port = server.add_secure_port(config.listen, credentials)
        except RuntimeError as error:
            # grpc reports an unusable certificate or key only here, as RuntimeError.
            await self._abandon_start()
            raise NodeStartError(
                f"cannot serve TLS on {config.listen} (check the [tls] files): {error}"
            ) from None
        if self.port == 0:
            await self._abandon_start()
            raise NodeStartError(f"cannot listen on {config.listen} (address in use?)")
        if config.aws_gateway is not None and self._runs_background:
            try:
                # The same servicer and hook pipeline as gRPC: the gateway only translates.
                self.aws_gateway = await start_aws_gateway(
                    settings=config.aws_gateway,
                    region=config.region,
                    account_id=config.account_id,
                    database=config.database_path,
                    servicer=servicer,
                    pipeline=interceptor.pipeline,
                    root_key=root_key,
                    clock=self.clock,
                )
            except (OSError, ssl.SSLError) as error:
                await self._abandon_start()
                raise NodeStartError(
                    f"cannot serve the AWS endpoint on {config.aws_gateway.listen} "
                    f"(check [aws_gateway] and its TLS files): {error}"
                ) from None
        # The audit writer runs before the first call arrives: every response waits for it.
        await self.audit.start()
        replication.attach_audit(self.audit.sink)
        if config.metrics.listen and self._runs_background:
            self.metrics_port = self.metrics.serve(config.metrics.listen)
            self._tasks.append(
                asyncio.create_task(
                    self.metrics.refresh_key_counts(
                        self.audit.storage.key_state_counts, interval_s=15.0
                    ),
                    name="metrics-key-counts",
                )
            )
            self._tasks.append(
                asyncio.create_task(
                    self.metrics.follow_replication(
                        replication.engine.status_snapshot, interval_s=5.0
                    ),
                    name="metrics-replication",
                )
            )
        await server.start()
        self._server = server
        self._health_servicer = health_servicer
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set(
            "meridian.kms.v1.KeyManagementService", health_pb2.HealthCheckResponse.SERVING
        )
        # Background work runs once per node: in worker 0 when there are several.
        if self._runs_background:
            self._tasks.append(
                asyncio.create_task(
                    run_deletion_sweeper(
                        self.service,
                        self.clock,
                        interval_s=config.sweep_interval_s,
                        audit=self.audit.sink,
                    ),
                    name="deletion-sweeper",
                )
            )
            # Automatic rotation and expiry of imported material (server/key_lifecycle.py).
            self._tasks.append(
                asyncio.create_task(
                    run_key_lifecycle(
                        self.service,
                        self.clock,
                        interval_s=config.sweep_interval_s,
                        audit=self.audit.sink,
                    ),
                    name="key-lifecycle",
                )
            )
            # Shippers start once the node serves: peers may call back at once.
            await replication.start()
        log.info(
            "node ready",
            listen=config.listen,
            port=self.port,
            data_dir=str(config.data_dir),
            event_loop=event_loop.running_loop_name(),
        )
        return self.port

    @property
    def _runs_background(self) -> bool:
        return self.worker is None or self.worker.runs_background

    async def _abandon_start(self) -> None:
        """Close what a failed start opened (the audit trail, the store, the root keys)."""
        if self.audit is not None:
            await self.audit.close()
            self.audit = None
        if self._store is not None:
            await self._store.close()
        if self.root_keys is not None:
            # An HSM session stays logged in for the whole process until it is closed.
            await self.root_keys.aclose()
        self._release_data_dir()

    def _release_data_dir(self) -> None:
        if self._data_dir_lock is not None:
            self._data_dir_lock.release()
            self._data_dir_lock = None

    async def _describe_multi_region(self, key: Key) -> None:
        """A multi-Region key's role here, for kms:MultiRegionKeyType in policies."""
        service = self.service
        if service is not None and service.multi_region is not None and self._store is not None:
            await service.multi_region.describe(self._store.reader, key)

    def _call_hooks(self) -> list[CallHook]:
        """The steps every API call passes through, in order (authorization, audit...)."""
        if self.access is None:
            raise AssertionError("the access service is built before the hooks")
        if self.audit is None:
            raise AssertionError("the audit trail is opened before the hooks")
        # Authorization first: nothing runs without an allow (DESIGN.md §7.7). Audit next,
        # so its record carries the decision; metrics last, to count the final outcome.
        # Node certificates are refused everything but replication before any policy is read.
        observe = (
            # First: a call must not start on caches another worker's commit made stale.
            [OtherWorkersCommits(self._store.observe_other_writers)]
            if self._store is not None and self.worker is not None and self.worker.shares_database
            else []
        )
        return [
            *observe,
            NodePrincipalGuard(),
            AuthorizationHook(self.access.authorizer),
            *self.audit.hooks,
            self.metrics.hook(),
        ]

    async def stop(self) -> None:
        if self.aws_gateway is not None:
            await self.aws_gateway.stop()
            self.aws_gateway = None
        if self._server is not None:
            if self._health_servicer is not None:
                await self._health_servicer.enter_graceful_shutdown()
            await self._server.stop(SHUTDOWN_GRACE_S)
            self._server = None
        if self.replication is not None:
            await self.replication.stop()
        for task in self._tasks:
            task.cancel()
        await _drain(self._tasks)
        self._tasks.clear()
        if self.audit is not None:
            # After the API and the background tasks: the last records are in, seal them.
            await self.audit.close()
            self.audit = None
        self.metrics.stop()
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self.root_keys is not None:
            await self.root_keys.aclose()
        # Last: the database is closed, so a tool that takes the lock next sees it all.
        self._release_data_dir()
        log.info("node stopped")


def _server_credentials(config: NodeConfig) -> grpc.ServerCredentials:
    try:
        key, cert, ca = (
            config.tls.key.read_bytes(),
            config.tls.cert.read_bytes(),
            config.tls.ca_cert.read_bytes(),
        )
    except OSError as error:
        raise NodeStartError(f"cannot read TLS file {error.filename}: {error.strerror}") from None
    # The node serves mTLS only: a caller without a certificate from the cluster CA
    # never reaches the API.
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT."""
    node = Node(config=config, clock=SystemClock())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await node.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()


async def _drain(tasks: list[asyncio.Task[None]], *, rounds_max: int = 50) -> None:
    """Wait for cancelled background tasks, cancelling again any that swallowed it.

    A task whose awaited call absorbs a CancelledError goes back to its loop; a single
    cancel() would then leave stop() waiting forever. Bounded: after the last round the
    stragglers are logged and abandoned rather than hanging the shutdown.
    """
    pending = {task for task in tasks if not task.done()}
    for _ in range(rounds_max):
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in pending:
            task.cancel()
    for task in pending:
        log.warning("background task did not stop", task=task.get_name())
