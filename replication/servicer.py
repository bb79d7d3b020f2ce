"""gRPC servicers: ``meridian.replication.v1.Replication`` (node to node) and
``meridian.replication_admin.v1.ReplicationAdmin`` (operators).

Both are served behind the node's request interceptor, so every call has an authenticated
principal, passes the call hooks (authorization, audit) and has its errors mapped in one
place. The node-to-node service also checks here, whatever hooks are installed, that the
caller's certificate names a *node*, and it takes the calling region from that
certificate only: a node can speak for its own region and no other.
"""

from __future__ import annotations

import re

from google.protobuf.timestamp_pb2 import Timestamp

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.proto.replication.v1 import replication_pb2_grpc
from meridian.proto.replication_admin.v1 import replication_admin_pb2 as admin_pb
from meridian.proto.replication_admin.v1 import replication_admin_pb2_grpc
from meridian.replication.engine import ReplicationEngine
from meridian.server.api.interceptor import CURRENT_CALLER, Context
from meridian.server.domain.errors import AccessDeniedException
from meridian.server.domain.multi_region_service import MultiRegionService

# A node's principal ARN, as the interceptor builds it from URI SAN meridian:node:REGION.
_NODE_ARN = re.compile(r"^arn:meridian:iam::\d{12}:node/(([a-z]+-){2,3}\d+)$")


def caller_node_region() -> str:
    """The region whose node certificate made this call; AccessDenied for anyone else."""
    match = _NODE_ARN.fullmatch(CURRENT_CALLER.get().principal_arn)
    if match is None:
        raise AccessDeniedException("Only Meridian nodes may call the replication service")
    return match.group(1)


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, engine: ReplicationEngine) -> None:
        self._engine = engine

    async def Hello(self, request: pb.HelloRequest, context: Context) -> pb.HelloResponse:
        return await self._engine.handle_hello(caller_node_region(), request)

    async def Push(self, request: pb.PushRequest, context: Context) -> pb.PushResponse:
        return await self._engine.handle_push(caller_node_region(), request)


class ReplicationAdminServicer(replication_admin_pb2_grpc.ReplicationAdminServicer):
    def __init__(self, engine: ReplicationEngine, multi_region: MultiRegionService) -> None:
        self._engine = engine
        self._multi_region = multi_region

    async def GetReplicationStatus(
        self, request: admin_pb.GetReplicationStatusRequest, context: Context
    ) -> admin_pb.GetReplicationStatusResponse:
        status = await self._engine.status_snapshot()
        response = admin_pb.GetReplicationStatusResponse(
            region=status.region,
            log_id=status.log_id,
            head_seq=status.head_seq,
            first_retained_seq=status.first_retained_seq,
            signing_key_fingerprint=status.fingerprint,
            multi_region_keys=status.multi_region_keys,
        )
        for peer in status.peers:
            message = response.peers.add(
                region=peer.region,
                endpoint=peer.endpoint,
                connection_state=peer.connection_state,
                acked_seq=peer.acked_seq,
                backlog_entries=peer.backlog_entries,
                lag_s=peer.lag_s,
                last_error=peer.last_error,
                snapshotting=peer.snapshotting,
                pinned=peer.pinned,
                consecutive_failures=peer.consecutive_failures,
            )
            if peer.last_contact_s is not None:
                message.last_contact.CopyFrom(_timestamp_us(int(peer.last_contact_s * 1e6)))
        for origin, applied, applied_at_us in status.inbound:
            response.inbound.add(
                origin_region=origin, applied_seq=applied, applied_at=_timestamp_us(applied_at_us)
            )
        for key_id, material_id, primary, missing in status.pending:
            response.pending_versions.add(
                key_id=key_id,
                key_material_id=material_id,
                primary_region=primary,
                missing_regions=missing,
            )
        return response

    async def ForcePrimaryRegion(
        self, request: admin_pb.ForcePrimaryRegionRequest, context: Context
    ) -> admin_pb.ForcePrimaryRegionResponse:
        key = await self._multi_region.force_primary_region(
            CURRENT_CALLER.get(), key_id=request.key_id, primary_region=request.primary_region
        )
        self._engine.wake()
        configuration = key.multi_region_configuration
        found = await self._engine.key_epoch(key.key_id)
        return admin_pb.ForcePrimaryRegionResponse(
            key_id=key.arn,
            primary_region=configuration.primary_key.region if configuration else "",
            epoch=found,
            region=self._engine.region,
        )


def _timestamp_us(value_us: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(value_us)
    return stamp
