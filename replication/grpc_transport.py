"""The gRPC transport: one mTLS channel per peer, with this node's certificate as the client's.

The peer's certificate must chain to the cluster CA *and* name the peer's region
(``<region>.node.meridian``, checked through the TLS target name), so a node never ships
its log to a node of another region that happens to answer at the configured address.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.proto.replication.v1 import replication_pb2_grpc
from meridian.replication.transport import TransportError
from meridian.server.config import NodeConfig, PeerConfig

# Replication batches are bounded well below this (engine.BATCH_BYTES_MAX).
MESSAGE_BYTES_MAX = 8 * 1024 * 1024
# gRPC's default reconnect backoff grows to 120 s; the shipper has its own backoff and a
# peer that comes back should be reached within about a second (a channel in its own
# backoff fails calls at once, whatever the shipper does).
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
    ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class GrpcPeerTransport:
    def __init__(self, peer: PeerConfig, credentials: grpc.ChannelCredentials) -> None:
        self.peer = peer
        self._channel = grpc.aio.secure_channel(
            peer.endpoint,
            credentials,
            options=[
                *_CHANNEL_OPTIONS,
                ("grpc.ssl_target_name_override", f"{peer.region}.node.meridian"),
            ],
        )
        self._stub = replication_pb2_grpc.ReplicationStub(self._channel)

    async def hello(self, request: pb.HelloRequest, *, timeout_s: float) -> pb.HelloResponse:
        try:
            response: pb.HelloResponse = await self._stub.Hello(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            raise TransportError(_describe(error), reason=_reason(error)) from None
        return response

    async def push(self, request: pb.PushRequest, *, timeout_s: float) -> pb.PushResponse:
        try:
            response: pb.PushResponse = await self._stub.Push(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            raise TransportError(_describe(error), reason=_reason(error)) from None
        return response

    async def close(self) -> None:
        await self._channel.close(None)


def node_client_credentials(config: NodeConfig) -> grpc.ChannelCredentials:
    """This node's own certificate and key (config [tls]) as client credentials."""
    return grpc.ssl_channel_credentials(
        root_certificates=config.tls.ca_cert.read_bytes(),
        private_key=config.tls.key.read_bytes(),
        certificate_chain=config.tls.cert.read_bytes(),
    )


def _describe(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details() or ''}".strip()


def _reason(error: grpc.aio.AioRpcError) -> str:
    metadata: Any = error.trailing_metadata() or ()
    for name, value in metadata:
        if name == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""
