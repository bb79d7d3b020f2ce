"""The audit trail on real SQLite, without gRPC: group commit, fail-closed, intents,
service events, sealing, pruning and shipping digests between two regions.

Faults are real SQLite errors made on the trail's own writer connection: a full disk
is ``PRAGMA max_page_count`` at the current size (SQLITE_FULL), a read-only store is
``PRAGMA query_only`` (SQLITE_READONLY).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest

from meridian.cli.audit_sources import FileSource
from meridian.server.audit.events import (
    AuditEvent,
    ServiceEvent,
    ServiceEventName,
    service_event_document,
    to_us,
)
from meridian.server.audit.settings import AuditSettings
from meridian.server.audit.shipping import (
    DigestBatch,
    DigestInbox,
    DigestRejected,
    DigestShipper,
    InMemoryDigestTransport,
)
from meridian.server.audit.sink import AuditUnavailable
from meridian.server.audit.trail import AuditTrail
from meridian.server.audit.verify import compare_peer_copies, verify_trail
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto.rootkey import FileRootKeyProvider
from meridian.server.storage.audit_store import SqliteAuditStorage
from meridian.server.storage.store import SqliteStore


@dataclass
class OpenTrail:
    trail: AuditTrail
    storage: SqliteAuditStorage
    clock: FakeClock
    path: Path
    batches: list[int]

    def verify(self):  # type: ignore[no-untyped-def]
        source = FileSource(self.path)
        try:
            return verify_trail(
                source.facts(),
                source.records(),
                digests=source.digests(),
                trusted_keys=source.public_keys(),
            )
        finally:
            source.close()


class CountingObserver:
    def __init__(self, batches: list[int]) -> None:
        self.batches = batches

    def record_durable(self, wait_s: float) -> None:
        pass

    def batch_committed(self, items: int, commit_s: float) -> None:
        self.batches.append(items)

    def write_failed(self) -> None:
        pass


async def open_trail(
    directory: Path, region: str = "us-east-1", clock: FakeClock | None = None, **settings: object
) -> OpenTrail:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "meridian.sqlite3"
    store = await SqliteStore.open(path)  # runs the migrations
    await store.close()
    storage = await SqliteAuditStorage.open(path)
    clock = clock or FakeClock()
    batches: list[int] = []
    trail = await AuditTrail.open(
        storage=storage,
        settings=replace(AuditSettings(), **settings),  # type: ignore[arg-type]
        region=region,
        account_id="111122223333",
        clock=clock,
        root_key=FileRootKeyProvider.open_or_create(directory / "root.key"),
        randbytes=os.urandom,
        observer=CountingObserver(batches),
    )
    await trail.start()
    return OpenTrail(trail, storage, clock, path, batches)


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[OpenTrail]:
    opened = await open_trail(tmp_path / "a")
    try:
        yield opened
    finally:
        await opened.trail.close()
        await opened.storage.close()


def event(trail: OpenTrail, name: str = "k1") -> AuditEvent:
    document = service_event_document(
        ServiceEvent(
            ServiceEventName.ROTATE_KEY, key_arn=f"arn:meridian:kms:us-east-1:1:key/{name}"
        ),
        region="us-east-1",
        account_id="111122223333",
        when=trail.clock.now(),
    )
    return AuditEvent.from_document(document)


async def on_writer(opened: OpenTrail, sql: str) -> None:
    def run(connection: sqlite3.Connection) -> None:
        if "max_page_count" in sql and "{pages}" in sql:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(sql.format(pages=pages))
        else:
            connection.execute(sql)

    await opened.trail.run_on_store(run)


async def test_group_commit_puts_many_records_in_one_transaction(opened: OpenTrail) -> None:
    seqs = await asyncio.gather(*(opened.trail.record(event(opened, f"k{n}")) for n in range(300)))
    assert sorted(seqs) == list(range(1, 301))
    assert max(opened.batches) > 1, "concurrent records share commits"
    assert len(opened.batches) < 300
    assert opened.verify().ok


async def test_a_full_disk_fails_the_record_and_the_trail_recovers(opened: OpenTrail) -> None:
    await opened.trail.record(event(opened))
    await on_writer(opened, "PRAGMA max_page_count = {pages}")
    with pytest.raises(AuditUnavailable, match="full"):
        # Enough records to need a new page.
        await asyncio.gather(*(opened.trail.record(event(opened, "x" * 200)) for _ in range(50)))
    await on_writer(opened, "PRAGMA max_page_count = 1073741823")
    assert await opened.trail.record(event(opened)) >= 2
    report = opened.verify()
    assert report.ok, report.problems


async def test_a_read_only_store_fails_the_record_and_the_trail_recovers(opened: OpenTrail) -> None:
    await on_writer(opened, "PRAGMA query_only = 1")
    with pytest.raises(AuditUnavailable, match="readonly"):
        await opened.trail.record(event(opened))
    await on_writer(opened, "PRAGMA query_only = 0")
    assert await opened.trail.record(event(opened)) == 1
    assert opened.verify().ok


async def test_an_intent_whose_record_failed_becomes_an_unknown_record(opened: OpenTrail) -> None:
    intent = event(opened, "changed")
    await opened.trail.open_intent("request-1", intent)
    await on_writer(opened, "PRAGMA query_only = 1")
    with pytest.raises(AuditUnavailable):
        await opened.trail.record(intent, intent_request_id="request-1")
    await on_writer(opened, "PRAGMA query_only = 0")
    # The maintenance loop does this on its next tick; run it directly here.
    recovered = await opened.trail._durable(
        opened.trail._writer.recover_intents(opened.trail._orphans)
    )
    assert recovered == 1
    records = list(FileSource(opened.path).records())
    assert [record.columns.outcome for record in records] == ["Unknown"]
    assert records[0].columns.request_id == "request-1"
    assert await opened.storage.intents() == []


async def test_an_intent_in_flight_is_not_recovered(opened: OpenTrail) -> None:
    await opened.trail.open_intent("in-flight", event(opened))
    recovered = await opened.trail._durable(
        opened.trail._writer.recover_intents(opened.trail._orphans)
    )
    assert recovered == 0
    await opened.trail.record(event(opened), intent_request_id="in-flight")
    assert await opened.storage.intents() == []


async def test_intents_left_by_a_crash_are_recovered_at_start(tmp_path: Path) -> None:
    first = await open_trail(tmp_path / "a")
    await first.trail.open_intent("crashed-1", event(first))
    # No close(): the process died here.
    first.trail._writer.close()
    await first.storage.close()
    second = await open_trail(tmp_path / "a")
    try:
        records = list(FileSource(second.path).records())
        assert [(r.columns.request_id, r.columns.outcome) for r in records] == [
            ("crashed-1", "Unknown")
        ]
        assert second.verify().ok
    finally:
        await second.trail.close()
        await second.storage.close()


async def test_service_actions_record_skip_and_withdraw(opened: OpenTrail) -> None:
    deleted = ServiceEvent(
        ServiceEventName.DELETE_KEY, key_arn="arn:meridian:kms:us-east-1:1:key/a"
    )
    async with opened.trail.service_action(deleted) as action:
        action.add_details(reason="waiting period over")
    async with opened.trail.service_action(deleted) as action:
        action.skip()
    with pytest.raises(RuntimeError):
        async with opened.trail.service_action(deleted):
            raise RuntimeError("the deletion failed")
    records = list(FileSource(opened.path).records())
    assert [record.columns.event_name for record in records] == ["DeleteKey"]
    assert '"reason":"waiting period over"' in records[0].body
    assert records[0].columns.event_type == "AwsServiceEvent"
    assert await opened.storage.intents() == []


async def test_a_cancelled_service_action_leaves_an_intent(opened: OpenTrail) -> None:
    started = asyncio.Event()

    async def rotate() -> None:
        async with opened.trail.service_action(ServiceEvent(ServiceEventName.ROTATE_KEY)):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(rotate())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await opened.storage.intents()) == 1


async def test_digests_chain_and_verify(opened: OpenTrail) -> None:
    for n in range(3):
        await opened.trail.record(event(opened, f"k{n}"))
        assert (await opened.trail.seal(force=False)) is not None
    assert await opened.trail.seal(force=False) is None  # nothing new
    report = opened.verify()
    assert report.ok, report.problems
    assert (report.digests_checked, report.sealed_through_seq) == (3, 3)


async def test_many_records_ask_for_a_seal(tmp_path: Path) -> None:
    opened = await open_trail(tmp_path / "a", digest_records_max=10)
    try:
        await asyncio.gather(*(opened.trail.record(event(opened)) for _ in range(12)))
        await wait_until(lambda: opened.trail.last_digest is not None)
    finally:
        await opened.trail.close()
        await opened.storage.close()


async def test_pruning_keeps_the_trail_verifiable(tmp_path: Path) -> None:
    opened = await open_trail(tmp_path / "a", retention_days=30)
    try:
        for n in range(5):
            await opened.trail.record(event(opened, f"old{n}"))
        await opened.trail.seal(force=False)
        # Forty days later the maintenance loop prunes what is older than thirty, up to
        # the last digest boundary before that (record 5), and says so in the trail.
        opened.clock.advance(timedelta(days=40))
        await wait_until(lambda: _first_seq(opened) == 6)
        records = list(FileSource(opened.path).records())
        assert records[-1].columns.event_name == "PruneAuditRecords"
        assert '"throughSeq":5' in records[-1].body
        report = opened.verify()
        assert report.ok, report.problems
        cutoff = to_us(opened.clock.now() - timedelta(days=30))
        assert await opened.trail.prune(cutoff) == 0  # nothing more is sealed and old
    finally:
        await opened.trail.close()
        await opened.storage.close()


def _first_seq(opened: OpenTrail) -> int:
    source = FileSource(opened.path)
    try:
        return next(iter(source.records())).seq
    finally:
        source.close()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_digests_are_shipped_and_checked_by_the_peer(tmp_path: Path) -> None:
    clock = FakeClock()
    origin = await open_trail(tmp_path / "origin", "us-east-1", clock)
    peer = await open_trail(tmp_path / "peer", "eu-west-1", clock)
    try:
        transport = InMemoryDigestTransport()
        inbox = DigestInbox(peer.storage, clock, own_region="eu-west-1")
        transport.inboxes["eu-west-1"] = inbox
        shipper = DigestShipper(
            origin.storage,
            transport,
            clock,
            own_region="us-east-1",
            peers=["eu-west-1"],
            public_keys=lambda: origin.trail.public_keys,
        )
        for n in range(3):
            await origin.trail.record(event(origin, f"k{n}"))
            await origin.trail.seal(force=False)
        assert await shipper.ship("eu-west-1") == 3
        assert await origin.storage.peer_position("eu-west-1") == 3
        held = await peer.storage.peer_digests("us-east-1", after_number=0, limit=100)
        own = await origin.storage.digests(after_number=0, limit=100)
        assert compare_peer_copies(own, {"eu-west-1": held}) == []
        assert dict(await peer.storage.peer_keys("us-east-1")) == origin.trail.public_keys

        # A rewritten history: the same number, another (validly signed) digest.
        await origin.trail.record(event(origin, "k3"))
        forged = (await origin.trail.seal(force=False)).digest  # type: ignore[union-attr]
        replaced = replace(forged, number=2)
        body = replaced.body.replace('"number":4', '"number":2')
        with pytest.raises(DigestRejected):
            await inbox.receive(
                DigestBatch(
                    "us-east-1",
                    tuple(origin.trail.public_keys.items()),
                    (replace(replaced, body=body),),
                )
            )
        # A digest that does not verify is refused; a gap is left for the origin to fill.
        bad = replace(forged, signature=bytes(len(forged.signature)))
        with pytest.raises(DigestRejected, match="signature"):
            await inbox.receive(
                DigestBatch("us-east-1", tuple(origin.trail.public_keys.items()), (bad,))
            )
        assert await shipper.ship("eu-west-1") == 4
    finally:
        for opened in (origin, peer):
            await opened.trail.close()
            await opened.storage.close()
