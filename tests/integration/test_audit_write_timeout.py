"""A record not durable within ``write_timeout_ms`` fails its call; the writer goes on.

The writer is held up for real: a function queued on its connection blocks the commit
thread until the test lets it go.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from meridian.server.audit.events import (
    AuditEvent,
    ServiceEvent,
    ServiceEventName,
    service_event_document,
)
from meridian.server.audit.settings import AuditSettings
from meridian.server.audit.sink import AuditUnavailable
from meridian.server.audit.trail import AuditTrail
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto.rootkey import FileRootKeyProvider
from meridian.server.storage.audit_store import SqliteAuditStorage
from meridian.server.storage.store import SqliteStore

ACCOUNT = "111122223333"


def _event(clock: FakeClock, name: str) -> AuditEvent:
    document = service_event_document(
        ServiceEvent(
            ServiceEventName.ROTATE_KEY, key_arn=f"arn:meridian:kms:us-east-1:1:key/{name}"
        ),
        region="us-east-1",
        account_id=ACCOUNT,
        when=clock.now(),
    )
    return AuditEvent.from_document(document)


async def test_a_stalled_writer_times_the_record_out_and_then_commits_it(tmp_path: Path) -> None:
    path = tmp_path / "meridian.sqlite3"
    store = await SqliteStore.open(path)
    await store.close()
    storage = await SqliteAuditStorage.open(path)
    clock = FakeClock()
    trail = await AuditTrail.open(
        storage=storage,
        settings=replace(AuditSettings(), write_timeout_ms=200),
        region="us-east-1",
        account_id=ACCOUNT,
        clock=clock,
        root_key=FileRootKeyProvider.open_or_create(tmp_path / "root.key"),
        randbytes=os.urandom,
    )
    await trail.start()
    entered = threading.Event()
    release = threading.Event()

    def block(_: object) -> bool:
        entered.set()
        return release.wait(10)

    try:
        stall = asyncio.ensure_future(trail.run_on_store(block))
        assert await asyncio.to_thread(entered.wait, 10), "the writer ran the blocking call"
        with pytest.raises(AuditUnavailable, match="not durable within 200 ms") as caught:
            await trail.record(_event(clock, "late"))
        assert caught.value.timed_out
        with pytest.raises(AuditUnavailable):
            await stall  # the stalling call timed out as well
        release.set()
        # The timed-out record was still committed (the caller was told to retry), and
        # the writer carries on with the next one.
        assert await trail.record(_event(clock, "next")) == 2
    finally:
        release.set()
        await trail.close()
        await storage.close()
