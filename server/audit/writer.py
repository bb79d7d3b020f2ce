"""Group commit: many records per SQLite transaction, each caller released once durable.

Callers on the event loop enqueue work and await a future. One dedicated thread takes
everything waiting (up to ``batch_records_max`` items), chains the records onto the
head, writes them, their usage counters, intents and the new head in one
``BEGIN IMMEDIATE … COMMIT`` (``synchronous=FULL``), and only then hands the results
back to the loop. While one commit is on disk, the next batch gathers, so under load
a commit carries many records and the fsync is shared; an idle node commits a lone
record at once, with no added delay.

Why a thread that loops on its own rather than a task that awaits each commit: the
next commit must not wait for the event loop to get round to the writer (under load
the loop is busy serving calls, and every such wait shrinks the batches it feeds).
The thread commits back to back; the loop only enqueues and resolves futures.

The writer owns the chain's head and the last digest: sealing is a queued item too, so
a digest always covers exactly the records committed before it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from meridian.server.audit.chain import ChainHead, record_hash
from meridian.server.audit.events import AuditEvent
from meridian.server.audit.ports import (
    CommitBatch,
    GroupCommitConnection,
    Intent,
    NewDigest,
    NewRecord,
)
from meridian.server.audit.sink import AuditUnavailable
from meridian.server.audit.usage import UsageTally

# Builds the digest for the head it is given, or returns None if there is nothing to seal.
DigestBuilder = Callable[[ChainHead, NewDigest | None], NewDigest | None]
# Given the intents in the store, returns the records that replace the orphans among them.
IntentRecovery = Callable[[list[Intent]], list[tuple[AuditEvent, str]]]
ConnectionCall = Callable[[Any], object]


class AuditObserver(Protocol):
    """Where the writer reports what metrics need (see server/metrics.py). Called from
    the writer's thread."""

    def record_durable(self, wait_s: float) -> None: ...

    def batch_committed(self, items: int, commit_s: float) -> None: ...

    def write_failed(self) -> None: ...


class NullObserver:
    def record_durable(self, wait_s: float) -> None:
        return None

    def batch_committed(self, items: int, commit_s: float) -> None:
        return None

    def write_failed(self) -> None:
        return None


@dataclass(slots=True)
class _Item:
    future: asyncio.Future[object]
    enqueued: float
    event: AuditEvent | None = None
    intent_done: str | None = None
    intent: Intent | None = None
    seal: DigestBuilder | None = None
    prune_anchor: tuple[int, bytes] | None = None
    recover: IntentRecovery | None = None
    call: ConnectionCall | None = None

    @property
    def special(self) -> bool:
        """Items that end a batch (and recoveries and calls, which also start one)."""
        return bool(self.seal or self.prune_anchor or self.recover or self.call)


