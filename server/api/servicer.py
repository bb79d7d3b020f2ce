"""KeyManagementService: translates proto messages to KeyService calls and back.

No logic lives here beyond translation (vault's ``path_encrypt.go`` habit): every
rule, limit and error is the domain's. Errors propagate to the interceptor.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.api.access_servicer import AccessControlServicer
from meridian.server.api.batch_servicer import BatchServicer
from meridian.server.api.interceptor import CURRENT_CALLER, Context
from meridian.server.api.key_types_servicer import KeyTypesServicer
from meridian.server.api.multi_region_servicer import (
    MultiRegionServicer,
    multi_region_configuration,
)
from meridian.server.audit.events import from_us
from meridian.server.audit.last_usage import KeyLastUsage
from meridian.server.domain.access.service import AccessService
from meridian.server.domain.errors import UnsupportedOperationException
from meridian.server.domain.key_specs import algorithms_for
from meridian.server.domain.key_types import ImportExpiry
from meridian.server.domain.model import Alias, Key, Tag
from meridian.server.domain.service import CreateKeyRequest, KeyService


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def key_metadata(key: Key, expiry: ImportExpiry | None = None) -> pb.KeyMetadata:
    """AWS's KeyMetadata; ``expiry`` adds ExpirationModel/ValidTo of imported material."""
    algorithms = algorithms_for(key.key_spec, key.key_usage)
    metadata = pb.KeyMetadata(
        aws_account_id=key.account_id,
        key_id=key.key_id,
        arn=key.arn,
        creation_date=_timestamp(key.created_at),
        enabled=key.enabled,
        description=key.description,
        key_usage=key.key_usage.value,
        key_state=key.state.value,
        origin=key.origin.value,
        key_manager="CUSTOMER",
        customer_master_key_spec=key.key_spec.value,
        key_spec=key.key_spec.value,
        encryption_algorithms=algorithms.encryption,
        signing_algorithms=algorithms.signing,
        key_agreement_algorithms=algorithms.key_agreement,
        encapsulation_algorithms=algorithms.encapsulation,
        mac_algorithms=algorithms.mac,
        multi_region=key.multi_region,
        current_key_material_id=key.current_material_id.hex(),
    )
    if key.deletion_date is not None:
        metadata.deletion_date.CopyFrom(_timestamp(key.deletion_date))
    if key.pending_window_days is not None:
        metadata.pending_deletion_window_in_days = key.pending_window_days
    if key.multi_region_configuration is not None:
        metadata.multi_region_configuration.CopyFrom(
            multi_region_configuration(key.multi_region_configuration)
        )
    if expiry is not None and expiry.expiration_model is not None:
        metadata.expiration_model = expiry.expiration_model.value
        if expiry.valid_to is not None:
            metadata.valid_to.CopyFrom(_timestamp(expiry.valid_to))
    return metadata


def _optional_int(message: Any, field: str) -> int | None:
    return int(getattr(message, field)) if message.HasField(field) else None


def _tags(tags: Any) -> list[Tag]:
    return [Tag(tag_key=tag.tag_key, tag_value=tag.tag_value) for tag in tags]


