"""The region's audit trail: records, intents, sealing, recovery and pruning.

:class:`AuditTrail` is what the rest of the node talks to. The API hook calls
:meth:`open_intent` and :meth:`record`; subsystems use the
:class:`~meridian.server.audit.sink.AuditSink` methods; a maintenance loop seals
digests, recovers orphaned intents and prunes. Every write goes through one
:class:`~meridian.server.audit.writer.GroupCommitWriter`, which owns the chain.

With several worker processes (server/workers.py) every worker has its own trail and
writer on the one chain (``shared_chain``): each commit chains onto the head stored in
the database under SQLite's write lock, so the chain stays one sequence in commit
order and verifies as before. Only the ``sealer`` (worker 0, started before the
others) recovers every orphaned intent at start, seals periodically and prunes; the
other workers recover only their own orphans (another worker's intent may belong to
a call still running there).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from meridian.server.audit.chain import ChainHead, genesis_hash
from meridian.server.audit.digests import (
    ZERO_HASH,
    SignedDigest,
    digest_hash,
    new_digest_content,
)
from meridian.server.audit.events import (
    AuditEvent,
    AuditFormatError,
    ServiceEvent,
    ServiceEventName,
    parse_document,
    service_event_document,
    to_us,
    unknown_outcome_document,
)
from meridian.server.audit.ports import (
    AuditStorage,
    Intent,
    NewDigest,
    RecordQuery,
    SigningKeyRow,
    TrailState,
)
from meridian.server.audit.settings import AuditSettings
from meridian.server.audit.sink import AuditUnavailable, ServiceAction
from meridian.server.audit.writer import AuditObserver, GroupCommitWriter
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto import audit_signing
from meridian.server.domain.crypto.rootkey import RootKeyProvider

log = structlog.get_logger("meridian.audit")

# Calls made by the trail's own machinery: they are recorded like every call, but do
# not by themselves make a new digest worth sealing (or two idle regions would keep
# sealing digests about each other's digest pushes forever).
QUIET_OPERATIONS = frozenset({"PushAuditDigests"})
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH_ROWS_MAX = 5000


def signing_key_aad(key_id: str) -> bytes:
    """Binds a wrapped audit key to its id, as key material is bound to its key."""
    return b"meridian/audit-signing-key/v1\x00" + key_id.encode("ascii")


@dataclass(frozen=True, slots=True)
class TrailInfo:
    region: str
    chain_id: str
    tracking_start_us: int
    head: ChainHead
    pruned_through_seq: int
    pruned_through_hash: bytes
    public_keys: dict[str, bytes]
    signing_key_id: str


class AuditTrail:
    def __init__(
        self,
        *,
        storage: AuditStorage,
        state: TrailState,
        signing_keys: list[SigningKeyRow],
        root_key: RootKeyProvider,
        randbytes: Callable[[int], bytes],
        writer: GroupCommitWriter,
        settings: AuditSettings,
        clock: Clock,
        account_id: str,
        new_id: Callable[[], str],
        shared_chain: bool = False,
        sealer: bool = True,
    ) -> None:
        self.storage = storage
        self._shared_chain = shared_chain
        self._sealer = sealer
        # Intents this process wrote and has not yet replaced or withdrawn (shared chain
        # only): the only ones a worker may turn into "Unknown" records while others run.
        self._own_intents: set[str] = set()
        self._recover_all = not shared_chain
        self._state = state
        # The signing key is unwrapped (or made) on the first seal, not at start: the root
        # key (an HSM, perhaps) is then needed only for sealing, never on the call path.
        self._signer: audit_signing.AuditSigner | None = None
        self._signing_keys = signing_keys
        self._public_keys = {row.key_id: row.public_key for row in signing_keys}
        self._root_key = root_key
        self._randbytes = randbytes
        self._signer_lock = asyncio.Lock()
        self._writer = writer
        self._settings = settings
        self._clock = clock
        self.region = state.region
        self.account_id = account_id
        self._new_id = new_id
        self._timeout_s = settings.write_timeout_ms / 1000
        self._open_intents: set[str] = set()
        self._last_significant_seq = 0
        self._seal_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sealed_listeners: list[Callable[[], None]] = []
        self._last_prune_us: int | None = None

    # ---- opening and closing ---------------------------------------------------------

    @classmethod
    async def open(
        cls,
        *,
        storage: AuditStorage,
        settings: AuditSettings,
        region: str,
        account_id: str,
        clock: Clock,
        root_key: RootKeyProvider,
        randbytes: Callable[[int], bytes],
        observer: AuditObserver | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        shared_chain: bool = False,
        sealer: bool = True,
    ) -> AuditTrail:
        state = await storage.load_state()
        if state is None:
            chain_id = str(uuid.UUID(bytes=randbytes(16), version=4))
            state = await storage.create_state(
                TrailState(
                    chain_id=chain_id,
                    region=region,
                    tracking_start_us=to_us(clock.now()),
                    head=ChainHead(0, genesis_hash(chain_id)),
                    pruned_through_seq=0,
                    pruned_through_hash=genesis_hash(chain_id),
                )
            )
        last_record = await storage.last_record()
        head = state.head
        # With a shared chain another worker may append between the two reads; each
        # commit then chains onto the stored head anyway (audit_database.py).
        if last_record is not None and last_record.seq != head.seq and not shared_chain:
            # The stored head and the last record disagree: records were removed (or
            # added) behind the node's back. Keep numbering after the higher of the two
            # so no number is ever reused; `meridian audit verify` names the damage.
            log.error(
                "audit trail head does not match its last record",
                head_seq=head.seq,
                last_record_seq=last_record.seq,
            )
            if last_record.seq > head.seq:
                head = ChainHead(last_record.seq, last_record.hash)
        writer = GroupCommitWriter(
            storage.open_group_commit,
            head,
            await storage.last_digest(),
            batch_records_max=settings.batch_records_max,
            queue_records_max=settings.queue_records_max,
            observer=observer,
            shared_chain=shared_chain,
        )
        return cls(
            storage=storage,
            state=state,
            signing_keys=await storage.signing_keys(),
            root_key=root_key,
            randbytes=randbytes,
            writer=writer,
            settings=settings,
            clock=clock,
            account_id=account_id,
            new_id=new_id,
            shared_chain=shared_chain,
            sealer=sealer,
        )

    async def start(self) -> None:
        """Start committing; turn intents left by a crash into records; seal."""
        self._writer.start()
        if self._sealer:
            # The sealer starts before any other worker serves: every intent in the
            # store now is left by a crash.
            self._recover_all = True
            recovered = await self._durable(self._writer.recover_intents(self._orphans))
            self._recover_all = not self._shared_chain
            if recovered:
                log.warning("recorded calls whose outcome was lost", records=recovered)
            try:
                await self.seal(force=False)
            except AuditUnavailable as error:
                # Sealing is retried by the maintenance loop; calls are recorded meanwhile.
                log.error("could not seal a digest at start", error=str(error))
        self._tasks.append(asyncio.create_task(self._maintain(), name="audit-maintenance"))

    async def close(self) -> None:
        """Seal what is unsealed, drain the writer, stop. Call after the API stopped."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tasks and self._sealer:
            try:
                await self.seal(force=False)
            except AuditUnavailable as error:
                log.error("could not seal the final digest", error=str(error))
        self._tasks.clear()
        self._writer.close()
        await self._writer.wait_closed()

    def on_sealed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each new digest (the shipper wakes up on it)."""
        self._sealed_listeners.append(listener)

    # ---- what the API hook uses --------------------------------------------------------

    async def open_intent(self, request_id: str, event: AuditEvent) -> None:
        """Durably note that a state-changing call is about to run."""
        intent = Intent(request_id, event.index.event_time_us, event.body)
        self._open_intents.add(request_id)
        if self._shared_chain:
            self._own_intents.add(request_id)
        try:
            await self._durable(self._writer.put_intent(intent))
        except AuditUnavailable:
            self._open_intents.discard(request_id)
            raise

    async def record(self, event: AuditEvent, *, intent_request_id: str | None = None) -> int:
        """Chain one record; returns its seq once it is durable."""
        try:
            seq = await self._durable(self._writer.append(event, intent_done=intent_request_id))
        finally:
            # Either the record replaced the intent, or the intent is now an orphan
            # that the maintenance loop turns into an "Unknown" record.
            if intent_request_id is not None:
                self._open_intents.discard(intent_request_id)
        if intent_request_id is not None:
            self._own_intents.discard(intent_request_id)
        assert isinstance(seq, int)
        if event.index.event_name not in QUIET_OPERATIONS:
            self._last_significant_seq = max(self._last_significant_seq, seq)
        self._maybe_want_seal()
        return seq

    async def record_many(
        self, events: Sequence[tuple[AuditEvent, str | None]]
    ) -> list[int | AuditUnavailable]:
        """``record`` for each ``(event, intent_request_id)`` of a batch call's items,
        queued as one unit and awaited together: one lock, one timer and no task per
        record. Each item gets its seq or the AuditUnavailable that refused it."""
        try:
            futures = self._writer.append_many(events)
        except AuditUnavailable as failure:
            for _, intent_request_id in events:
                if intent_request_id is not None:
                    self._open_intents.discard(intent_request_id)
            return [failure for _ in events]
        expiry = asyncio.get_running_loop().call_later(
            self._timeout_s, _expire_all, futures, self._settings.write_timeout_ms
        )
        try:
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            expiry.cancel()
            for _, intent_request_id in events:
                if intent_request_id is not None:
                    self._open_intents.discard(intent_request_id)
        results: list[int | AuditUnavailable] = []
        for (event, intent_request_id), outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, AuditUnavailable):
                results.append(outcome)
                continue
            if not isinstance(outcome, int):
                raise AssertionError(f"the audit writer answered {outcome!r} for a record")
            if intent_request_id is not None:
                self._own_intents.discard(intent_request_id)
            if event.index.event_name not in QUIET_OPERATIONS:
                self._last_significant_seq = max(self._last_significant_seq, outcome)
            results.append(outcome)
        self._maybe_want_seal()
        return results

    # ---- AuditSink ----------------------------------------------------------------------

    async def record_service_event(self, event: ServiceEvent) -> None:
        await self.record(self._service_event(event, request_id=""))

    @asynccontextmanager
    async def service_action(self, event: ServiceEvent) -> AsyncIterator[ServiceAction]:
        request_id = f"service-{self._new_id()}"
        await self.open_intent(request_id, self._service_event(event, request_id=request_id))
        action = ServiceAction()
        try:
            yield action
        except Exception:
            await self._withdraw(request_id)
            raise
        except BaseException:
            # Cancelled mid-action: it may have taken effect. The intent stays and is
            # recovered as an "Unknown" record.
            self._open_intents.discard(request_id)
            raise
        if action.skipped:
            await self._withdraw(request_id)
            return
        finished = ServiceEvent(
            event.event_name,
            key_arn=event.key_arn,
            key_material_id=action.key_material_id or event.key_material_id,
            details={**event.details, **action.details},
        )
        await self.record(
            self._service_event(finished, request_id=request_id), intent_request_id=request_id
        )

    def _service_event(self, event: ServiceEvent, *, request_id: str) -> AuditEvent:
        document = service_event_document(
            event,
            region=self.region,
            account_id=self.account_id,
            when=self._clock.now(),
            event_id=self._new_id(),
        )
        if request_id:
            document["requestID"] = request_id
        return AuditEvent.from_document(document)

    async def _withdraw(self, request_id: str) -> None:
        try:
            await self._durable(self._writer.withdraw_intent(request_id))
            self._own_intents.discard(request_id)
        except AuditUnavailable as error:
            log.warning("could not withdraw an audit intent", error=str(error))
        finally:
            self._open_intents.discard(request_id)

    # ---- digests ---------------------------------------------------------------------------

    async def seal(self, *, force: bool) -> NewDigest | None:
        """Seal a digest of everything committed so far (if anything is unsealed)."""
        last = self._writer.last_digest
        unsealed = self._writer.head.seq - (last.last_seq if last else 0)
        # With a shared chain this process's view of the head may be behind; the digest
        # builder decides from the head stored in the database instead.
        if not force and not unsealed and not self._writer.queued and not self._shared_chain:
            return None
        try:
            await self._load_signer()
        except Exception as error:
            raise AuditUnavailable(f"the audit signing key is unavailable: {error}") from None
        sealed = await self._durable(
            self._writer.seal(lambda head, last: self._build_digest(head, last, force=force))
        )
        if sealed is not None:
            for listener in self._sealed_listeners:
                listener()
        assert sealed is None or isinstance(sealed, NewDigest)
        return sealed

    def _build_digest(
        self, head: ChainHead, last: NewDigest | None, *, force: bool
    ) -> NewDigest | None:
        previous_last_seq = last.last_seq if last else 0
        if head.seq == previous_last_seq and not force:
            return None
        signer = self._signer
        assert signer is not None, "seal() loads the signer first"
        now = self._clock.now()
        number = last.digest.number + 1 if last else 1
        content = new_digest_content(
            region=self.region,
            chain_id=self._state.chain_id,
            number=number,
            first_seq=previous_last_seq + 1,
            last_seq=head.seq,
            last_hash=head.hash,
            previous_digest_hash=digest_hash(last.digest.body) if last else ZERO_HASH,
            sealed_at=now,
            signing_key_id=signer.key_id,
        )
        body = content.to_body()
        digest = SignedDigest(
            number=number,
            body=body,
            signature=signer.sign(body.encode("utf-8")),
            key_id=signer.key_id,
        )
        return NewDigest(digest=digest, last_seq=head.seq, sealed_at_us=to_us(now))

    def _maybe_want_seal(self) -> None:
        last = self._writer.last_digest
        unsealed = self._writer.head.seq - (last.last_seq if last else 0)
        if unsealed >= self._settings.digest_records_max:
            self._seal_wanted.set()

    # ---- maintenance ---------------------------------------------------------------------

    async def _maintain(self) -> None:
        while True:
            await self._next_tick()
            try:
                await self._durable(self._writer.recover_intents(self._orphans))
                if not self._sealer:
                    continue
                if await self._significant_unsealed():
                    await self.seal(force=False)
                await self._prune_if_due()
            except AuditUnavailable as error:
                log.warning("audit maintenance postponed", error=str(error))
            except Exception:
                log.exception("audit maintenance failed; retrying at the next interval")

    async def _next_tick(self) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(self._settings.digest_interval_s))
        wanted = asyncio.ensure_future(self._seal_wanted.wait())
        try:
            await asyncio.wait({sleeper, wanted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, wanted):
                task.cancel()
            await asyncio.gather(sleeper, wanted, return_exceptions=True)
            self._seal_wanted.clear()

    async def _significant_unsealed(self) -> bool:
        """Whether a record other than the trail's own traffic awaits a digest."""
        last = self._writer.last_digest
        if not self._shared_chain:
            return self._last_significant_seq > (last.last_seq if last else 0)
        # Other workers' records are only in the database.
        last = await self.storage.last_digest()
        query = RecordQuery(after_seq=last.last_seq if last else 0)
        records = await self.storage.records(query)
        return len(records) == query.limit or any(
            record.columns.event_name not in QUIET_OPERATIONS for record in records
        )

    def _orphans(self, intents: list[Intent]) -> list[tuple[AuditEvent, str]]:
        recovered: list[tuple[AuditEvent, str]] = []
        for intent in intents:
            if intent.request_id in self._open_intents:
                continue
            if not self._recover_all and intent.request_id not in self._own_intents:
                continue
            try:
                document = unknown_outcome_document(parse_document(intent.body))
                document["requestID"] = document.get("requestID") or intent.request_id
                recovered.append((AuditEvent.from_document(document), intent.request_id))
            except AuditFormatError as error:
                log.error("unreadable audit intent", request_id=intent.request_id, error=str(error))
        return recovered

    async def _prune_if_due(self) -> None:
        days = self._settings.retention_days
        now_us = to_us(self._clock.now())
        if days <= 0:
            return
        if self._last_prune_us is not None and now_us - self._last_prune_us < PRUNE_EVERY_S * 1e6:
            return
        self._last_prune_us = now_us
        await self.prune(to_us(self._clock.now() - timedelta(days=days)))

    async def prune(self, cutoff_us: int) -> int:
        """Drop records older than ``cutoff_us`` up to the newest digest boundary before it.

        The anchor (the last pruned record's hash, attested by that digest) and a
        ``PruneAuditRecords`` event are committed first, then the rows are deleted in
        bounded batches; the verifier checks the trail from the anchor on.
        """
        boundary = await self.storage.prunable_digest(cutoff_us)
        state = await self.storage.load_state()
        if boundary is None or state is None or boundary.last_seq <= state.pruned_through_seq:
            return 0
        content = boundary.digest.content
        event = ServiceEvent(
            ServiceEventName.PRUNE_AUDIT_RECORDS,
            details={"throughSeq": boundary.last_seq, "digestNumber": content.number},
        )
        await self._durable(
            self._writer.set_prune_anchor(
                (boundary.last_seq, content.last_hash), self._service_event(event, request_id="")
            )
        )
        deleted = 0
        while True:
            count = await self.storage.delete_pruned(
                boundary.last_seq, rows_max=PRUNE_BATCH_ROWS_MAX
            )
            deleted += count
            if count < PRUNE_BATCH_ROWS_MAX:
                break
        log.info("audit records pruned", through_seq=boundary.last_seq, records=deleted)
        return deleted

    # ---- reads -------------------------------------------------------------------------

    async def info(self) -> TrailInfo:
        state = await self.storage.load_state()
        assert state is not None
        if self._shared_chain:
            # Other workers may have appended, or made the signing key.
            await self._refresh_signing_keys()
        return TrailInfo(
            region=state.region,
            chain_id=state.chain_id,
            tracking_start_us=state.tracking_start_us,
            head=state.head if self._shared_chain else self._writer.head,
            pruned_through_seq=state.pruned_through_seq,
            pruned_through_hash=state.pruned_through_hash,
            public_keys=dict(self._public_keys),
            signing_key_id=self.signing_key_id,
        )

    @property
    def signing_key_id(self) -> str:
        """The key that signs the next digest ("" until the first one)."""
        if self._signer is not None:
            return self._signer.key_id
        newest = max(self._signing_keys, key=lambda row: row.created_at_us, default=None)
        return newest.key_id if newest else ""

    async def _load_signer(self) -> None:
        async with self._signer_lock:
            if self._signer is not None:
                return
            if self._shared_chain:
                # Use the key another worker made rather than make a second one.
                await self._refresh_signing_keys()
            signer, row = await _signing_key(
                self._signing_keys, self._root_key, self._clock, self._randbytes
            )
            if row is not None:
                await self.storage.add_signing_key(row)
                self._signing_keys.append(row)
                self._public_keys[row.key_id] = row.public_key
            self._signer = signer

    async def _refresh_signing_keys(self) -> None:
        rows = await self.storage.signing_keys()
        self._signing_keys = rows
        self._public_keys.update({row.key_id: row.public_key for row in rows})

    @property
    def last_digest(self) -> NewDigest | None:
        return self._writer.last_digest

    async def latest_digest(self) -> NewDigest | None:
        """The newest digest; from the database when other workers may have sealed."""
        if self._shared_chain:
            return await self.storage.last_digest()
        return self._writer.last_digest

    @property
    def head(self) -> ChainHead:
        return self._writer.head

    @property
    def public_keys(self) -> dict[str, bytes]:
        return dict(self._public_keys)

    @property
    def tracking_start_us(self) -> int:
        return self._state.tracking_start_us

    @property
    def queued(self) -> int:
        return self._writer.queued

    async def run_on_store(self, function: Callable[[Any], object]) -> object:
        """Run ``function(connection)`` on the writer's SQLite connection between commits
        (operations; the fail-closed tests use it to make the store fail for real)."""
        return await self._durable(self._writer.call(function))

    async def _durable(self, future: asyncio.Future[object]) -> Any:
        # On timeout the future fails; the writer still commits the item (it may already
        # be on disk) and ignores the finished future. A plain timer handle rather than
        # asyncio.timeout(), which costs twice as much on every record's path.
        expiry = asyncio.get_running_loop().call_later(
            self._timeout_s, _expire, future, self._settings.write_timeout_ms
        )
        try:
            return await future
        finally:
            expiry.cancel()


