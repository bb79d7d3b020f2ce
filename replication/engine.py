"""The replication engine: the node's I/O around the sans-IO core.

Outbound, one task per peer drives a ``PeerShipper``: it reads the outbox, builds signed
batches with material wrapped to the peer, sends them through the ``PeerTransport`` and
feeds the answers back. Inbound, ``handle_hello`` and ``handle_push`` verify what a peer
sent and apply it in *one* storage transaction per batch: every record's decision
(``core.apply.apply_record``), the key rows and versions it implies, this region's own
records it causes, and the new inbound position.

Clock, randomness and transport are injected, so the same engine runs in-process over the
in-memory transport in tests and over mTLS gRPC in a node.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.replication.codec import (
    BatchError,
    OpenedBatch,
    OutgoingEntry,
    open_batch,
    seal_batch,
)
from meridian.replication.core.receiver import (
    InboundPosition,
    applied_seq,
)
from meridian.replication.core.shipper import (
    ConnectionState,
    Hello,
    Idle,
    PeerShipper,
    SendEntries,
    SendSnapshot,
    ShipperLimits,
    prune_through,
    wants_material,
)
from meridian.replication.identity import (
    IdentityError,
    LazyIdentity,
    NodeIdentity,
    PublicIdentity,
    verify_identity,
)
from meridian.replication.inbound import BatchApplier
from meridian.replication.status import EngineStatus, PeerStatus
from meridian.replication.status import status_snapshot as build_status
from meridian.replication.transport import PeerTransport, TransportError, TransportFactory
from meridian.replication.wire import StoredRecord, stored_record_to_proto
from meridian.server.config import PeerConfig
from meridian.server.domain import identifiers
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto.peer_wrap import PeerPublicKey
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.errors import (
    AccessDeniedException,
    DependencyTimeoutException,
    KMSInvalidStateException,
    ValidationException,
)
from meridian.server.domain.multi_region import (
    ABSENT,
    Record,
    SharedState,
)
from meridian.server.domain.multi_region_codec import encode_record
from meridian.server.domain.multi_region_service import MultiRegionService
from meridian.server.domain.service import material_aad
from meridian.server.storage.replication_repository import (
    SqliteReplicationRepository,
    SqliteReplicationWriter,
)
from meridian.server.storage.repository import SqliteWriter, to_us
from meridian.server.storage.store import SqliteStore

log = structlog.get_logger("meridian.replication")

LOG_ID_BYTES = 16
ACK_PERSIST_INTERVAL_S = 1.0
T = TypeVar("T")
Synchronized = Callable[[str, dict[str, str | int | bool]], Awaitable[None]]
# A batch stops growing once its records and materials pass this many bytes (at least one
# entry is always sent): half the 1 MiB a node accepts per message (server/node.py), which
# leaves room for the signature, the bundle header and the framing. One record is at most
# ~150 KiB (1,000 versions), so one always fits.
BATCH_BYTES_MAX = 512 * 1024
# Audit events of one applied batch handed to the trail at once: a bound well below the
# trail's queue (20,000 records by default), so a large batch never fills it alone.
AUDIT_EVENTS_IN_FLIGHT_MAX = 1024
# Applied batches whose audit events are still being recorded (back-pressure beyond).
REPORTS_IN_FLIGHT_MAX = 4


@dataclass(frozen=True, slots=True)
class EngineSettings:
    limits: ShipperLimits = field(default_factory=ShipperLimits)
    rpc_timeout_s: float = 10.0
    # How long ReplicateKey waits for the replica's region to acknowledge its record (a
    # bound on the call's latency, in real time: it never changes what is replicated).
    replicate_wait_s: float = 5.0
    # The outbox keeps at most this many entries for a peer that does not acknowledge;
    # a peer further behind is brought up to date with a snapshot.
    retained_entries_max: int = 100_000
    # How often an idle shipper looks at the outbox even without being woken (a safety
    # net: every append wakes the shippers).
    idle_poll_s: float = 5.0


@dataclass
class PeerLink:
    config: PeerConfig
    shipper: PeerShipper
    transport: PeerTransport
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Replaced (after being set) whenever the peer's acknowledged position moves.
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    entries_shipped: int = 0
    # The log head when the shipper last looked, and when the peer's position was last
    # written down (the receiver's own position is the authoritative one).
    head_seq_seen: int = 0
    ack_persisted_at_s: float = float("-inf")
    # The peer's latest acknowledged position not yet written down (None: written).
    ack_unpersisted: int | None = None
    # The next batch, being built while the peer applies the one in flight: the seq it
    # starts at, and the task building it (engine ``_send_entries``).
    prepared: tuple[int, asyncio.Future[_BuiltBatch | None]] | None = None
    # How many batches built ahead were sent, and how many were dropped (a gap, a
    # failure): for tests and profiling.
    prepared_sent: int = 0
    prepared_dropped: int = 0

    def acknowledged(self) -> None:
        self.progress.set()
        self.progress = asyncio.Event()


class ReplicationEngine:
    def __init__(
        self,
        *,
        region: str,
        account_id: str,
        store: SqliteStore,
        root_key: RootKeyProvider,
        identity: LazyIdentity,
        multi_region: MultiRegionService,
        peers: Sequence[PeerConfig],
        transport_factory: TransportFactory,
        clock: Clock,
        randbytes: Callable[[int], bytes] = os.urandom,
        settings: EngineSettings | None = None,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self._store = store
        self._root_key = root_key
        self.identity = identity
        self._multi_region = multi_region
        self._clock = clock
        self._randbytes = randbytes
        self.settings = settings or EngineSettings()
        self._reader = SqliteReplicationRepository(store.reader.connection)
        # Jitter needs no secrecy, only independence between nodes and runs.
        self._rng = random.Random(randbytes(16))  # noqa: S311
        self.links = {
            peer.region: PeerLink(
                config=peer,
                shipper=PeerShipper(peer.region, self.settings.limits, self._rng),
                transport=transport_factory(peer),
            )
            for peer in peers
        }
        self._identity_message: pb.NodeIdentity | None = None
        self._applier = BatchApplier(
            region=region, account_id=account_id, root_key=root_key, multi_region=multi_region
        )
        self.log_id = b""
        self._tasks: list[asyncio.Task[None]] = []
        self._transactions: set[asyncio.Task[object]] = set()
        self._reports: set[asyncio.Future[None]] = set()
        # Called after a batch commits, once per key it changed here: the audit trail's
        # SynchronizeMultiRegionKey service event (as CloudTrail records MRK syncs).
        self.on_synchronized: Synchronized | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        log_id = self._randbytes(LOG_ID_BYTES)
        bounds = await self._transaction(
            lambda tx: SqliteReplicationWriter(tx.connection).ensure_log(log_id)
        )
        self.log_id = bounds.log_id
        for link in self.links.values():
            self._tasks.append(
                asyncio.create_task(self._ship_forever(link), name=f"ship-{link.config.region}")
            )
        log.info("replication started", peers=sorted(self.links), log_id=self.log_id.hex())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        prepared = [link.prepared[1] for link in self.links.values() if link.prepared]
        for link in self.links.values():
            self._drop_prepared(link)
        await asyncio.gather(*prepared, return_exceptions=True)
        # Transactions whose callers were cancelled still finish before the store closes,
        # and so do the audit events of applied batches.
        await asyncio.gather(*self._transactions, return_exceptions=True)
        await asyncio.gather(*self._reports, return_exceptions=True)
        for link in self.links.values():
            await link.transport.close()

    def wake(self) -> None:
        """Something was appended: every shipper looks at the outbox again."""
        for link in self.links.values():
            link.wakeup.set()

    async def wait_acknowledged(self, peer: str, seq: int) -> bool:
        """Wait until ``peer`` acknowledged this log up to ``seq``, at most
        ``replicate_wait_s``, and only while the link to it is healthy; True if it did."""
        link = self.links.get(peer)
        if link is None or link.shipper.state is not ConnectionState.CONNECTED:
            # An unreachable region would only make the caller wait for nothing.
            return False
        deadline = asyncio.get_running_loop().time() + self.settings.replicate_wait_s
        while link.shipper.position is None or link.shipper.position < seq:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(link.progress.wait(), remaining)
            except TimeoutError:
                return False
        return True

    # ---- outbound -------------------------------------------------------------------------

    async def _ship_forever(self, link: PeerLink) -> None:
        while True:
            try:
                await self._ship_once(link)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not a network problem: log it and back off rather than spin.
                log.exception("shipper crashed; backing off", peer=link.config.region)
                link.shipper.on_failure(self._now_s(), "internal error (see the node log)")

    async def _ship_once(self, link: PeerLink) -> None:
        shipper = link.shipper
        woken = link.wakeup.is_set()
        link.wakeup.clear()
        # The committed log, read without the write lock: the lock is queued behind every
        # write of the region, and waiting there was most of a busy region's lag.
        bounds = await self._reader.log_bounds()
        assert bounds is not None
        now = self._now_s()
        action = shipper.next_action(
            now, retained_first_seq=bounds.first_retained_seq, head_seq=bounds.head_seq
        )
        if isinstance(action, Idle) and woken and action.until is None:
            # Woken, yet nothing new: the append that woke us may still be committing (the
            # hook runs inside its transaction). Read again behind the write lock, which
            # that transaction holds, so that it is never missed. (An Idle answer changed
            # nothing in the shipper, so asking again is safe.)
            bounds = await self._transaction(
                lambda tx: SqliteReplicationWriter(tx.connection).log_bounds()
            )
            assert bounds is not None
            now = self._now_s()
            action = shipper.next_action(
                now, retained_first_seq=bounds.first_retained_seq, head_seq=bounds.head_seq
            )
        link.head_seq_seen = bounds.head_seq
        if isinstance(action, Idle):
            if link.ack_unpersisted is not None:
                # Nothing to ship: write the peer's position down now, off the path of
                # any batch (an append meanwhile sets ``wakeup``, seen below).
                await self._persist_ack(link)
            delay = self.settings.idle_poll_s
            if action.until is not None:
                delay = min(delay, max(0.0, action.until - now))
            await self._wait(link.wakeup, delay)
            return
        peer = link.config.region
        try:
            if isinstance(action, Hello):
                await self._hello(link)
            elif isinstance(action, SendEntries):
                await self._send_entries(link, action)
            else:
                await self._send_snapshot(link, action)
        except (TransportError, IdentityError, BatchError) as error:
            reason = getattr(error, "reason", "")
            message = f"{reason}: {error}" if reason else str(error)
            if shipper.failures == 0:
                log.warning("replication to peer failed", peer=peer, error=message)
            shipper.on_failure(self._now_s(), message)

    async def _hello(self, link: PeerLink) -> None:
        peer = link.config.region
        response = await link.transport.hello(
            pb.HelloRequest(identity=await self._own_identity(), log_id=self.log_id),
            timeout_s=self.settings.rpc_timeout_s,
        )
        identity = verify_identity(response.identity)
        if identity.region != peer:
            raise IdentityError(
                f"the node at {link.config.endpoint} claims region {identity.region}"
            )
        await self._pin(identity)
        link.shipper.on_position(self._now_s(), int(response.applied_seq))
        link.acknowledged()
        log.info("peer connected", peer=peer, acknowledged=int(response.applied_seq))

    async def _send_entries(self, link: PeerLink, action: SendEntries) -> None:
        """Ship the batch from ``action.first_seq``; while the peer applies it, build the
        next one.

        Building a batch (reading, converting, sealing, signing) and applying it take
        about as long, and with one batch at a time the two nodes took turns. The next
        batch is now built while the peer applies this one (``link.prepared``), and sent
        once this one is acknowledged: still one Push in flight, so the peer applies in
        order and every acknowledgement is its durable position, as before. A prepared
        batch is used only if it starts right after the position the peer acknowledged;
        otherwise (a gap, a failure, a restart) it is dropped.
        """
        prepared = self._take_prepared(link, action.first_seq)
        try:
            built = await prepared if prepared is not None else None
        except asyncio.CancelledError:
            raise
        except Exception:
            # Built ahead on an older look at the log; build it again now.
            built = None
        if built is None:
            peer = await self._pinned(link.config.region)
            built = await self._build_entries(peer, action.first_seq, action.last_seq)
        if built is None:
            # Pruned meanwhile: the shipper will see the new tail and snapshot.
            link.shipper.on_failure(self._now_s(), "outbox entries pruned; resynchronising")
            return
        next_first = built.last_seq + 1
        if next_first <= link.head_seq_seen:
            next_last = min(
                link.head_seq_seen, built.last_seq + self.settings.limits.batch_entries_max
            )
            task = asyncio.ensure_future(self._prepare_entries(link, next_first, next_last))
            # A batch dropped after its build failed: its error is not news (it is built
            # again, and fails again, in the path that reports it).
            task.add_done_callback(_retrieve_error)
            link.prepared = (next_first, task)
        try:
            response = await link.transport.push(
                built.request, timeout_s=self.settings.rpc_timeout_s
            )
        except BaseException:
            self._drop_prepared(link)
            raise
        position = int(response.applied_seq)
        link.shipper.on_position(self._now_s(), position)
        # Waiters (ReplicateKey) learn of the acknowledgement before it is written down.
        link.acknowledged()
        if response.outcome == pb.PushResponse.GAP or position != built.last_seq:
            self._drop_prepared(link)
        if response.outcome != pb.PushResponse.GAP:
            link.entries_shipped += built.entries
            await self._acknowledged(link, position)

    async def _prepare_entries(
        self, link: PeerLink, first_seq: int, last_seq: int
    ) -> _BuiltBatch | None:
        peer = await self._pinned(link.config.region)
        return await self._build_entries(peer, first_seq, last_seq)

    def _take_prepared(
        self, link: PeerLink, first_seq: int
    ) -> asyncio.Future[_BuiltBatch | None] | None:
        """The batch built ahead, if it starts at ``first_seq`` (else it is dropped)."""
        prepared = link.prepared
        link.prepared = None
        if prepared is None:
            return None
        if prepared[0] != first_seq:
            prepared[1].cancel()
            link.prepared_dropped += 1
            return None
        link.prepared_sent += 1
        return prepared[1]

    def _drop_prepared(self, link: PeerLink) -> None:
        if link.prepared is not None:
            link.prepared[1].cancel()
            link.prepared = None
            link.prepared_dropped += 1

    async def _build_entries(
        self, peer: PublicIdentity, first_seq: int, last_seq: int
    ) -> _BuiltBatch | None:
        """The signed batch of the outbox from ``first_seq`` (up to ``last_seq``, ~512 KiB),
        or None if ``first_seq`` was pruned."""
        rows = await self._reader.outbox(first_seq, last_seq)
        if not rows or rows[0].seq != first_seq:
            return None
        # Records are chosen up to ~BATCH_BYTES_MAX, then cut again once their materials
        # are known (each adds its bytes and ~64 of framing): at least one entry always.
        # They go from their stored JSON straight to messages (the receiver checks them).
        chosen: list[tuple[int, StoredRecord, int]] = []
        size = 0
        for row in rows:
            chosen.append((row.seq, stored_record_to_proto(row.record), len(row.record)))
            size += len(row.record)
            if size >= BATCH_BYTES_MAX:
                break
        materials = await self._materials_for_all(
            peer.region,
            [
                _Wants(
                    key_id=stored.key_id,
                    material_ids=stored.material_ids,
                    named=peer.region in stored.live_members,
                )
                for _, stored, _ in chosen
            ],
        )
        entries: list[OutgoingEntry] = []
        size = 0
        for (seq, stored, record_bytes), found in zip(chosen, materials, strict=True):
            if entries and size >= BATCH_BYTES_MAX:
                break
            entries.append(OutgoingEntry(seq=seq, record=stored.message, materials=found))
            size += record_bytes + sum(len(m) + 64 for m in found.values())
        request = seal_batch(
            await self.identity.get(),
            peer,
            log_id=self.log_id,
            created_at_us=self._now_us(),
            entries=entries,
            randbytes=self._randbytes,
        )
        return _BuiltBatch(request=request, entries=len(entries), last_seq=entries[-1].seq)

    async def _send_snapshot(self, link: PeerLink, action: SendSnapshot) -> None:
        peer = await self._pinned(link.config.region)
        limit = self.settings.limits.snapshot_keys_max
        states = await self._reader.states_after(action.after_key_id, limit=limit + 1)
        chunk: list[SharedState] = []
        records: list[Record] = []
        size = 0
        keys = await self._reader.keys_of(state.key_id for state, _meta in states[:limit])
        sizes: list[int] = []
        for state, _meta in states[:limit]:
            key = keys.get(state.key_id)
            record = Record(
                author_region=self.region,
                author_key_state=key.state.value if key is not None else ABSENT,
                state=state,
            )
            records.append(record)
            chunk.append(state)
            sizes.append(len(encode_record(record)))
            size += sizes[-1]
            if size >= BATCH_BYTES_MAX:
                break
        materials = await self._materials_for_all(
            peer.region, [_wants_of_state(peer.region, state) for state in chunk]
        )
        entries: list[OutgoingEntry] = []
        size = 0
        for record, record_bytes, found in zip(records, sizes, materials, strict=True):
            if entries and size >= BATCH_BYTES_MAX:
                break
            entries.append(OutgoingEntry(seq=0, record=record, materials=found))
            size += record_bytes + sum(len(m) + 64 for m in found.values())
        # The chunk ends where the entries end (the next chunk starts after its last key).
        del chunk[len(entries) :]
        last = len(chunk) == len(states)
        request = seal_batch(
            await self.identity.get(),
            peer,
            log_id=self.log_id,
            created_at_us=self._now_us(),
            entries=entries,
            snapshot=(action.through_seq, last),
            randbytes=self._randbytes,
        )
        log.info(
            "sending a snapshot chunk",
            peer=peer.region,
            keys=len(entries),
            through=action.through_seq,
        )
        response = await link.transport.push(request, timeout_s=self.settings.rpc_timeout_s)
        position = int(response.applied_seq)
        link.shipper.on_snapshot_chunk(
            self._now_s(),
            next_after_key_id=None if last else chunk[-1].key_id,
            position=position,
        )
        link.acknowledged()
        if last:
            await self._acknowledged(link, position)

    async def _materials_for_all(
        self, destination: str, wants: Sequence[_Wants]
    ) -> list[dict[bytes, bytes]]:
        """Per record: the materials of the versions its view names, unwrapped for sealing
        to ``destination`` — if it is a live member by the record or by the current view.

        Whether the current view names it is asked of the keys whose record does not, in
        one statement answered by SQLite's JSON functions; the stored versions of every key
        involved are read in one bulk statement for the whole batch (not per record), and
        each material is unwrapped once per batch however many records name it.
        """
        undecided = {want.key_id for want in wants if not want.named}
        current = (
            await self._reader.keys_with_live_member(undecided, destination) if undecided else set()
        )
        wanted = [want.named or want.key_id in current for want in wants]
        stored = await self._reader.wrapped_materials_of(
            {want.key_id for want, yes in zip(wants, wanted, strict=True) if yes}
        )
        unwrapped: dict[tuple[str, bytes], bytes] = {}
        result: list[dict[bytes, bytes]] = []
        for want, yes in zip(wants, wanted, strict=True):
            materials: dict[bytes, bytes] = {}
            if yes:
                for material_id, wrapped in stored.get(want.key_id, ()):
                    if material_id not in want.material_ids:
                        continue
                    cache_key = (want.key_id, material_id)
                    if cache_key not in unwrapped:
                        unwrapped[cache_key] = await self._root_key.unwrap(
                            wrapped, aad=material_aad(want.key_id, material_id)
                        )
                    materials[material_id] = unwrapped[cache_key]
            result.append(materials)
        return result

    async def _acknowledged(self, link: PeerLink, position: int) -> None:
        """Note a peer's acknowledged position; write it down at most once per
        ``ACK_PERSIST_INTERVAL_S``, and otherwise when the shipper next goes idle.

        Each write is a durable transaction, and this copy only serves pruning and status
        (a shipper resumes from the receiver's own position, and status shows the newer
        of the two): it need not be in the path of every batch. Under a steady load of
        small batches that path is the replication lag.
        """
        link.ack_unpersisted = position
        if self._now_s() - link.ack_persisted_at_s >= ACK_PERSIST_INTERVAL_S:
            await self._persist_ack(link)

    async def _persist_ack(self, link: PeerLink) -> None:
        """Write down a peer's position and prune what every peer has acknowledged."""
        position = link.ack_unpersisted
        if position is None:
            return
        link.ack_unpersisted = None
        link.ack_persisted_at_s = self._now_s()
        peer = link.config.region
        now_us = self._now_us()

        async def work(tx: SqliteWriter) -> None:
            writer = SqliteReplicationWriter(tx.connection)
            await writer.record_ack(peer, self.log_id, position, now_us=now_us)
            bounds = await writer.log_bounds()
            assert bounds is not None
            acked = []
            for region in self.links:
                row = await writer.peer(region)
                acked.append(row.acked_seq if row and row.acked_log_id == self.log_id else 0)
            through = prune_through(
                acked,
                head_seq=bounds.head_seq,
                retained_entries_max=self.settings.retained_entries_max,
            )
            if through >= bounds.first_retained_seq:
                await writer.prune_outbox(through)

        await self._transaction(work)

    async def _pin(self, identity: PublicIdentity) -> None:
        """Pin a peer's identity on first contact; refuse a changed one."""
        await self._transaction(lambda tx: self._pin_in(tx, identity))

    async def _pin_in(self, tx: SqliteWriter, identity: PublicIdentity) -> None:
        writer = SqliteReplicationWriter(tx.connection)
        row = await writer.peer(identity.region)
        if row is None or row.signing_public_key is None:
            await writer.pin_peer(
                identity.region,
                signing=identity.signing_public_key,
                x25519=identity.wrap_key.x25519,
                mlkem=identity.wrap_key.mlkem,
                now_us=self._now_us(),
            )
            log.info(
                "pinned a peer's node identity",
                peer=identity.region,
                fingerprint=identity.fingerprint[:16],
            )
            return
        if (
            row.signing_public_key != identity.signing_public_key
            or row.wrap_x25519_public_key != identity.wrap_key.x25519
            or row.wrap_mlkem_public_key != identity.wrap_key.mlkem
        ):
            log.error(
                "a peer presents another node identity than the pinned one; refusing it",
                peer=identity.region,
                presented=identity.fingerprint[:16],
            )
            raise IdentityError(
                f"{identity.region} presents a node identity other than the pinned one"
            )

    async def _pinned(self, region: str) -> PublicIdentity:
        row = await self._reader.peer(region)
        if (
            row is None
            or row.signing_public_key is None
            or row.wrap_x25519_public_key is None
            or row.wrap_mlkem_public_key is None
        ):
            raise IdentityError(f"no pinned identity for {region}")
        return PublicIdentity(
            region=region,
            signing_public_key=row.signing_public_key,
            wrap_key=PeerPublicKey(
                x25519=row.wrap_x25519_public_key, mlkem=row.wrap_mlkem_public_key
            ),
        )

    async def _own_identity(self) -> pb.NodeIdentity:
        """This node's signed identity message (signing costs ~1 ms: made once)."""
        if self._identity_message is None:
            self._identity_message = (await self._own_identity_keys()).to_proto()
        return self._identity_message

    async def _own_identity_keys(self) -> NodeIdentity:
        try:
            return await self.identity.get()
        except IdentityError as error:
            log.error("the replication identity is unavailable", error=str(error))
            raise

    async def _serving_identity(self) -> NodeIdentity:
        """For inbound calls: an unavailable identity is the node's problem, not the caller's."""
        try:
            return await self._own_identity_keys()
        except IdentityError:
            raise DependencyTimeoutException(
                "This node's replication identity is unavailable (see its log)"
            ) from None

    async def _fingerprint(self) -> str:
        try:
            return (await self.identity.get()).public.fingerprint
        except IdentityError:
            return ""

    async def _transaction(self, work: Callable[[SqliteWriter], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction that a cancellation cannot cut short.

        aiosqlite runs SQL on its own thread: a task cancelled while it awaits BEGIN or
        COMMIT leaves the statement to run anyway, with nobody left to end the transaction,
        and the database stays locked (STYLE.md 12). Shielded, the transaction always ends
        (commit, or rollback on error); a cancelled caller just stops waiting for it, and
        ``stop`` waits for it before the store closes.
        """

        async def run() -> T:
            async with self._store.write() as tx:
                return await work(tx)

        task: asyncio.Task[T] = asyncio.ensure_future(run())
        self._transactions.add(task)
        task.add_done_callback(self._transaction_done)
        return await asyncio.shield(task)

    def _transaction_done(self, task: asyncio.Task[object]) -> None:
        self._transactions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Also raised to the caller if it still waits; this covers one that was cancelled.
            log.debug("a replication transaction failed", error=repr(task.exception()))

    async def _wait(self, event: asyncio.Event, delay_s: float) -> None:
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(delay_s))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    # ---- inbound --------------------------------------------------------------------------

    async def handle_hello(self, caller_region: str, request: pb.HelloRequest) -> pb.HelloResponse:
        try:
            identity = verify_identity(request.identity)
        except IdentityError:
            log.warning("refused a Hello: bad node identity", caller=caller_region)
            raise ValidationException("The node identity does not verify") from None
        if identity.region != caller_region:
            log.warning("refused a Hello: identity of another region", caller=caller_region)
            raise AccessDeniedException(
                f"{caller_region} cannot present the identity of {identity.region}"
            )
        if len(request.log_id) != LOG_ID_BYTES:
            raise ValidationException("log_id must be 16 bytes")
        try:
            await self._pin(identity)
        except IdentityError:
            raise AccessDeniedException(
                f"{caller_region} presents a node identity other than the pinned one"
            ) from None
        inbound = await self._reader.inbound(caller_region)
        position = None if inbound is None else InboundPosition(inbound.log_id, inbound.applied_seq)
        await self._serving_identity()
        return pb.HelloResponse(
            identity=await self._own_identity(),
            applied_seq=applied_seq(position, bytes(request.log_id)),
        )

    async def handle_push(self, caller_region: str, request: pb.PushRequest) -> pb.PushResponse:
        try:
            sender = await self._pinned(caller_region)
        except IdentityError:
            raise KMSInvalidStateException(
                f"No pinned node identity for {caller_region}: call Hello first"
            ) from None
        receiver = await self._serving_identity()
        try:
            batch = open_batch(request, sender=sender, receiver=receiver)
        except BatchError as error:
            log.warning("refused a replication batch", peer=caller_region, reason=str(error))
            raise ValidationException(f"Refused replication batch: {error}") from None
        return await self._apply_batch(batch)

    async def _apply_batch(self, batch: OpenedBatch) -> pb.PushResponse:
        now = self._clock.now()
        result = await self._transaction(lambda tx: self._applier.apply(tx, batch, now))
        if result.emitted:
            self.wake()
        if result.changed and self.on_synchronized is not None:
            # The audit events of a committed batch need not delay the sender's next batch
            # (their durability is an fsync of the audit database): they are recorded in
            # the background, at most REPORTS_IN_FLIGHT_MAX batches behind, and ``stop``
            # waits for them. A node killed meanwhile loses those events, as it could
            # before between the commit and the events (the change itself is committed).
            while len(self._reports) >= REPORTS_IN_FLIGHT_MAX:
                await asyncio.wait(set(self._reports), return_when=asyncio.FIRST_COMPLETED)
            report = asyncio.ensure_future(
                self._report_synchronized(batch.origin_region, result.changed)
            )
            self._reports.add(report)
            report.add_done_callback(self._reports.discard)
        return result.response

    async def _report_synchronized(self, origin: str, changed: dict[str, SharedState]) -> None:
        """One audit event per key the batch changed, recorded together.

        The events are handed to the audit trail all at once (in key order, each appended
        before its first await) rather than one after another: the trail's group commit then
        makes them durable in a few commits instead of one per key, which was most of a
        catch-up batch's time.
        """
        if self.on_synchronized is None:
            return
        report = self.on_synchronized
        items = list(changed.items())
        for start in range(0, len(items), AUDIT_EVENTS_IN_FLIGHT_MAX):
            chunk = items[start : start + AUDIT_EVENTS_IN_FLIGHT_MAX]
            results = await asyncio.gather(
                *(
                    report(
                        identifiers.key_arn(self.region, self.account_id, key_id),
                        {
                            "sourceRegion": origin,
                            "primaryRegion": state.primary_region,
                            "epoch": state.epoch,
                        },
                    )
                    for key_id, state in chunk
                ),
                return_exceptions=True,
            )
            for (key_id, _state), result in zip(chunk, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    # The change is committed; a missing audit event is logged, not undone.
                    log.error(
                        "could not record a replication event",
                        key_id=key_id,
                        exc_info=result,
                    )

    # ---- status ----------------------------------------------------------------------------

    @property
    def entries_applied(self) -> int:
        return self._applier.entries_applied

    async def status_snapshot(self) -> EngineStatus:
        return await build_status(
            region=self.region,
            log_id=self.log_id,
            fingerprint=await self._fingerprint(),
            reader=self._reader,
            links={name: (link.config, link.shipper) for name, link in self.links.items()},
            now_s=self._now_s(),
        )

    async def key_epoch(self, key_id: str) -> int:
        found = await self._reader.get_state(key_id)
        return 0 if found is None else found[0].epoch

    # ---- time -----------------------------------------------------------------------------

    def _now_s(self) -> float:
        return self._clock.now().timestamp()

    def _now_us(self) -> int:
        return to_us(self._clock.now())


def _retrieve_error(task: asyncio.Future[_BuiltBatch | None]) -> None:
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True, slots=True)
class _BuiltBatch:
    request: pb.PushRequest
    entries: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class _Wants:
    """What choosing a record's materials needs: its key, the versions its view names,
    and whether that view names the destination as a live member."""

    key_id: str
    material_ids: frozenset[bytes]
    named: bool


def _wants_of_state(destination: str, state: SharedState) -> _Wants:
    return _Wants(
        key_id=state.key_id,
        material_ids=frozenset(state.versions),
        named=wants_material(destination, state),
    )


__all__ = ["EngineSettings", "EngineStatus", "PeerStatus", "ReplicationEngine"]
