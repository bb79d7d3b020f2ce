"""The gRPC digest transport: pushes digests to a peer's ``AuditExchange`` service.

The node authenticates to its peers with its own node certificate (it carries the
clientAuth usage), so the receiving node knows which region is pushing. One channel
per peer, created on first use and closed with the node.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from meridian.proto.audit.v1 import audit_pb2 as pb
from meridian.proto.audit.v1 import audit_pb2_grpc
from meridian.server.audit.shipping import DigestBatch
from meridian.server.domain.crypto import audit_signing

PUSH_TIMEOUT_S = 10.0


class GrpcDigestTransport:
    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        ca_cert: bytes,
        node_cert: bytes,
        node_key: bytes,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_cert, private_key=node_key, certificate_chain=node_cert
        )
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, peer_region: str) -> audit_pb2_grpc.AuditExchangeAsyncStub:
        channel = self._channels.get(peer_region)
        if channel is None:
            endpoint = self._endpoints.get(peer_region)
            if endpoint is None:
                raise ConnectionError(f"no endpoint is configured for region {peer_region}")
            channel = grpc.aio.secure_channel(
                endpoint,
                self._credentials,
                options=[("grpc.ssl_target_name_override", f"{peer_region}.node.meridian")],
            )
            self._channels[peer_region] = channel
        return audit_pb2_grpc.AuditExchangeStub(channel)

    async def push_digests(self, peer_region: str, batch: DigestBatch) -> int:
        request = pb.PushAuditDigestsRequest(
            origin_region=batch.origin_region,
            public_keys=[
                pb.AuditPublicKey(key_id=key_id, public_key=key, algorithm=audit_signing.ALGORITHM)
                for key_id, key in batch.public_keys
            ],
            digests=[
                pb.AuditDigest(
                    number=digest.number,
                    body=digest.body,
                    signature=digest.signature,
                    key_id=digest.key_id,
                )
                for digest in batch.digests
            ],
        )
        response = await self._stub(peer_region).PushAuditDigests(request, timeout=PUSH_TIMEOUT_S)
        return int(response.held_through_number)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