def _expire(future: asyncio.Future[object], timeout_ms: int) -> None:
    if not future.done():
        future.set_exception(
            AuditUnavailable(
                f"the audit record was not durable within {timeout_ms} ms", timed_out=True
            )
        )


def _expire_all(futures: Sequence[asyncio.Future[object]], timeout_ms: int) -> None:
    for future in futures:
        _expire(future, timeout_ms)


async def _signing_key(
    rows: list[SigningKeyRow],
    root_key: RootKeyProvider,
    clock: Clock,
    randbytes: Callable[[int], bytes],
) -> tuple[audit_signing.AuditSigner, SigningKeyRow | None]:
    """The newest stored signing key, or a new one with the row to store for it."""
    if rows:
        newest = max(rows, key=lambda row: row.created_at_us)
        seed = await root_key.unwrap(newest.wrapped_private_key, aad=signing_key_aad(newest.key_id))
        signer = audit_signing.AuditSigner(seed)
        if signer.key_id != newest.key_id:
            raise AuditFormatError("the stored audit signing key does not match its id")
        return signer, None
    signer, seed = audit_signing.AuditSigner.generate(randbytes)
    wrapped = await root_key.wrap(seed, aad=signing_key_aad(signer.key_id))
    return signer, SigningKeyRow(signer.key_id, to_us(clock.now()), signer.public_key, wrapped)
