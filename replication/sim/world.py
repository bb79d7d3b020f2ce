"""The deterministic simulation: seeded regions, network, clocks, faults and clients.

Everything random comes from one ``random.Random(seed)``, and events run in (time,
insertion order), so a seed replays exactly: ``scripts/simulate --seed N --trace``.

A run has two phases. During the *fault phase* clients call operations at random regions
while the network delays, drops, duplicates and reorders messages, links partition and
heal, nodes crash (losing everything but their durable store) and restart, and every
node's clock runs with its own offset and drift. Then everything *heals* — partitions
end, drops stop, crashed nodes restart — and the run continues until the system is
quiescent (every log acknowledged by every peer, nothing in flight). The checks in
``checks.py`` then hold the result against the invariants of DESIGN.md §7.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from meridian.replication.core.shipper import (
    Hello,
    Idle,
    PeerShipper,
    SendEntries,
    SendSnapshot,
    ShipperLimits,
    prune_through,
)
from meridian.replication.sim.node import ApplyError, SimNode
from meridian.replication.sim.operations import Ciphertext, Operations, Stats
from meridian.server.domain.errors import (
    KmsError,
)
from meridian.server.domain.model import (
    KeyState,
)
from meridian.server.domain.multi_region import (
    DeletionVerdict,
    deletion_verdict,
)

REGION_NAMES = ("us-east-1", "eu-west-1", "ap-south-1", "sa-east-1")
ACCOUNT = "000000000000"
RPC_TIMEOUT_S = 1.0
HEAL_TIME_MAX_S = 300.0
# A run needs a few thousand events; far more means messages that never stop.
EVENTS_MAX = 500_000
# The sweeper looks again this often at a key whose deletion must wait.
SWEEP_RETRY_S = 1.0
# Node clocks read seconds since the epoch from 2026-01-01, each with its own skew and drift.
CLOCK_BASE_S = 1_767_225_600.0


@dataclass(frozen=True, slots=True)
class Faults:
    """The fault model of one run, drawn from its seed."""

    drop_p: float
    duplicate_p: float
    delay_min_s: float
    delay_max_s: float
    partitions: int
    crashes: int
    lost_primary_episode: bool
    skew_s_max: float
    drift_max: float


@dataclass
class _Request:
    rid: int
    kind: str
    meta: Any = None


@dataclass(order=True)
class _Event:
    time: float
    order: int
    action: Callable[[], None] = field(compare=False)


class World(Operations):
    def __init__(self, seed: int, *, trace: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        # A seeded generator on purpose: the run must replay exactly from its seed.
        self.rng = random.Random(seed)  # noqa: S311
        self._trace = trace
        rng = self.rng
        self.regions = list(REGION_NAMES[: 3 if rng.random() < 0.75 else 4])
        self.faults = Faults(
            drop_p=rng.choice((0.0, 0.02, 0.1, 0.25)),
            duplicate_p=rng.choice((0.0, 0.05, 0.2)),
            delay_min_s=rng.uniform(0.001, 0.02),
            delay_max_s=rng.choice((0.03, 0.2, 0.6)),
            partitions=rng.randint(0, 4),
            crashes=rng.randint(0, 4),
            lost_primary_episode=rng.random() < 0.5,
            skew_s_max=rng.choice((0.0, 2.0, 30.0)),
            drift_max=rng.choice((0.0, 0.001, 0.02)),
        )
        self.limits = ShipperLimits(
            batch_entries_max=rng.choice((1, 3, 20, 100)),
            snapshot_keys_max=rng.choice((1, 2, 50)),
            backoff_initial_s=0.05,
            backoff_max_s=rng.choice((0.5, 2.0)),
        )
        self.retained_entries_max = rng.choice((3, 10, 1000))
        self.fault_phase_s = rng.uniform(15.0, 40.0)
        self.now = 0.0
        self._queue: list[_Event] = []
        self._order = itertools.count()
        self._rids = itertools.count(1)
        self.stats = Stats()
        self.nodes: dict[str, SimNode] = {}
        self.offsets: dict[str, tuple[float, float]] = {}
        self.shippers: dict[tuple[str, str], PeerShipper] = {}
        self.in_flight: dict[tuple[str, str], _Request] = {}
        self.timers: dict[tuple[str, str], float] = {}
        self.blocked: set[frozenset[str]] = set()
        self.healed = False
        self.network_messages = 0
        # What clients were told, for the checks.
        self.key_ids: list[str] = []
        self.acknowledged_versions: dict[str, dict[bytes, bytes]] = {}
        self.ciphertexts: list[Ciphertext] = []
        self.max_epoch: dict[tuple[str, str], int] = {}
        self.violations: list[str] = []
        self.sweeps: set[tuple[str, str, float]] = set()
        self.currents: dict[tuple[str, str], tuple[int, bytes]] = {}
        for region in self.regions:
            node = SimNode(region, log_id=rng.randbytes(16), on_change=self._changed)
            self.nodes[region] = node
            skew = rng.uniform(-self.faults.skew_s_max, self.faults.skew_s_max)
            drift = rng.uniform(-self.faults.drift_max, self.faults.drift_max)
            self.offsets[region] = (skew, drift)
        for region in self.regions:
            self._boot(region)

    # ---- time and events ----------------------------------------------------------------

    def local_time(self, region: str) -> float:
        skew, drift = self.offsets[region]
        return CLOCK_BASE_S + self.now * (1.0 + drift) + skew

    def _global_time(self, region: str, local: float) -> float:
        """The global time at which ``region``'s clock reads ``local`` (never before now;
        a microsecond late, so that float rounding cannot leave the deadline unreached)."""
        skew, drift = self.offsets[region]
        return max(self.now + 1e-6, (local - CLOCK_BASE_S - skew) / (1.0 + drift) + 1e-6)

    def at(self, time: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, _Event(max(time, self.now), next(self._order), action))

    def trace(self, message: str) -> None:
        if self._trace is not None:
            self._trace(f"{self.now:9.4f} {message}")

    def run(self) -> None:
        self._schedule_scenario()
        self.at(self.fault_phase_s, self._heal)
        deadline = self.fault_phase_s + HEAL_TIME_MAX_S
        next_quiescence_check = self.fault_phase_s
        while self._queue:
            event = heapq.heappop(self._queue)
            if event.time > deadline:
                self.violations.append(f"not quiescent {HEAL_TIME_MAX_S} s after healing")
                return
            if self.stats.events >= EVENTS_MAX:
                self.violations.append(f"more than {EVENTS_MAX} events: a livelock")
                return
            self.now = event.time
            self.stats.events += 1
            event.action()
            if self.healed and self.now >= next_quiescence_check:
                next_quiescence_check = self.now + 0.25
                if self.quiescent():
                    self.stats.heal_time_s = self.now - self.fault_phase_s
                    return
        if not self.quiescent():
            self.violations.append("the event queue ran dry before quiescence")

    def quiescent(self) -> bool:
        if self.network_messages or self.in_flight:
            return False
        for (origin, _peer), shipper in self.shippers.items():
            node = self.nodes[origin]
            if not node.up or shipper.position != node.durable.head_seq or shipper.snapshotting:
                return False
        return all(node.up for node in self.nodes.values())

    # ---- network -----------------------------------------------------------------------

    def send(self, source: str, destination: str, deliver: Callable[[], None]) -> None:
        self.stats.messages += 1
        faults = self.faults
        if not self.healed:
            if frozenset((source, destination)) in self.blocked:
                return
            if self.rng.random() < faults.drop_p:
                return
        copies = 2 if (not self.healed and self.rng.random() < faults.duplicate_p) else 1
        for _ in range(copies):
            delay = self.rng.uniform(faults.delay_min_s, faults.delay_max_s)
            self.network_messages += 1
            self.at(self.now + delay, lambda: self._deliver(source, destination, deliver))

    def _deliver(self, source: str, destination: str, deliver: Callable[[], None]) -> None:
        self.network_messages -= 1
        if not self.nodes[destination].up:
            return
        if not self.healed and frozenset((source, destination)) in self.blocked:
            return
        deliver()

    # ---- shipping ----------------------------------------------------------------------

    def _boot(self, region: str) -> None:
        node = self.nodes[region]
        node.up = True
        node.boot += 1
        for peer in self.regions:
            if peer == region:
                continue
            self.shippers[(region, peer)] = PeerShipper(peer, self.limits, self.rng)
            self.in_flight.pop((region, peer), None)
            self.timers.pop((region, peer), None)
            self.pump(region, peer)
        for key_id, row in list(node.durable.keys.items()):
            if row.deletion_due is not None:
                self._schedule_sweep(region, key_id, row.deletion_due)

    def wake(self, region: str) -> None:
        for peer in self.regions:
            if peer != region:
                self.pump(region, peer)

    def pump(self, region: str, peer: str) -> None:
        node = self.nodes[region]
        if not node.up:
            return
        shipper = self.shippers[(region, peer)]
        now = self.local_time(region)
        self._prune(node)
        action = shipper.next_action(
            now, retained_first_seq=node.retained_first_seq(), head_seq=node.durable.head_seq
        )
        if isinstance(action, Idle):
            if action.until is not None:
                self._set_timer(region, peer, action.until)
            return
        rid = next(self._rids)
        boot = node.boot
        if isinstance(action, Hello):
            request = _Request(rid, "hello")
            log_id = node.durable.log_id

            def deliver_hello() -> None:
                position = self.nodes[peer].position_for(region, log_id)
                self.send(
                    peer, region, lambda: self._reply(region, peer, boot, rid, ("pos", position))
                )

            self.send(region, peer, deliver_hello)
        elif isinstance(action, SendEntries):
            entries = node.wire_entries(action.first_seq, action.last_seq, peer)
            request = _Request(rid, "entries")
            log_id = node.durable.log_id

            def deliver_entries() -> None:
                receiver = self.nodes[peer]
                try:
                    kind, position = receiver.receive_entries(
                        region, log_id, entries, self.local_time(peer)
                    )
                except ApplyError as error:
                    self.violations.append(f"{peer} refused a batch from {region}: {error}")
                    return
                self.send(
                    peer, region, lambda: self._reply(region, peer, boot, rid, (kind, position))
                )

            self.send(region, peer, deliver_entries)
        else:
            assert isinstance(action, SendSnapshot)
            self.stats.snapshots += action.after_key_id == ""
            chunk, next_after = node.snapshot_records(
                action.after_key_id, self.limits.snapshot_keys_max, peer
            )
            request = _Request(rid, "snapshot", next_after)
            log_id = node.durable.log_id
            through = action.through_seq
            last = next_after is None

            def deliver_snapshot() -> None:
                receiver = self.nodes[peer]
                position = receiver.receive_snapshot(
                    region, log_id, chunk, through, last, self.local_time(peer)
                )
                self.send(
                    peer, region, lambda: self._reply(region, peer, boot, rid, ("snap", position))
                )

            self.send(region, peer, deliver_snapshot)
        self.in_flight[(region, peer)] = request
        self.at(self.now + RPC_TIMEOUT_S, lambda: self._timeout(region, peer, boot, rid))

    def _reply(self, region: str, peer: str, boot: int, rid: int, answer: tuple[str, int]) -> None:
        node = self.nodes[region]
        request = self.in_flight.get((region, peer))
        if node.boot != boot or request is None or request.rid != rid:
            return  # a late or duplicated answer to a request already given up on
        del self.in_flight[(region, peer)]
        shipper = self.shippers[(region, peer)]
        kind, position = answer
        now = self.local_time(region)
        if kind == "snap":
            shipper.on_snapshot_chunk(now, next_after_key_id=request.meta, position=position)
        else:
            shipper.on_position(now, position)
        if kind != "gap":
            node.durable.acked[peer] = max(node.durable.acked.get(peer, 0), position)
        self.pump(region, peer)

    def _timeout(self, region: str, peer: str, boot: int, rid: int) -> None:
        node = self.nodes[region]
        request = self.in_flight.get((region, peer))
        if node.boot != boot or request is None or request.rid != rid:
            return
        del self.in_flight[(region, peer)]
        self.shippers[(region, peer)].on_failure(self.local_time(region), "timeout")
        self.pump(region, peer)

    def _set_timer(self, region: str, peer: str, until_local: float) -> None:
        when = self._global_time(region, until_local)
        known = self.timers.get((region, peer))
        if known is not None and known <= when:
            return
        self.timers[(region, peer)] = when
        boot = self.nodes[region].boot

        def fire() -> None:
            if self.nodes[region].boot != boot or self.timers.get((region, peer)) != when:
                return
            del self.timers[(region, peer)]
            self.pump(region, peer)

        self.at(when, fire)

    def _prune(self, node: SimNode) -> None:
        acked = [node.durable.acked.get(peer, 0) for peer in self.regions if peer != node.region]
        node.prune_through(
            prune_through(
                acked,
                head_seq=node.durable.head_seq,
                retained_entries_max=self.retained_entries_max,
            )
        )

    # ---- invariants checked at every change ---------------------------------------------

    def _changed(self, node: SimNode, key_id: str) -> None:
        state = node.durable.states[key_id]
        slot = (node.region, key_id)
        if state.epoch < self.max_epoch.get(slot, 0):
            self.violations.append(f"{node.region} {key_id}: epoch went back to {state.epoch}")
        self.max_epoch[slot] = max(self.max_epoch.get(slot, 0), state.epoch)
        row = node.durable.keys.get(key_id)
        if row is not None:
            if row.current not in row.materials:
                self.violations.append(f"{node.region} {key_id}: current version not held")
            for material_id in row.materials:
                if material_id not in state.versions:
                    self.violations.append(f"{node.region} {key_id}: holds an unknown version")
            if row.deletion_due is not None and (node.region, key_id, row.deletion_due) not in (
                self.sweeps
            ):
                self._schedule_sweep(node.region, key_id, row.deletion_due)
        self._check_holder_claims(node, key_id)
        self._check_promotion(node, key_id)
        self.wake(node.region)

    def _check_promotion(self, node: SimNode, key_id: str) -> None:
        """Two-phase rotation: when a primary makes a version current within its epoch
        (not by a forced promotion), every live member of its view holds that version."""
        state = node.durable.states[key_id]
        slot = (node.region, key_id)
        before = self.currents.get(slot)
        current = state.settings.current_material_id
        self.currents[slot] = (state.epoch, current)
        if (
            before is None
            or before[1] == current
            or before[0] != state.epoch
            or state.primary_region != node.region
            or state.settings.author_region != node.region
        ):
            return
        for region in state.alive_regions():
            durable = self.nodes[region].durable
            row = durable.keys.get(key_id)
            incarnation = state.members[region].incarnation
            own = durable.states.get(key_id)
            own_member = None if own is None else own.members.get(region)
            if (
                own_member is not None
                and own_member.deleted
                and own_member.incarnation >= incarnation
            ):
                continue  # that replica has been deleted since; it needs no new version
            if row is None or row.incarnation != incarnation or current not in row.materials:
                self.violations.append(
                    f"{node.region} {key_id[:12]}: made {current.hex()[:8]} current before "
                    f"{region} held it"
                )

    def _check_holder_claims(self, node: SimNode, key_id: str) -> None:
        """Two-phase rotation relies on holder claims: a (region, incarnation) listed as
        holding a version must really hold its material, or have been deleted since."""
        state = node.durable.states[key_id]
        for material_id, holders in state.holders.items():
            for region, incarnation in holders:
                row = self.nodes[region].durable.keys.get(key_id)
                if (
                    row is not None
                    and row.incarnation == incarnation
                    and material_id not in row.materials
                ):
                    self.violations.append(
                        f"{node.region} {key_id[:12]}: claims {region} holds "
                        f"{material_id.hex()[:8]}, it does not"
                    )

    # ---- scenario ------------------------------------------------------------------------

    def _schedule_scenario(self) -> None:
        rng = self.rng
        time = 0.2
        while time < self.fault_phase_s:
            self.at(time, self._random_operation)
            time += rng.expovariate(1.5)
        for _ in range(self.faults.partitions):
            a, b = rng.sample(self.regions, 2)
            start = rng.uniform(0, self.fault_phase_s)
            self.at(start, partial(self._block, a, b))
            self.at(start + rng.uniform(0.5, 12.0), partial(self._unblock, a, b))
        for _ in range(self.faults.crashes):
            region = rng.choice(self.regions)
            start = rng.uniform(0, self.fault_phase_s)
            self.at(start, partial(self._crash, region))
            self.at(start + rng.uniform(0.2, 8.0), partial(self._restart, region))
        if self.faults.lost_primary_episode:
            self.at(rng.uniform(2.0, self.fault_phase_s / 2), self._lose_a_primary)

    def _block(self, a: str, b: str) -> None:
        self.trace(f"partition {a} | {b}")
        self.blocked.add(frozenset((a, b)))

    def _unblock(self, a: str, b: str) -> None:
        self.trace(f"heal link {a} - {b}")
        self.blocked.discard(frozenset((a, b)))
        self.wake(a)
        self.wake(b)

    def _crash(self, region: str) -> None:
        node = self.nodes[region]
        if not node.up:
            return
        self.trace(f"crash {region}")
        node.up = False
        node.boot += 1
        for peer in self.regions:
            self.in_flight.pop((region, peer), None)
            self.timers.pop((region, peer), None)

    def _restart(self, region: str) -> None:
        if self.nodes[region].up:
            return
        self.trace(f"restart {region}")
        self._boot(region)

    def _heal(self) -> None:
        self.trace("heal everything")
        self.healed = True
        self.blocked.clear()
        for region in self.regions:
            if not self.nodes[region].up:
                self._boot(region)
            self.wake(region)

    def _lose_a_primary(self) -> None:
        """A primary's region is cut off (or crashes) while the rest goes on: an operator
        force-promotes a replica; both sides may rotate; later everything heals."""
        if not self.key_ids:
            return
        rng = self.rng
        key_id = rng.choice(self.key_ids)
        views = [
            n.durable.states[key_id] for n in self.nodes.values() if key_id in n.durable.states
        ]
        primary = max(views, key=lambda s: s.settings.order).primary_region
        others = [r for r in self.regions if r != primary]
        if rng.random() < 0.5:
            self._crash(primary)
            self.at(self.now + rng.uniform(3.0, 15.0), lambda: self._restart(primary))
        else:
            for other in others:
                self._block(primary, other)
            until = self.now + rng.uniform(3.0, 15.0)
            for other in others:
                self.at(until, partial(self._unblock, primary, other))
            # The cut-off primary keeps serving its side: it rotates in the split.
            self.at(self.now + 0.5, lambda: self._operation("rotate", primary, key_id))
        target = rng.choice(others)
        self.at(self.now + rng.uniform(0.5, 2.0), lambda: self._operation("force", target, key_id))
        self.at(self.now + rng.uniform(2.5, 3.0), lambda: self._operation("rotate", target, key_id))

    def _random_operation(self) -> None:
        rng = self.rng
        weights = {
            "create": 3 if len(self.key_ids) < 3 else 0,
            "replicate": 4,
            "encrypt": 6,
            "rotate": 2,
            "move": 1,
            "force": 0.4,
            "disable": 0.5,
            "enable": 0.8,
            "delete": 0.3,
            "cancel": 0.4,
        }
        if not self.key_ids:
            weights = {"create": 1}
        names = list(weights)
        name = rng.choices(names, [weights[n] for n in names])[0]
        key_id = rng.choice(self.key_ids) if self.key_ids else ""
        region = self._region_for(name, key_id)
        self._operation(name, region, key_id)

    def _region_for(self, name: str, key_id: str) -> str:
        rng = self.rng
        if name in ("replicate", "rotate", "move") and rng.random() < 0.85:
            # Most callers send shared-property changes to the region they think is primary.
            views = [n for n in self.nodes.values() if key_id in n.durable.states and n.up]
            if views:
                return rng.choice(views).durable.states[key_id].primary_region
        return rng.choice(self.regions)

    def _operation(self, name: str, region: str, key_id: str) -> None:
        node = self.nodes[region]
        self.stats.operations += 1
        if not node.up:
            return
        try:
            done = getattr(self, f"_op_{name}")(node, key_id)
        except KmsError as error:
            self.trace(f"{region} {name} {key_id[:12]} refused: {error.reason}")
            return
        if done:
            self.stats.acknowledged += 1
            self.trace(f"{region} {name} {key_id[:12]} ok")

    def _schedule_sweep(self, region: str, key_id: str, due_local: float) -> None:
        self.sweeps.add((region, key_id, due_local))
        boot = self.nodes[region].boot

        def sweep() -> None:
            node = self.nodes[region]
            if node.boot != boot or not node.up:
                return
            row = node.durable.keys.get(key_id)
            if (
                row is None
                or row.state is not KeyState.PENDING_DELETION
                or row.deletion_due is None
                or row.deletion_due > self.local_time(region)
            ):
                return
            now = self.local_time(region)
            verdict = deletion_verdict(node.durable.states[key_id], region=region)
            if verdict is DeletionVerdict.WAIT_FOR_REPLICAS:
                self.trace(f"{region} sweeper: {key_id[:12]} is primary, waits for replicas")
                row.state = KeyState.PENDING_REPLICA_DELETION
                row.deletion_due = None
                node.store_local(key_id, node.durable.states[key_id], now)
                return
            if verdict is DeletionVerdict.WAIT_FOR_VERSIONS:
                self.trace(f"{region} sweeper: {key_id[:12]} holds a version alone, waits")
                self.sweeps.discard((region, key_id, due_local))
                self._schedule_sweep(region, key_id, now + SWEEP_RETRY_S)
                return
            self.trace(f"{region} sweeper deletes {key_id[:12]}")
            node.delete_key(key_id, now)

        self.at(self._global_time(region, due_local), sweep)
