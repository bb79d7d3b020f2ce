"""Where ``meridian audit`` reads a trail from: a running node, or its SQLite file.

Both sources give the same things (the trail's facts, records in ascending order,
digests, trusted keys), so ``verify``, ``query`` and ``export`` run the same code on
either. Reading the file directly is for forensics (a stopped node, a copied file);
reading through a node is the everyday way, and lets ``verify`` also ask every other
region for the copies of this region's digests it holds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from meridian.client.cluster_file import ClusterFile, load_cluster_file
from meridian.proto.audit.v1 import audit_pb2 as pb
from meridian.proto.audit.v1 import audit_pb2_grpc
from meridian.server.audit.chain import ChainHead, StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.events import RecordIndex, to_us
from meridian.server.audit.ports import RecordQuery
from meridian.server.audit.verify import TrailFacts
from meridian.server.storage.audit_database import AuditDatabase

PAGE_ITEMS = 1000
CALL_TIMEOUT_S = 30.0


class SourceError(Exception):
    """The trail cannot be read (no such file, node unreachable, no audit tables)."""


@dataclass(frozen=True, slots=True)
class Filters:
    key_id: str = ""
    principal: str = ""
    operation: str = ""
    outcome: str = ""
    error_code: str = ""
    start: datetime | None = None
    end: datetime | None = None

    @property
    def empty(self) -> bool:
        return self == Filters()


class TrailSource(Protocol):
    region: str

    def facts(self) -> TrailFacts: ...

    def records(
        self, filters: Filters = ..., *, limit: int | None = None
    ) -> Iterator[StoredRecord]: ...

    def digests(self) -> list[SignedDigest]: ...

    def public_keys(self) -> dict[str, bytes]: ...

    def close(self) -> None: ...


# ---- the SQLite file -------------------------------------------------------------------


class FileSource:
    def __init__(self, database: Path) -> None:
        if not database.is_file():
            raise SourceError(f"{database} does not exist")
        try:
            self._db = AuditDatabase.open(database, read_only=True)
            if not self._db.has_audit_tables():
                raise SourceError(f"{database} has no audit trail (is it a Meridian database?)")
            state = self._db.load_state()
        except sqlite3.Error as error:
            raise SourceError(f"cannot read {database}: {error}") from None
        if state is None:
            raise SourceError(f"the audit trail in {database} was never started")
        self._state = state
        self.region = state.region

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> FileSource:
        return cls(data_dir / "meridian.sqlite3")

    def facts(self) -> TrailFacts:
        state = self._state
        return TrailFacts(
            region=state.region,
            chain_id=state.chain_id,
            head=state.head,
            pruned_through_seq=state.pruned_through_seq,
            pruned_through_hash=(
                state.pruned_through_hash if state.pruned_through_seq > 0 else None
            ),
        )

    def records(
        self, filters: Filters = Filters(), *, limit: int | None = None
    ) -> Iterator[StoredRecord]:
        key_arn = self._key_arn(filters.key_id) if filters.key_id else ""
        principal = filters.principal
        if principal and not principal.startswith("arn:"):
            principal = self._principal_arn(principal)
        after, given = 0, 0
        while limit is None or given < limit:
            page = self._db.records(
                RecordQuery(
                    after_seq=after,
                    limit=PAGE_ITEMS,
                    key_arn=key_arn,
                    principal_arn=principal,
                    event_name=filters.operation,
                    outcome=filters.outcome,
                    error_code=filters.error_code,
                    start_us=to_us(filters.start) if filters.start else None,
                    end_us=to_us(filters.end) if filters.end else None,
                )
            )
            for record in page:
                if limit is not None and given >= limit:
                    return
                yield record
                given += 1
            if len(page) < PAGE_ITEMS:
                return
            after = page[-1].seq

    def digests(self) -> list[SignedDigest]:
        found: list[SignedDigest] = []
        while True:
            page = self._db.digests(after_number=found[-1].number if found else 0, limit=PAGE_ITEMS)
            found += page
            if len(page) < PAGE_ITEMS:
                return found

    def public_keys(self) -> dict[str, bytes]:
        return {row.key_id: row.public_key for row in self._db.signing_keys()}

    def close(self) -> None:
        self._db.close()

    def _key_arn(self, key_id: str) -> str:
        if key_id.startswith("arn:") and ":key/" in key_id:
            return key_id
        connection = self._db.connection
        alias = key_id.split(":", 5)[-1] if key_id.startswith("arn:") else key_id
        if alias.startswith("alias/"):
            row = connection.execute(
                "SELECT k.arn FROM aliases a JOIN keys k ON k.key_id = a.target_key_id "
                "WHERE a.alias_name = ?",
                (alias,),
            ).fetchone()
            if row is None:
                raise SourceError(f"alias {alias} does not exist in this database")
            return str(row[0])
        row = connection.execute("SELECT arn FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is not None:
            return str(row[0])
        # A deleted key: its records still name it by ARN.
        return f"arn:meridian:kms:{self.region}:{self._account()}:key/{key_id}"

    def _principal_arn(self, name: str) -> str:
        return f"arn:meridian:iam::{self._account()}:user/{name}"

    def _account(self) -> str:
        row = self._db.connection.execute(
            "SELECT body FROM audit_records ORDER BY seq LIMIT 1"
        ).fetchone()
        if row is None:
            return "000000000000"
        return str(json.loads(row[0]).get("recipientAccountId") or "000000000000")


# ---- a running node -------------------------------------------------------------------


class NodeSource:
    def __init__(self, cluster: ClusterFile, region: str) -> None:
        endpoints = cluster.endpoints
        if region not in endpoints:
            raise SourceError(
                f"region {region!r} is not in {cluster.path} (regions: {', '.join(endpoints)})"
            )
        tls = cluster.read_tls_material()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_cert,
            private_key=tls.client_key,
            certificate_chain=tls.client_cert,
        )
        server_name = cluster.server_names.get(region, f"{region}.node.meridian")
        self._channel = grpc.secure_channel(
            endpoints[region],
            credentials,
            options=[("grpc.ssl_target_name_override", server_name)],
        )
        self.stub = audit_pb2_grpc.AuditStub(self._channel)
        self.region = region
        self._info: pb.GetAuditTrailInfoResponse | None = None

    def info(self) -> pb.GetAuditTrailInfoResponse:
        if self._info is None:
            self._info = self.stub.GetAuditTrailInfo(
                pb.GetAuditTrailInfoRequest(), timeout=CALL_TIMEOUT_S
            )
        return self._info

    def facts(self) -> TrailFacts:
        info = self.info()
        return TrailFacts(
            region=self.region,
            chain_id=info.chain_id,
            head=ChainHead(info.head_seq, bytes(info.head_hash)),
            pruned_through_seq=info.pruned_through_seq,
            pruned_through_hash=(
                bytes(info.pruned_through_hash) if info.pruned_through_seq > 0 else None
            ),
        )

    def records(
        self, filters: Filters = Filters(), *, limit: int | None = None
    ) -> Iterator[StoredRecord]:
        after, given = 0, 0
        while limit is None or given < limit:
            request = pb.ListAuditRecordsRequest(
                after_seq=after,
                limit=PAGE_ITEMS,
                key_id=filters.key_id,
                principal=filters.principal,
                event_name=filters.operation,
                outcome=filters.outcome,
                error_code=filters.error_code,
            )
            if filters.start:
                request.start_time.CopyFrom(_timestamp(filters.start))
            if filters.end:
                request.end_time.CopyFrom(_timestamp(filters.end))
            page = self.stub.ListAuditRecords(request, timeout=CALL_TIMEOUT_S)
            for message in page.records:
                if limit is not None and given >= limit:
                    return
                yield record_from_message(message)
                given += 1
            if not page.truncated:
                return
            after = page.next_after_seq

    def digests(self, origin_region: str = "") -> list[SignedDigest]:
        found, _ = self.digests_and_keys(origin_region)
        return found

    def digests_and_keys(
        self, origin_region: str = ""
    ) -> tuple[list[SignedDigest], dict[str, bytes]]:
        found: list[SignedDigest] = []
        keys: dict[str, bytes] = {}
        while True:
            page = self.stub.ListAuditDigests(
                pb.ListAuditDigestsRequest(
                    origin_region=origin_region,
                    after_number=found[-1].number if found else 0,
                    limit=PAGE_ITEMS,
                ),
                timeout=CALL_TIMEOUT_S,
            )
            found += [
                SignedDigest(d.number, d.body, bytes(d.signature), d.key_id) for d in page.digests
            ]
            keys.update({key.key_id: bytes(key.public_key) for key in page.public_keys})
            if not page.truncated:
                return found, keys

    def public_keys(self) -> dict[str, bytes]:
        return {key.key_id: bytes(key.public_key) for key in self.info().public_keys}

    def close(self) -> None:
        self._channel.close()


def record_from_message(message: pb.AuditRecord) -> StoredRecord:
    return StoredRecord(
        seq=message.seq,
        prev_hash=bytes(message.prev_hash),
        hash=bytes(message.hash),
        body=message.body,
        columns=RecordIndex(
            event_time_us=message.event_time_us,
            event_id=message.event_id,
            request_id=message.request_id,
            event_type=message.event_type,
            event_name=message.event_name,
            principal_arn=message.principal_arn,
            key_arn=message.key_arn,
            related_key_arn=message.related_key_arn,
            outcome=message.outcome,
            error_code=message.error_code,
        ),
    )


def open_cluster(path: Path) -> ClusterFile:
    from meridian.client import ClusterFileError

    try:
        return load_cluster_file(path)
    except ClusterFileError as error:
        raise SourceError(str(error)) from None


def cluster_regions(cluster: ClusterFile) -> Sequence[str]:
    return [region.name for region in cluster.regions]


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
