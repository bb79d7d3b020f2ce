"""Typed results of the KMS operations, and how they are read from the wire.

Every result is a frozen dataclass with the snake_case names of AWS's response
members, plus ``region``: the region that served the call. Timestamps become
timezone-aware UTC ``datetime`` values (None when the server left them unset),
repeated fields become tuples (so results stay hashable and immutable), and
string members that AWS may leave out (markers, key material ids, the
expiration model) are None rather than "".

Plaintext and data keys are kept out of ``repr`` so that logging a result never
logs a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf import timestamp_pb2

from meridian.proto.kms.v1 import kms_pb2

__all__ = [
    "AliasListEntry",
    "CancelKeyDeletionResult",
    "CreateKeyResult",
    "DecryptResult",
    "DescribeKeyResult",
    "EmptyResult",
    "EncryptResult",
    "GenerateDataKeyResult",
    "GenerateDataKeyWithoutPlaintextResult",
    "GenerateRandomResult",
    "KeyListEntry",
    "KeyMetadata",
    "ListAliasesResult",
    "ListKeysResult",
    "ListResourceTagsResult",
    "MultiRegionConfiguration",
    "MultiRegionKey",
    "ReEncryptResult",
    "ScheduleKeyDeletionResult",
    "Tag",
]


@dataclass(frozen=True, slots=True)
class Tag:
    """A key tag; also accepted as input (``tags=[Tag("team", "payments")]``)."""

    tag_key: str
    tag_value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiRegionKey:
    arn: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiRegionConfiguration:
    multi_region_key_type: str
    primary_key: MultiRegionKey | None
    replica_keys: tuple[MultiRegionKey, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyMetadata:
    aws_account_id: str
    key_id: str
    arn: str
    creation_date: datetime | None
    enabled: bool
    description: str
    key_usage: str
    key_state: str
    deletion_date: datetime | None
    valid_to: datetime | None
    origin: str
    expiration_model: str | None
    key_manager: str
    customer_master_key_spec: str
    key_spec: str
    encryption_algorithms: tuple[str, ...]
    signing_algorithms: tuple[str, ...]
    key_agreement_algorithms: tuple[str, ...]
    encapsulation_algorithms: tuple[str, ...]
    multi_region: bool
    multi_region_configuration: MultiRegionConfiguration | None
    pending_deletion_window_in_days: int | None
    mac_algorithms: tuple[str, ...]
    current_key_material_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyListEntry:
    key_id: str
    key_arn: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AliasListEntry:
    alias_name: str
    alias_arn: str
    target_key_id: str
    creation_date: datetime | None
    last_updated_date: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmptyResult:
    """The result of an operation whose AWS response is empty: only who acted."""

    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateKeyResult:
    key_metadata: KeyMetadata
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeKeyResult:
    key_metadata: KeyMetadata
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListKeysResult:
    keys: tuple[KeyListEntry, ...]
    next_marker: str | None
    truncated: bool
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleKeyDeletionResult:
    key_id: str
    deletion_date: datetime | None
    key_state: str
    pending_window_in_days: int
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelKeyDeletionResult:
    key_id: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptResult:
    ciphertext_blob: bytes
    key_id: str
    encryption_algorithm: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptResult:
    key_id: str
    plaintext: bytes = field(repr=False)
    encryption_algorithm: str
    key_material_id: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReEncryptResult:
    ciphertext_blob: bytes
    source_key_id: str
    key_id: str
    source_encryption_algorithm: str
    destination_encryption_algorithm: str
    source_key_material_id: str | None
    destination_key_material_id: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateDataKeyResult:
    ciphertext_blob: bytes
    plaintext: bytes = field(repr=False)
    key_id: str
    key_material_id: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateDataKeyWithoutPlaintextResult:
    ciphertext_blob: bytes
    key_id: str
    key_material_id: str | None
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateRandomResult:
    plaintext: bytes = field(repr=False)
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListAliasesResult:
    aliases: tuple[AliasListEntry, ...]
    next_marker: str | None
    truncated: bool
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListResourceTagsResult:
    tags: tuple[Tag, ...]
    next_marker: str | None
    truncated: bool
    region: str


# ---- reading responses ---------------------------------------------------------------
# One function per response type, so that mypy checks every field against the
# generated stubs. `region` is the region the server says served the call; the
# client passes the region it sent the call to, used only if the server left it out.


def _datetime(message: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return message.ToDatetime(tzinfo=UTC) if present else None


def _optional(text: str) -> str | None:
    # proto3 strings cannot be absent; "" stands for a member AWS leaves out.
    return text or None


def _multi_region_key(message: kms_pb2.MultiRegionKey) -> MultiRegionKey:
    return MultiRegionKey(arn=message.arn, region=message.region)


def _key_metadata(message: kms_pb2.KeyMetadata) -> KeyMetadata:
    configuration = None
    if message.HasField("multi_region_configuration"):
        source = message.multi_region_configuration
        configuration = MultiRegionConfiguration(
            multi_region_key_type=source.multi_region_key_type,
            primary_key=(
                _multi_region_key(source.primary_key) if source.HasField("primary_key") else None
            ),
            replica_keys=tuple(_multi_region_key(key) for key in source.replica_keys),
        )
    return KeyMetadata(
        aws_account_id=message.aws_account_id,
        key_id=message.key_id,
        arn=message.arn,
        creation_date=_datetime(message.creation_date, message.HasField("creation_date")),
        enabled=message.enabled,
        description=message.description,
        key_usage=message.key_usage,
        key_state=message.key_state,
        deletion_date=_datetime(message.deletion_date, message.HasField("deletion_date")),
        valid_to=_datetime(message.valid_to, message.HasField("valid_to")),
        origin=message.origin,
        expiration_model=_optional(message.expiration_model),
        key_manager=message.key_manager,
        customer_master_key_spec=message.customer_master_key_spec,
        key_spec=message.key_spec,
        encryption_algorithms=tuple(message.encryption_algorithms),
        signing_algorithms=tuple(message.signing_algorithms),
        key_agreement_algorithms=tuple(message.key_agreement_algorithms),
        encapsulation_algorithms=tuple(message.encapsulation_algorithms),
        multi_region=message.multi_region,
        multi_region_configuration=configuration,
        pending_deletion_window_in_days=(
            message.pending_deletion_window_in_days
            if message.HasField("pending_deletion_window_in_days")
            else None
        ),
        mac_algorithms=tuple(message.mac_algorithms),
        current_key_material_id=_optional(message.current_key_material_id),
    )


def create_key_result(message: kms_pb2.CreateKeyResponse, region: str) -> CreateKeyResult:
    return CreateKeyResult(
        key_metadata=_key_metadata(message.key_metadata), region=message.region or region
    )


def describe_key_result(message: kms_pb2.DescribeKeyResponse, region: str) -> DescribeKeyResult:
    return DescribeKeyResult(
        key_metadata=_key_metadata(message.key_metadata), region=message.region or region
    )


def list_keys_result(message: kms_pb2.ListKeysResponse, region: str) -> ListKeysResult:
    return ListKeysResult(
        keys=tuple(KeyListEntry(key_id=key.key_id, key_arn=key.key_arn) for key in message.keys),
        next_marker=_optional(message.next_marker),
        truncated=message.truncated,
        region=message.region or region,
    )


class _HasRegion(Protocol):
    """Every response that carries nothing but ``region``."""

    region: str


def empty_result(message: _HasRegion, region: str) -> EmptyResult:
    return EmptyResult(region=message.region or region)


def schedule_key_deletion_result(
    message: kms_pb2.ScheduleKeyDeletionResponse, region: str
) -> ScheduleKeyDeletionResult:
    return ScheduleKeyDeletionResult(
        key_id=message.key_id,
        deletion_date=_datetime(message.deletion_date, message.HasField("deletion_date")),
        key_state=message.key_state,
        pending_window_in_days=message.pending_window_in_days,
        region=message.region or region,
    )


def cancel_key_deletion_result(
    message: kms_pb2.CancelKeyDeletionResponse, region: str
) -> CancelKeyDeletionResult:
    return CancelKeyDeletionResult(key_id=message.key_id, region=message.region or region)


def encrypt_result(message: kms_pb2.EncryptResponse, region: str) -> EncryptResult:
    return EncryptResult(
        ciphertext_blob=message.ciphertext_blob,
        key_id=message.key_id,
        encryption_algorithm=message.encryption_algorithm,
        region=message.region or region,
    )


def decrypt_result(message: kms_pb2.DecryptResponse, region: str) -> DecryptResult:
    return DecryptResult(
        key_id=message.key_id,
        plaintext=message.plaintext,
        encryption_algorithm=message.encryption_algorithm,
        key_material_id=_optional(message.key_material_id),
        region=message.region or region,
    )


def re_encrypt_result(message: kms_pb2.ReEncryptResponse, region: str) -> ReEncryptResult:
    return ReEncryptResult(
        ciphertext_blob=message.ciphertext_blob,
        source_key_id=message.source_key_id,
        key_id=message.key_id,
        source_encryption_algorithm=message.source_encryption_algorithm,
        destination_encryption_algorithm=message.destination_encryption_algorithm,
        source_key_material_id=_optional(message.source_key_material_id),
        destination_key_material_id=_optional(message.destination_key_material_id),
        region=message.region or region,
    )


def generate_data_key_result(
    message: kms_pb2.GenerateDataKeyResponse, region: str
) -> GenerateDataKeyResult:
    return GenerateDataKeyResult(
        ciphertext_blob=message.ciphertext_blob,
        plaintext=message.plaintext,
        key_id=message.key_id,
        key_material_id=_optional(message.key_material_id),
        region=message.region or region,
    )


def generate_data_key_without_plaintext_result(
    message: kms_pb2.GenerateDataKeyWithoutPlaintextResponse, region: str
) -> GenerateDataKeyWithoutPlaintextResult:
    return GenerateDataKeyWithoutPlaintextResult(
        ciphertext_blob=message.ciphertext_blob,
        key_id=message.key_id,
        key_material_id=_optional(message.key_material_id),
        region=message.region or region,
    )


def generate_random_result(
    message: kms_pb2.GenerateRandomResponse, region: str
) -> GenerateRandomResult:
    return GenerateRandomResult(plaintext=message.plaintext, region=message.region or region)


def list_aliases_result(message: kms_pb2.ListAliasesResponse, region: str) -> ListAliasesResult:
    return ListAliasesResult(
        aliases=tuple(
            AliasListEntry(
                alias_name=alias.alias_name,
                alias_arn=alias.alias_arn,
                target_key_id=alias.target_key_id,
                creation_date=_datetime(alias.creation_date, alias.HasField("creation_date")),
                last_updated_date=_datetime(
                    alias.last_updated_date, alias.HasField("last_updated_date")
                ),
            )
            for alias in message.aliases
        ),
        next_marker=_optional(message.next_marker),
        truncated=message.truncated,
        region=message.region or region,
    )


def list_resource_tags_result(
    message: kms_pb2.ListResourceTagsResponse, region: str
) -> ListResourceTagsResult:
    return ListResourceTagsResult(
        tags=tuple(Tag(tag.tag_key, tag.tag_value) for tag in message.tags),
        next_marker=_optional(message.next_marker),
        truncated=message.truncated,
        region=message.region or region,
    )
