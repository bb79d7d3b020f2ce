"""``meridian.audit.v1``: translation between the audit protos and the audit trail.

No rules live here (they are in ``server/audit``), only proto <-> domain, as in
``servicer.py``. Errors are KmsErrors, mapped once by the interceptor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from meridian.proto.audit.v1 import audit_pb2 as pb
from meridian.proto.audit.v1 import audit_pb2_grpc
from meridian.server.api.interceptor import CURRENT_CALLER, Context
from meridian.server.audit.chain import StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.events import from_us
from meridian.server.audit.queries import AuditQueries, RecordFilter
from meridian.server.audit.shipping import DigestBatch, DigestInbox, DigestRejected
from meridian.server.audit.sink import AuditUnavailable
from meridian.server.audit.trail import AuditTrail
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto import audit_signing
from meridian.server.domain.errors import (
    AccessDeniedException,
    DependencyTimeoutException,
    ValidationException,
)

_Message = TypeVar("_Message", pb.AuditRecord, pb.AuditDigest)

# Well under the node's 1 MiB message limit (server/node.py MESSAGE_BYTES_MAX).
PAGE_BYTES_MAX = 512 * 1024


def _within_page_bytes(messages: list[_Message]) -> list[_Message]:
    """The leading messages that fit in PAGE_BYTES_MAX (always at least one)."""
    size = 0
    for index, message in enumerate(messages):
        size += message.ByteSize()
        if index and size > PAGE_BYTES_MAX:
            return messages[:index]
    return messages


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _time(message: object, field: str) -> datetime | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def record_message(record: StoredRecord) -> pb.AuditRecord:
    columns = record.columns
    return pb.AuditRecord(
        seq=record.seq,
        prev_hash=record.prev_hash,
        hash=record.hash,
        body=record.body,
        event_time_us=columns.event_time_us,
        event_id=columns.event_id,
        request_id=columns.request_id,
        event_type=columns.event_type,
        event_name=columns.event_name,
        principal_arn=columns.principal_arn,
        key_arn=columns.key_arn,
        related_key_arn=columns.related_key_arn,
        outcome=columns.outcome,
        error_code=columns.error_code,
    )


def digest_message(digest: SignedDigest) -> pb.AuditDigest:
    return pb.AuditDigest(
        number=digest.number, body=digest.body, signature=digest.signature, key_id=digest.key_id
    )


def key_messages(keys: Mapping[str, bytes] | list[tuple[str, bytes]]) -> list[pb.AuditPublicKey]:
    items = keys.items() if isinstance(keys, Mapping) else keys
    return [
        pb.AuditPublicKey(key_id=key_id, public_key=key, algorithm=audit_signing.ALGORITHM)
        for key_id, key in items
    ]


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(
        self,
        trail: AuditTrail,
        queries: AuditQueries,
        clock: Clock,
        *,
        peer_positions: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._trail = trail
        self._queries = queries
        self._clock = clock
        self._peer_positions = peer_positions
        self._region = trail.region

    async def GetAuditTrailInfo(
        self, request: pb.GetAuditTrailInfoRequest, context: Context
    ) -> pb.GetAuditTrailInfoResponse:
        info = await self._trail.info()
        last = await self._trail.latest_digest()
        return pb.GetAuditTrailInfoResponse(
            chain_id=info.chain_id,
            tracking_start_date=_timestamp(from_us(info.tracking_start_us)),
            head_seq=info.head.seq,
            head_hash=info.head.hash,
            pruned_through_seq=info.pruned_through_seq,
            pruned_through_hash=info.pruned_through_hash,
            public_keys=key_messages(info.public_keys),
            signing_key_id=info.signing_key_id,
            last_digest_number=last.digest.number if last else 0,
            sealed_through_seq=last.last_seq if last else 0,
            peers=[
                pb.PeerDigestPosition(peer_region=peer, acked_digest_number=number)
                for peer, number in sorted(self._peer_positions().items())
            ],
            held_peer_regions=await self._trail.storage.peer_regions(),
            region=self._region,
        )

    async def ListAuditRecords(
        self, request: pb.ListAuditRecordsRequest, context: Context
    ) -> pb.ListAuditRecordsResponse:
        page = await self._queries.records(
            RecordFilter(
                after_seq=request.after_seq,
                limit=request.limit if request.HasField("limit") else None,
                key_id=request.key_id,
                principal=request.principal,
                event_name=request.event_name,
                outcome=request.outcome,
                error_code=request.error_code,
                start=_time(request, "start_time"),
                end=_time(request, "end_time"),
            )
        )
        # A page ends early once it is PAGE_BYTES_MAX big: records can be large (a
        # PutKeyPolicy record carries its 32 KiB policy), and 1,000 of them would pass
        # gRPC's message limit; the reader just asks for the next page.
        records = _within_page_bytes([record_message(record) for record in page.records])
        cut = len(records) < len(page.records)
        return pb.ListAuditRecordsResponse(
            records=records,
            next_after_seq=records[-1].seq if records else page.next_after_seq,
            truncated=page.truncated or cut,
            region=self._region,
        )

    async def ListAuditDigests(
        self, request: pb.ListAuditDigestsRequest, context: Context
    ) -> pb.ListAuditDigestsResponse:
        digests, keys, truncated = await self._queries.digests(
            request.origin_region,
            after_number=request.after_number,
            limit=request.limit if request.HasField("limit") else None,
        )
        # Each digest carries an ML-DSA-65 signature (3.3 KB): 1,000 would pass the
        # message limit too, so pages end at PAGE_BYTES_MAX here as well.
        messages = _within_page_bytes([digest_message(digest) for digest in digests])
        return pb.ListAuditDigestsResponse(
            digests=messages,
            public_keys=key_messages(keys),
            truncated=truncated or len(messages) < len(digests),
            region=self._region,
        )

    async def SealAuditDigest(
        self, request: pb.SealAuditDigestRequest, context: Context
    ) -> pb.SealAuditDigestResponse:
        try:
            sealed = await self._trail.seal(force=False)
        except AuditUnavailable:
            raise DependencyTimeoutException(
                "The audit store is unavailable; retry later"
            ) from None
        response = pb.SealAuditDigestResponse(sealed=sealed is not None, region=self._region)
        last = sealed or await self._trail.latest_digest()
        if last is not None:
            response.digest.CopyFrom(digest_message(last.digest))
        return response

    async def GetUsageReport(
        self, request: pb.GetUsageReportRequest, context: Context
    ) -> pb.GetUsageReportResponse:
        window = await self._queries.usage(
            request.first_day, request.last_day, today=self._clock.now().date()
        )
        return pb.GetUsageReportResponse(
            counts=[
                pb.UsageCount(
                    day=row.day,
                    key_arn=row.key_arn,
                    operation=row.operation,
                    requests=row.requests,
                    failures=row.failures,
                )
                for row in window.counts
            ],
            last_uses=[
                pb.KeyLastUse(
                    key_arn=use.key_arn,
                    operation=use.operation,
                    timestamp=_timestamp(from_us(use.used_at_us)),
                    cloud_trail_event_id=use.event_id,
                    kms_request_id=use.request_id,
                )
                for use in window.last_uses
            ],
            keys=[
                pb.KeyInventoryEntry(
                    key_arn=key.key_arn,
                    key_state=key.key_state,
                    creation_date=_timestamp(from_us(key.created_at_us)),
                )
                for key in window.keys
            ],
            tracking_start_date=_timestamp(from_us(self._trail.tracking_start_us)),
            first_day=window.first_day,
            last_day=window.last_day,
            region=self._region,
        )


class AuditExchangeServicer(audit_pb2_grpc.AuditExchangeServicer):
    """Receives other regions' digests; only the origin's node may push them."""

    def __init__(self, inbox: DigestInbox, *, region: str) -> None:
        self._inbox = inbox
        self._region = region

    async def PushAuditDigests(
        self, request: pb.PushAuditDigestsRequest, context: Context
    ) -> pb.PushAuditDigestsResponse:
        caller = CURRENT_CALLER.get()
        if not caller.principal_arn.endswith(f":node/{request.origin_region}"):
            raise AccessDeniedException(
                f"Only the node of {request.origin_region or 'the origin region'} may push its "
                "audit digests"
            )
        batch = DigestBatch(
            origin_region=request.origin_region,
            public_keys=tuple((key.key_id, key.public_key) for key in request.public_keys),
            digests=tuple(
                SignedDigest(d.number, d.body, d.signature, d.key_id) for d in request.digests
            ),
        )
        try:
            held = await self._inbox.receive(batch)
        except DigestRejected as error:
            raise ValidationException(str(error)) from None
        except AuditUnavailable:
            raise DependencyTimeoutException(
                "The audit store is unavailable; retry later"
            ) from None
        return pb.PushAuditDigestsResponse(held_through_number=held, region=self._region)