class GroupCommitWriter:
    def __init__(
        self,
        connect: Callable[[], GroupCommitConnection],
        head: ChainHead,
        last_digest: NewDigest | None,
        *,
        batch_records_max: int,
        queue_records_max: int,
        observer: AuditObserver | None = None,
        shared_chain: bool = False,
    ) -> None:
        self._connect = connect
        # True when other worker processes append to the same chain: ``head`` and
        # ``last_digest`` are then only this writer's latest view, and every commit
        # chains onto the head stored in the database instead.
        self._shared_chain = shared_chain
        self._head = head
        self._last_digest = last_digest
        self._batch_max = batch_records_max
        self._queue_max = queue_records_max
        self._observer = observer or NullObserver()
        self._queue: deque[_Item] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def head(self) -> ChainHead:
        return self._head

    @property
    def last_digest(self) -> NewDigest | None:
        return self._last_digest

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the commit thread (it opens its own connection)."""
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="audit-group-commit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Refuse new work; the thread stops once the queue is drained."""
        with self._ready:
            self._closing = True
            self._ready.notify()

    async def wait_closed(self) -> None:
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    # ---- enqueueing (on the event loop) ------------------------------------------------

    def append(
        self, event: AuditEvent, *, intent_done: str | None = None
    ) -> asyncio.Future[object]:
        """Chain ``event``; the future's result is its seq once durable."""
        return self._enqueue(_Item(self._future(), time.perf_counter(), event, intent_done))

    def append_many(
        self, events: Sequence[tuple[AuditEvent, str | None]]
    ) -> list[asyncio.Future[object]]:
        """``append`` for each ``(event, intent_done)``, queued together under one lock
        (a batch call's item records): all of them or, if the queue has no room for
        all, none (AuditUnavailable)."""
        loop = asyncio.get_running_loop()
        enqueued = time.perf_counter()
        items = [
            _Item(loop.create_future(), enqueued, event, intent_done)
            for event, intent_done in events
        ]
        with self._ready:
            if self._closing or self._thread is None:
                raise AuditUnavailable("the audit trail is closed")
            if len(self._queue) + len(items) > self._queue_max:
                raise AuditUnavailable(
                    f"the audit writer has {self._queue_max} records waiting", timed_out=True
                )
            self._queue.extend(items)
            self._ready.notify()
        return [item.future for item in items]

    def put_intent(self, intent: Intent) -> asyncio.Future[object]:
        return self._enqueue(_Item(self._future(), time.perf_counter(), intent=intent))

    def withdraw_intent(self, request_id: str) -> asyncio.Future[object]:
        return self._enqueue(_Item(self._future(), time.perf_counter(), intent_done=request_id))

    def seal(self, builder: DigestBuilder) -> asyncio.Future[object]:
        """Seal a digest after everything queued so far; result: the NewDigest or None."""
        return self._enqueue(_Item(self._future(), time.perf_counter(), seal=builder))

    def recover_intents(self, recovery: IntentRecovery) -> asyncio.Future[object]:
        """Replace orphaned intents by records; result: how many were recovered.

        Runs between commits, so an intent still in the store at that moment belongs
        either to a call in flight (``recovery`` must leave it) or to one that ended
        without its record (crash, store outage).
        """
        return self._enqueue(_Item(self._future(), time.perf_counter(), recover=recovery))

    def set_prune_anchor(
        self, anchor: tuple[int, bytes], event: AuditEvent
    ) -> asyncio.Future[object]:
        """Record a prune event and move the anchor in the same transaction."""
        item = _Item(self._future(), time.perf_counter(), event=event, prune_anchor=anchor)
        return self._enqueue(item)

    def call(self, function: ConnectionCall) -> asyncio.Future[object]:
        """Run ``function(connection)`` on the writer's connection between commits
        (operations and fault-injection tests: e.g. ``PRAGMA query_only``)."""
        return self._enqueue(_Item(self._future(), time.perf_counter(), call=function))

    def _future(self) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        return future

    def _enqueue(self, item: _Item) -> asyncio.Future[object]:
        with self._ready:
            if self._closing or self._thread is None:
                raise AuditUnavailable("the audit trail is closed")
            if len(self._queue) >= self._queue_max:
                raise AuditUnavailable(
                    f"the audit writer has {self._queue_max} records waiting", timed_out=True
                )
            self._queue.append(item)
            self._ready.notify()
        return item.future

    # ---- the commit thread ----------------------------------------------------------------

    def _run(self) -> None:
        connection: GroupCommitConnection | None = None
        try:
            connection = self._connect()
            while True:
                with self._ready:
                    while not self._queue and not self._closing:
                        self._ready.wait()
                    if not self._queue:
                        return
                    items = self._take()
                first = items[0]
                if first.recover is not None:
                    self._recover(connection, first)
                elif first.call is not None:
                    self._call(connection, first)
                else:
                    self._commit(connection, items)
        except BaseException as error:  # the connection cannot even be opened
            self._fail_everything(error)
        finally:
            if connection is not None:
                connection.close()
            self._settle(lambda: self._finish_stopped())

    def _take(self) -> list[_Item]:
        items: list[_Item] = []
        while self._queue and len(items) < self._batch_max:
            item = self._queue[0]
            # Seals, prune anchors, recoveries and calls end a batch, so they see exactly
            # what precedes them; recoveries and calls also start one (they run alone).
            if item.special and items:
                break
            items.append(self._queue.popleft())
            if item.special:
                break
        return items

    def _call(self, connection: GroupCommitConnection, item: _Item) -> None:
        assert item.call is not None
        try:
            result = item.call(connection.connection)
        except Exception as error:
            self._settle_one(item, error=error)
            return
        self._settle_one(item, result=result)

    def _recover(self, connection: GroupCommitConnection, item: _Item) -> None:
        assert item.recover is not None
        try:
            orphans = item.recover(connection.intents())
        except Exception as error:
            self._observer.write_failed()
            self._settle_one(item, error=AuditUnavailable(f"the audit store failed: {error}"))
            return
        loop = self._loop
        assert loop is not None
        items = [
            _Item(self._orphan_future(), item.enqueued, event=event, intent_done=request_id)
            for event, request_id in orphans
        ]
        if items and not self._commit(connection, items):
            self._settle_one(item, error=AuditUnavailable("the audit store failed"))
        else:
            self._settle_one(item, result=len(items))

    def _orphan_future(self) -> asyncio.Future[object]:
        # Created off the loop's thread: a plain future of that loop, never awaited.
        assert self._loop is not None
        future: asyncio.Future[object] = self._loop.create_future()
        return future

    def _commit(self, connection: GroupCommitConnection, items: list[_Item]) -> bool:
        built: list[tuple[ChainHead, NewDigest | None, list[object]]] = []

        def build(head: ChainHead, digest: NewDigest | None) -> CommitBatch:
            batch, head, digest, results = self._chain(items, head, digest)
            # Kept for after COMMIT; a retried build (never today) would replace it.
            built[:] = [(head, digest, results)]
            return batch

        started = time.perf_counter()
        try:
            if self._shared_chain:
                # Several workers append to one chain: chain onto the head stored in the
                # database, read under SQLite's write lock (audit_database.py).
                connection.commit_on_chain(build)
            else:
                connection.commit(build(self._head, self._last_digest))
        except _SealFailed as failure:
            self._settle_many(items, error=AuditUnavailable(f"sealing failed: {failure.cause}"))
            return False
        except Exception as error:
            self._observer.write_failed()
            self._settle_many(items, error=AuditUnavailable(f"the audit store failed: {error}"))
            return False
        finished = time.perf_counter()
        head, digest, results = built[0]
        self._head = head
        self._last_digest = digest
        self._observer.batch_committed(len(items), finished - started)
        for item in items:
            if item.event is not None:
                self._observer.record_durable(finished - item.enqueued)
        self._settle(lambda: _resolve_all(items, results))
        return True

    def _chain(
        self, items: list[_Item], head: ChainHead, digest: NewDigest | None
    ) -> tuple[CommitBatch, ChainHead, NewDigest | None, list[object]]:
        """The batch for ``items`` chained onto ``head``; the new head, digest, results."""
        batch = CommitBatch(head=head)
        results: list[object] = []
        tally = UsageTally()
        for item in items:
            result: object = None
            if item.intent is not None:
                batch.intents_put.append(item.intent)
            if item.event is not None:
                seq = head.seq + 1
                digest_value = record_hash(seq, head.hash, item.event.body)
                batch.records.append(NewRecord(seq, head.hash, digest_value, item.event))
                head = ChainHead(seq, digest_value)
                tally.add(item.event.index)
                result = seq
            if item.intent_done is not None:
                batch.intents_done.append(item.intent_done)
            if item.prune_anchor is not None:
                batch.prune_anchor = item.prune_anchor
            if item.seal is not None:
                try:
                    sealed = item.seal(head, digest)
                except Exception as error:
                    raise _SealFailed(error) from error
                if sealed is not None:
                    batch.digest = sealed
                    digest = sealed
                result = sealed
            results.append(result)
        batch.head = head
        batch.usage = tally.increments()
        batch.last_uses.extend(tally.last_uses)
        return batch, head, digest, results

    # ---- handing results back to the loop --------------------------------------------------

    def _settle(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    def _settle_one(
        self, item: _Item, *, result: object = None, error: BaseException | None = None
    ) -> None:
        if error is not None:
            self._settle_many([item], error=error)
        else:
            self._settle(lambda: _resolve_all([item], [result]))

    def _settle_many(self, items: list[_Item], *, error: BaseException) -> None:
        def fail() -> None:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error)
                    # Nobody may await it any more (an orphan's record, a caller gone):
                    # marking the error seen keeps asyncio from logging it as "never
                    # retrieved"; an awaiting caller still gets it. Done here, not by a
                    # done-callback on every future, which cost one more loop callback
                    # per record on the success path.
                    item.future.exception()

        self._settle(fail)

    def _fail_everything(self, error: BaseException) -> None:
        with self._ready:
            self._closing = True
            pending = list(self._queue)
            self._queue.clear()
        self._settle_many(pending, error=AuditUnavailable(f"the audit writer stopped: {error}"))

    def _finish_stopped(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)


class _SealFailed(Exception):
    """Building a digest failed: the batch is not written."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _resolve_all(items: list[_Item], results: list[object]) -> None:
    for item, result in zip(items, results, strict=True):
        if not item.future.done():
            item.future.set_result(result)