class KeyManagementServicer(
    AccessControlServicer,
    KeyTypesServicer,
    MultiRegionServicer,
    BatchServicer,
    kms_pb2_grpc.KeyManagementServiceServicer,
):
    def __init__(self, service: KeyService, access: AccessService | None = None) -> None:
        self._service = service
        self._region = service.region
        self._access = access
        # Set by the node when the audit trail is on (GetKeyLastUsage reads its counters).
        self.last_usage: KeyLastUsage | None = None

    def _alias_entry(self, alias: Alias) -> pb.AliasListEntry:
        return pb.AliasListEntry(
            alias_name=alias.alias_name,
            alias_arn=self._service.alias_arn(alias.alias_name),
            target_key_id=alias.target_key_id,
            creation_date=_timestamp(alias.created_at),
            last_updated_date=_timestamp(alias.updated_at),
        )

    # ---- key management ----------------------------------------------------------

    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: Context
    ) -> pb.CreateKeyResponse:
        # The policy must not lock its creator out (BypassPolicyLockoutSafetyCheck).
        await self._access_service.check_new_key_policy(
            CURRENT_CALLER.get(),
            request.policy,
            bypass=request.bypass_policy_lockout_safety_check,
        )
        key = await self._service.create_key(
            CURRENT_CALLER.get(),
            CreateKeyRequest(
                description=request.description,
                key_usage=request.key_usage,
                key_spec=request.key_spec,
                customer_master_key_spec=request.customer_master_key_spec,
                origin=request.origin,
                policy=request.policy,
                tags=_tags(request.tags),
                multi_region=request.multi_region,
            ),
        )
        return pb.CreateKeyResponse(key_metadata=key_metadata(key), region=self._region)

    async def DescribeKey(
        self, request: pb.DescribeKeyRequest, context: Context
    ) -> pb.DescribeKeyResponse:
        key = await self._service.describe_key(CURRENT_CALLER.get(), request.key_id)
        expiry = await self._service.key_types.import_expiry(key)
        return pb.DescribeKeyResponse(key_metadata=key_metadata(key, expiry), region=self._region)

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        page = await self._service.list_keys(
            CURRENT_CALLER.get(), limit=_optional_int(request, "limit"), marker=request.marker
        )
        return pb.ListKeysResponse(
            keys=[pb.KeyListEntry(key_id=key.key_id, key_arn=key.arn) for key in page.items],
            next_marker=page.next_marker,
            truncated=page.truncated,
            region=self._region,
        )

    async def UpdateKeyDescription(
        self, request: pb.UpdateKeyDescriptionRequest, context: Context
    ) -> pb.UpdateKeyDescriptionResponse:
        await self._service.update_key_description(
            CURRENT_CALLER.get(), request.key_id, request.description
        )
        return pb.UpdateKeyDescriptionResponse(region=self._region)

    async def EnableKey(
        self, request: pb.EnableKeyRequest, context: Context
    ) -> pb.EnableKeyResponse:
        await self._service.enable_key(CURRENT_CALLER.get(), request.key_id)
        return pb.EnableKeyResponse(region=self._region)

    async def DisableKey(
        self, request: pb.DisableKeyRequest, context: Context
    ) -> pb.DisableKeyResponse:
        await self._service.disable_key(CURRENT_CALLER.get(), request.key_id)
        return pb.DisableKeyResponse(region=self._region)

    async def ScheduleKeyDeletion(
        self, request: pb.ScheduleKeyDeletionRequest, context: Context
    ) -> pb.ScheduleKeyDeletionResponse:
        key = await self._service.schedule_key_deletion(
            CURRENT_CALLER.get(), request.key_id, _optional_int(request, "pending_window_in_days")
        )
        assert key.pending_window_days is not None
        response = pb.ScheduleKeyDeletionResponse(
            key_id=key.arn,
            key_state=key.state.value,
            pending_window_in_days=key.pending_window_days,
            region=self._region,
        )
        # A multi-Region primary waiting for its replicas (PendingReplicaDeletion) has no
        # deletion date yet: its window starts when the last replica is deleted.
        if key.deletion_date is not None:
            response.deletion_date.CopyFrom(_timestamp(key.deletion_date))
        return response

    async def CancelKeyDeletion(
        self, request: pb.CancelKeyDeletionRequest, context: Context
    ) -> pb.CancelKeyDeletionResponse:
        key = await self._service.cancel_key_deletion(CURRENT_CALLER.get(), request.key_id)
        return pb.CancelKeyDeletionResponse(key_id=key.arn, region=self._region)

    # ---- cryptographic operations ----------------------------------------------------

    async def Encrypt(self, request: pb.EncryptRequest, context: Context) -> pb.EncryptResponse:
        result = await self._service.encrypt(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            plaintext=request.plaintext,
            encryption_context=dict(request.encryption_context),
            encryption_algorithm=request.encryption_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.EncryptResponse(
            ciphertext_blob=result.ciphertext_blob,
            key_id=result.key_arn,
            # The domain accepted the algorithm, so echoing it is exact (RSA keys: OAEP).
            encryption_algorithm=request.encryption_algorithm or "SYMMETRIC_DEFAULT",
            region=self._region,
        )

    async def Decrypt(self, request: pb.DecryptRequest, context: Context) -> pb.DecryptResponse:
        result = await self._service.decrypt(
            CURRENT_CALLER.get(),
            ciphertext_blob=request.ciphertext_blob,
            encryption_context=dict(request.encryption_context),
            key_id=request.key_id,
            encryption_algorithm=request.encryption_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.DecryptResponse(
            key_id=result.key_arn,
            plaintext=result.plaintext,
            encryption_algorithm=request.encryption_algorithm or "SYMMETRIC_DEFAULT",
            key_material_id=result.key_material_id,
            region=self._region,
        )

    async def ReEncrypt(
        self, request: pb.ReEncryptRequest, context: Context
    ) -> pb.ReEncryptResponse:
        result = await self._service.re_encrypt(
            CURRENT_CALLER.get(),
            ciphertext_blob=request.ciphertext_blob,
            source_encryption_context=dict(request.source_encryption_context),
            source_key_id=request.source_key_id,
            destination_key_id=request.destination_key_id,
            destination_encryption_context=dict(request.destination_encryption_context),
            source_encryption_algorithm=request.source_encryption_algorithm,
            destination_encryption_algorithm=request.destination_encryption_algorithm,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.ReEncryptResponse(
            ciphertext_blob=result.ciphertext_blob,
            source_key_id=result.source_key_arn,
            key_id=result.key_arn,
            source_encryption_algorithm=request.source_encryption_algorithm or "SYMMETRIC_DEFAULT",
            destination_encryption_algorithm=(
                request.destination_encryption_algorithm or "SYMMETRIC_DEFAULT"
            ),
            source_key_material_id=result.source_key_material_id,
            destination_key_material_id=result.destination_key_material_id,
            region=self._region,
        )

    async def GenerateDataKey(
        self, request: pb.GenerateDataKeyRequest, context: Context
    ) -> pb.GenerateDataKeyResponse:
        result = await self._service.generate_data_key(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            encryption_context=dict(request.encryption_context),
            number_of_bytes=_optional_int(request, "number_of_bytes"),
            key_spec=request.key_spec,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.GenerateDataKeyResponse(
            ciphertext_blob=result.ciphertext_blob,
            plaintext=result.plaintext,
            key_id=result.key_arn,
            key_material_id=result.key_material_id,
            region=self._region,
        )

    async def GenerateDataKeyWithoutPlaintext(
        self, request: pb.GenerateDataKeyWithoutPlaintextRequest, context: Context
    ) -> pb.GenerateDataKeyWithoutPlaintextResponse:
        result = await self._service.generate_data_key(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            encryption_context=dict(request.encryption_context),
            number_of_bytes=_optional_int(request, "number_of_bytes"),
            key_spec=request.key_spec,
            grant_tokens=list(request.grant_tokens),
        )
        return pb.GenerateDataKeyWithoutPlaintextResponse(
            ciphertext_blob=result.ciphertext_blob,
            key_id=result.key_arn,
            key_material_id=result.key_material_id,
            region=self._region,
        )

    async def GenerateRandom(
        self, request: pb.GenerateRandomRequest, context: Context
    ) -> pb.GenerateRandomResponse:
        plaintext = self._service.generate_random(
            CURRENT_CALLER.get(), _optional_int(request, "number_of_bytes")
        )
        return pb.GenerateRandomResponse(plaintext=plaintext, region=self._region)

    # ---- aliases ---------------------------------------------------------------------

    async def CreateAlias(
        self, request: pb.CreateAliasRequest, context: Context
    ) -> pb.CreateAliasResponse:
        await self._service.create_alias(
            CURRENT_CALLER.get(), request.alias_name, request.target_key_id
        )
        return pb.CreateAliasResponse(region=self._region)

    async def UpdateAlias(
        self, request: pb.UpdateAliasRequest, context: Context
    ) -> pb.UpdateAliasResponse:
        await self._service.update_alias(
            CURRENT_CALLER.get(), request.alias_name, request.target_key_id
        )
        return pb.UpdateAliasResponse(region=self._region)

    async def DeleteAlias(
        self, request: pb.DeleteAliasRequest, context: Context
    ) -> pb.DeleteAliasResponse:
        await self._service.delete_alias(CURRENT_CALLER.get(), request.alias_name)
        return pb.DeleteAliasResponse(region=self._region)

    async def ListAliases(
        self, request: pb.ListAliasesRequest, context: Context
    ) -> pb.ListAliasesResponse:
        page = await self._service.list_aliases(
            CURRENT_CALLER.get(),
            key_id=request.key_id,
            limit=_optional_int(request, "limit"),
            marker=request.marker,
        )
        return pb.ListAliasesResponse(
            aliases=[self._alias_entry(alias) for alias in page.items],
            next_marker=page.next_marker,
            truncated=page.truncated,
            region=self._region,
        )

    # ---- tags ------------------------------------------------------------------------

    async def TagResource(
        self, request: pb.TagResourceRequest, context: Context
    ) -> pb.TagResourceResponse:
        await self._service.tag_resource(CURRENT_CALLER.get(), request.key_id, _tags(request.tags))
        return pb.TagResourceResponse(region=self._region)

    async def UntagResource(
        self, request: pb.UntagResourceRequest, context: Context
    ) -> pb.UntagResourceResponse:
        await self._service.untag_resource(
            CURRENT_CALLER.get(), request.key_id, list(request.tag_keys)
        )
        return pb.UntagResourceResponse(region=self._region)

    async def ListResourceTags(
        self, request: pb.ListResourceTagsRequest, context: Context
    ) -> pb.ListResourceTagsResponse:
        page = await self._service.list_resource_tags(
            CURRENT_CALLER.get(),
            request.key_id,
            limit=_optional_int(request, "limit"),
            marker=request.marker,
        )
        return pb.ListResourceTagsResponse(
            tags=[pb.Tag(tag_key=tag.tag_key, tag_value=tag.tag_value) for tag in page.items],
            next_marker=page.next_marker,
            truncated=page.truncated,
            region=self._region,
        )

    # ---- usage tracking (server/audit/last_usage.py) ------------------------------------

    async def GetKeyLastUsage(
        self, request: pb.GetKeyLastUsageRequest, context: Context
    ) -> pb.GetKeyLastUsageResponse:
        key = await self._service.describe_key(CURRENT_CALLER.get(), request.key_id)
        if self.last_usage is None:
            raise UnsupportedOperationException(
                "Usage tracking needs the audit trail, which is disabled on this node"
            )
        report = await self.last_usage.for_key(key.arn)
        response = pb.GetKeyLastUsageResponse(
            key_id=key.arn,
            tracking_start_date=_timestamp(report.tracking_start),
            key_creation_date=_timestamp(key.created_at),
            region=self._region,
        )
        if report.last_use is not None:
            response.key_last_usage.CopyFrom(
                pb.KeyLastUsageData(
                    operation=report.last_use.operation,
                    timestamp=_timestamp(from_us(report.last_use.used_at_us)),
                    cloud_trail_event_id=report.last_use.event_id,
                    kms_request_id=report.last_use.request_id,
                )
            )
        return response
