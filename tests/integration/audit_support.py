"""Helpers for the audit tests: read a node's trail over gRPC or from its file, verify it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from meridian.cli.audit_sources import FileSource, record_from_message
from meridian.proto.audit.v1 import audit_pb2 as apb
from meridian.proto.audit.v1 import audit_pb2_grpc
from meridian.server.audit.chain import ChainHead, StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.verify import TrailFacts, VerifyReport, verify_trail
from meridian.server.node import Node


def audit_stub(channel: grpc.aio.Channel) -> audit_pb2_grpc.AuditAsyncStub:
    return audit_pb2_grpc.AuditStub(channel)  # type: ignore[return-value]


async def all_records(channel: grpc.aio.Channel, **filters: Any) -> list[StoredRecord]:
    stub = audit_stub(channel)
    records: list[StoredRecord] = []
    after = 0
    while True:
        page = await stub.ListAuditRecords(apb.ListAuditRecordsRequest(after_seq=after, **filters))
        records += [record_from_message(message) for message in page.records]
        if not page.truncated:
            return records
        after = page.next_after_seq


def documents(records: list[StoredRecord]) -> list[dict[str, Any]]:
    return [json.loads(record.body) for record in records]


async def verify_over_grpc(channel: grpc.aio.Channel) -> VerifyReport:
    stub = audit_stub(channel)
    info = await stub.GetAuditTrailInfo(apb.GetAuditTrailInfoRequest())
    page = await stub.ListAuditDigests(apb.ListAuditDigestsRequest())
    digests = [SignedDigest(d.number, d.body, d.signature, d.key_id) for d in page.digests]
    keys = {key.key_id: key.public_key for key in page.public_keys}
    records = await all_records(channel)
    facts = TrailFacts(
        region=info.region,
        chain_id=info.chain_id,
        head=ChainHead(info.head_seq, info.head_hash),
        pruned_through_seq=info.pruned_through_seq,
        pruned_through_hash=info.pruned_through_hash if info.pruned_through_seq else None,
    )
    return verify_trail(facts, records, digests=digests, trusted_keys=keys)


def verify_file(node: Node) -> VerifyReport:
    source = FileSource.from_data_dir(node.config.data_dir)
    try:
        return verify_trail(
            source.facts(),
            source.records(),
            digests=source.digests(),
            trusted_keys=source.public_keys(),
        )
    finally:
        source.close()


async def request_id_of(call: Any) -> str:
    """The x-request-id of a finished grpc.aio call."""
    for name, value in await call.trailing_metadata() or ():
        if name == "x-request-id":
            return str(value)
    raise AssertionError("the call has no x-request-id")


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a condition'}")
        await asyncio.sleep(0.02)
