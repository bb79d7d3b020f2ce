"""Test helpers for the AWS endpoint: a real node with its gateway, run on its own thread.

boto3, the AWS CLI and the AWS Encryption SDK are synchronous; a node on the test's own
event loop would deadlock under them. ``gateway_node`` therefore runs the real
composition root (``Node``) on a private event loop in a thread, with a fake clock that
starts at the real time (SigV4 checks the signature's time against the node's clock).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials

from conftest import ACCOUNT, REGION, TestPki, node_config
from meridian.server.api.interceptor import CallHook
from meridian.server.domain.clock import FakeClock
from meridian.server.gateway.access_keys import AccessKeyAdmin, NewAccessKey
from meridian.server.gateway.settings import AwsGatewayConfig
from meridian.server.node import Node
from meridian.server.storage.access_keys import AccessKeyTable

T = TypeVar("T")
CALL_TIMEOUT_S = 60.0
# An administrator by default ([access] administrators), so the node's own authorization
# hook allows it everything; tests of refusals use other principals.
PRINCIPAL = "admin"


class HookedNode(Node):
    """A node whose hook list is given by the test (authorization and audit stand-ins)."""

    test_hooks: Sequence[CallHook] = ()

    def _call_hooks(self) -> list[CallHook]:
        return [*super()._call_hooks(), *self.test_hooks]


@dataclass
class GatewayNode:
    node: Node
    clock: FakeClock
    loop: asyncio.AbstractEventLoop
    ca_bundle: Path
    key: NewAccessKey
    clients: list[Any] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.node.aws_gateway is not None
        return self.node.aws_gateway.port

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(CALL_TIMEOUT_S)

    def advance(self, delta: timedelta) -> None:
        async def advance() -> None:
            self.clock.advance(delta)

        self.run(advance())

    def create_access_key(self, principal: str = PRINCIPAL) -> NewAccessKey:
        async def create() -> NewAccessKey:
            table = await AccessKeyTable.open(self.node.config.database_path, read_only=False)
            try:
                assert self.node.root_keys is not None
                return await AccessKeyAdmin(table, self.node.root_keys, self.clock).create(
                    principal
                )
            finally:
                await table.close()

        return self.run(create())

    def revoke_access_key(self, access_key_id: str) -> None:
        async def revoke() -> None:
            table = await AccessKeyTable.open(self.node.config.database_path, read_only=False)
            try:
                assert self.node.root_keys is not None
                await AccessKeyAdmin(table, self.node.root_keys, self.clock).revoke(access_key_id)
            finally:
                await table.close()

        self.run(revoke())

    def client(
        self,
        *,
        key: NewAccessKey | None = None,
        secret: str | None = None,
        region: str = REGION,
        **config: Any,
    ) -> Any:
        key = key or self.key
        session = boto3.session.Session(
            aws_access_key_id=key.access_key_id,
            aws_secret_access_key=secret or key.secret_access_key,
            region_name=region,
        )
        client = session.client(
            "kms",
            endpoint_url=self.endpoint,
            verify=str(self.ca_bundle),
            config=botocore.config.Config(retries={"max_attempts": 1}, **config),
        )
        # Closed when the node stops: open keep-alive sockets would warn (as errors).
        self.clients.append(client)
        return client

    def signed_headers(
        self,
        body: bytes,
        target: str,
        *,
        key: NewAccessKey | None = None,
        region: str = REGION,
        extra_headers: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Headers of a correctly signed POST / (as botocore signs), for raw HTTP tests."""
        key = key or self.key
        request = botocore.awsrequest.AWSRequest(
            method="POST",
            url=f"{self.endpoint}/",
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": target,
                **(extra_headers or {}),
            },
        )
        credentials = botocore.credentials.Credentials(key.access_key_id, key.secret_access_key)
        botocore.auth.SigV4Auth(credentials, "kms", region).add_auth(request)
        return dict(request.headers.items())


def gateway_config(test_pki: TestPki, data_dir: Path) -> Any:
    config = node_config(test_pki, data_dir)
    return replace(
        config,
        aws_gateway=AwsGatewayConfig(
            listen="127.0.0.1:0", cert=test_pki.node_cert, key=test_pki.node_key
        ),
    )


@contextmanager
def gateway_node(
    test_pki: TestPki,
    data_dir: Path,
    *,
    hooks: Sequence[CallHook] = (),
    clock_offset: timedelta = timedelta(0),
) -> Iterator[GatewayNode]:
    """A running node with its AWS endpoint and one access key for ``PRINCIPAL``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-node", daemon=True)
    thread.start()
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0) + clock_offset)
    node = HookedNode(config=gateway_config(test_pki, data_dir), clock=clock)
    node.test_hooks = tuple(hooks)
    handle: GatewayNode | None = None
    try:
        asyncio.run_coroutine_threadsafe(node.start(), loop).result(CALL_TIMEOUT_S)
        handle = GatewayNode(
            node=node,
            clock=clock,
            loop=loop,
            ca_bundle=test_pki.directory / "ca.pem",
            key=None,  # type: ignore[arg-type]
        )
        handle.key = handle.create_access_key()
        yield handle
    finally:
        for client in handle.clients if handle is not None else ():
            client.close()
        asyncio.run_coroutine_threadsafe(_stop(node), loop).result(CALL_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT_S)
        loop.close()


async def _stop(node: Node) -> None:
    await node.stop()
    # Closed transports release their sockets in callbacks the loop has yet to run.
    for _ in range(3):
        await asyncio.sleep(0)


__all__ = [
    "ACCOUNT",
    "PRINCIPAL",
    "REGION",
    "GatewayNode",
    "HookedNode",
    "gateway_config",
    "gateway_node",
]
