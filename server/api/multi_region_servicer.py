"""The RPCs of multi-Region keys: ReplicateKey and UpdatePrimaryRegion.

A mixin of ``KeyManagementServicer``: proto <-> ``service.multi_region`` translation and
nothing else. A node built without replication answers UnsupportedOperationException.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.interceptor import CURRENT_CALLER, Context
from meridian.server.domain.errors import UnsupportedOperationException
from meridian.server.domain.model import MultiRegionConfiguration, Tag

if TYPE_CHECKING:
    from meridian.server.domain.multi_region_service import MultiRegionService
    from meridian.server.domain.service import KeyService


def multi_region_configuration(
    configuration: MultiRegionConfiguration,
) -> pb.MultiRegionConfiguration:
    return pb.MultiRegionConfiguration(
        multi_region_key_type=configuration.multi_region_key_type,
        primary_key=pb.MultiRegionKey(
            arn=configuration.primary_key.arn, region=configuration.primary_key.region
        ),
        replica_keys=[
            pb.MultiRegionKey(arn=replica.arn, region=replica.region)
            for replica in configuration.replica_keys
        ],
    )


class MultiRegionServicer:
    _service: KeyService
    _region: str

    def _multi_region(self) -> MultiRegionService:
        multi_region = self._service.multi_region
        if multi_region is None:
            raise UnsupportedOperationException(
                "Multi-Region keys are not supported by this node (no replication)"
            )
        return multi_region

    async def ReplicateKey(
        self, request: pb.ReplicateKeyRequest, context: Context
    ) -> pb.ReplicateKeyResponse:
        from meridian.server.api.servicer import key_metadata

        result = await self._multi_region().replicate_key(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            replica_region=request.replica_region,
            policy=request.policy,
            description=request.description,
            tags=[Tag(tag_key=tag.tag_key, tag_value=tag.tag_value) for tag in request.tags],
        )
        return pb.ReplicateKeyResponse(
            replica_key_metadata=key_metadata(result.replica),
            replica_policy=result.replica_policy,
            replica_tags=[
                pb.Tag(tag_key=tag.tag_key, tag_value=tag.tag_value) for tag in result.replica_tags
            ],
            region=self._region,
        )

    async def UpdatePrimaryRegion(
        self, request: pb.UpdatePrimaryRegionRequest, context: Context
    ) -> pb.UpdatePrimaryRegionResponse:
        await self._multi_region().update_primary_region(
            CURRENT_CALLER.get(), key_id=request.key_id, primary_region=request.primary_region
        )
        return pb.UpdatePrimaryRegionResponse(region=self._region)
