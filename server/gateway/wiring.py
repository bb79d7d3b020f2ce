"""Builds the AWS endpoint from the node's parts; called by the composition root only.

The gateway gets the node's own servicer and CallPipeline (so the hooks are the same
instances gRPC uses: one audit chain, one authorizer) and its root key, and opens its
own read-only connection to the node's database for the access keys.
"""

from __future__ import annotations

from pathlib import Path

from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc
from meridian.server.api.interceptor import CallPipeline
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.gateway.access_keys import CredentialResolver
from meridian.server.gateway.app import AwsGateway, build_routes
from meridian.server.gateway.settings import AwsGatewayConfig
from meridian.server.storage.access_keys import AccessKeyTable

SERVICE = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]


async def start_aws_gateway(
    *,
    settings: AwsGatewayConfig,
    region: str,
    account_id: str,
    database: Path,
    servicer: kms_pb2_grpc.KeyManagementServiceServicer,
    pipeline: CallPipeline,
    root_key: RootKeyProvider,
    clock: Clock,
) -> AwsGateway:
    """Start serving; raises OSError or ssl.SSLError when it cannot listen or load TLS."""
    table = await AccessKeyTable.open(database, read_only=True)
    gateway = AwsGateway(
        config=settings,
        region=region,
        account_id=account_id,
        routes=build_routes(
            servicer, SERVICE, unimplemented_base=kms_pb2_grpc.KeyManagementServiceServicer
        ),
        pipeline=pipeline,
        credentials=CredentialResolver(table, root_key),
        clock=clock,
    )
    try:
        await gateway.start()
    except BaseException:
        await gateway.stop()
        raise
    return gateway
