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
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection

from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc
from meridian.server.api.interceptor import CallHook, RequestInterceptor
from meridian.server.api.servicer import KeyManagementServicer
from meridian.server.config import NodeConfig
from meridian.server.domain.clock import Clock, SystemClock
from meridian.server.domain.crypto.rootkey import FileRootKeyProvider, RootKeyError
from meridian.server.domain.service import KeyService
from meridian.server.storage.store import SqliteStore
from meridian.server.sweeper import run_deletion_sweeper

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

    def __post_init__(self) -> None:
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._store: SqliteStore | None = None
        self._health_servicer: AsyncHealthServicer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.service: KeyService | None = None

    async def start(self) -> int:
        """Open storage, start serving; returns the bound port."""
        config = self.config
        credentials = _server_credentials(config)
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            root_key = FileRootKeyProvider.open_or_create(config.root_key.path)
        except (OSError, RootKeyError) as error:
            raise NodeStartError(f"cannot open the root key: {error}") from None
        self._store = await SqliteStore.open(config.database_path)
        self.service = KeyService(
            region=config.region,
            account_id=config.account_id,
            store=self._store,
            root_key=root_key,
            clock=self.clock,
            randbytes=self.randbytes,
        )
        server = grpc.aio.server(
            interceptors=[
                RequestInterceptor(account_id=config.account_id, hooks=self._call_hooks())
            ],
            options=[
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                ("grpc.so_reuseport", 0),
            ],
        )
        kms_pb2_grpc.add_KeyManagementServiceServicer_to_server(
            KeyManagementServicer(self.service), server
        )
        health_servicer = AsyncHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (
                kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        try:
            self.port = server.add_secure_port(config.listen, credentials)
        except RuntimeError as error:
            # grpc reports an unusable certificate or key only here, as RuntimeError.
            await self._store.close()
            raise NodeStartError(
                f"cannot serve TLS on {config.listen} (check the [tls] files): {error}"
            ) from None
        if self.port == 0:
            await self._store.close()
            raise NodeStartError(f"cannot listen on {config.listen} (address in use?)")
        await server.start()
        self._server = server
        self._health_servicer = health_servicer
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set(
            "meridian.kms.v1.KeyManagementService", health_pb2.HealthCheckResponse.SERVING
        )
        self._tasks.append(
            asyncio.create_task(
                run_deletion_sweeper(self.service, self.clock, interval_s=config.sweep_interval_s),
                name="deletion-sweeper",
            )
        )
        log.info("node ready", listen=config.listen, port=self.port, data_dir=str(config.data_dir))
        return self.port

    def _call_hooks(self) -> list[CallHook]:
        """The steps every API call passes through, in order (authorization, audit...)."""
        return []

    async def stop(self) -> None:
        if self._server is not None:
            if self._health_servicer is not None:
                await self._health_servicer.enter_graceful_shutdown()
            await self._server.stop(SHUTDOWN_GRACE_S)
            self._server = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._store is not None:
            await self._store.close()
            self._store = None
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
