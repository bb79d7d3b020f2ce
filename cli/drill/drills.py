"""The drills: each runs the workload, injects one fault, heals, and checks the cluster.

Every drill has three phases: a baseline (the workload alone), the fault, and a recovery
(the workload after the heal); then the checks of cli/drill/checks.py. Faults use the
cluster's own operator commands (`cluster kill/start`, `cluster link`), so a drill
exercises the same tools an operator would use.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from meridian.cli import cluster, cluster_network, cluster_state
from meridian.cli.cluster_state import ClusterError
from meridian.cli.drill import checks
from meridian.cli.drill.report import DrillResult, Event
from meridian.cli.drill.workload import DrillKeys, LagSampler, Workload, prepare_keys
from meridian.cli.netem.shape import ShapeChange
from meridian.client import KmsClient
from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc
from meridian.proto.replication_admin.v1 import replication_admin_pb2, replication_admin_pb2_grpc

__all__ = ["DRILLS", "Durations", "run"]

SLOW_REGION_LATENCY_MS = 300.0
CRASH_LOOP_KILLS = 3

Report = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Durations:
    baseline_s: float = 5.0
    fault_s: float = 10.0
    recovery_s: float = 10.0

    @classmethod
    def short(cls) -> Durations:
        return cls(baseline_s=2.0, fault_s=3.0, recovery_s=3.0)


@dataclasses.dataclass
class _Context:
    directory: Path
    target: str
    durations: Durations
    workload: Workload
    keys: DrillKeys
    report: Report
    events: list[Event] = dataclasses.field(default_factory=list)
    fault_start: float | None = None
    heal: float | None = None
    convergence: tuple[float | None, str] = (None, "not measured")

    def mark(self, label: str) -> float:
        moment = self.workload.now_s()
        self.events.append(Event(moment, label))
        self.report(f"{moment:7.2f} s  {label}")
        return moment

    def fault(self, label: str) -> None:
        self.fault_start = self.mark(label)

    def healed(self, label: str) -> None:
        self.heal = self.mark(label)
        # Convergence is timed from the heal, while the workload keeps running.
        mrk_blob = next(
            (blob for kind, _, blob in reversed(self.workload.ciphertexts) if kind == "mrk"), None
        )
        self.convergence = checks.wait_converged(
            self.directory, self.keys, mrk_blob, timeout_s=max(self.durations.recovery_s, 30.0)
        )


Action = Callable[[_Context], None]


@dataclasses.dataclass(frozen=True)
class Drill:
    name: str
    summary: str
    needs_proxy: bool
    writes: bool
    action: Action


def _region_outage(context: _Context) -> None:
    cluster.kill(context.directory, context.target)
    context.fault(f"kill -9 {context.target}")
    time.sleep(context.durations.fault_s)
    cluster.start(context.directory, context.target)
    context.healed(f"{context.target} started again on its data")


def _partition(context: _Context) -> None:
    cluster_network.change_links(
        context.directory, context.target, "all", ShapeChange(partitioned=True)
    )
    context.fault(f"{context.target} cut off from its peers (clients still reach it)")
    time.sleep(context.durations.fault_s)
    cluster_network.change_links(
        context.directory, context.target, "all", ShapeChange(partitioned=False)
    )
    context.healed("partition healed")


def _slow_region(context: _Context) -> None:
    cluster_network.change_links(
        context.directory, "client", context.target, ShapeChange(latency_ms=SLOW_REGION_LATENCY_MS)
    )
    context.fault(f"client link to {context.target} slowed to {SLOW_REGION_LATENCY_MS:g} ms")
    time.sleep(context.durations.fault_s)
    cluster_network.change_links(
        context.directory, "client", context.target, ShapeChange(), restore=True
    )
    context.healed("client link restored")


def _crash_loop(context: _Context) -> None:
    pause_s = context.durations.fault_s / CRASH_LOOP_KILLS
    for attempt in range(1, CRASH_LOOP_KILLS + 1):
        cluster.kill(context.directory, context.target)
        label = f"kill -9 {context.target} ({attempt} of {CRASH_LOOP_KILLS})"
        if attempt == 1:
            context.fault(label)
        else:
            context.mark(label)
        time.sleep(min(0.5, pause_s / 2))
        cluster.start(context.directory, context.target)
        context.mark(f"{context.target} started again")
        time.sleep(pause_s / 2)
    context.healed("crash loop over")


def _primary_outage(context: _Context) -> None:
    keys = context.keys
    replica = keys.mrk_regions[1]
    spec = cluster_state.read(context.directory)
    cluster.kill(context.directory, context.target)
    context.fault(f"kill -9 {context.target}, the primary region of {keys.mrk_id}")
    try:
        epoch = _force_primary(spec, replica, keys.mrk_id)
        context.mark(f"forced promotion: {replica} is the primary now (epoch {epoch})")
    except grpc.RpcError as error:
        context.mark(
            f"forced promotion of {replica} refused: {error.code().name}: {error.details()}"
        )
    time.sleep(context.durations.fault_s)
    cluster.start(context.directory, context.target)
    context.healed(f"old primary {context.target} back on its data")
    primary = _wait_primary_seen(spec, context.target, keys.mrk_id, replica)
    if primary == replica:
        context.mark(f"{context.target} learned the new primary {replica} (it is a replica now)")
    else:
        context.mark(
            f"{context.target} still names {primary or 'no'} primary after {_MERGE_WAIT_S:g} s"
        )


_MERGE_WAIT_S = 30.0


def _force_primary(spec: cluster_state.ClusterSpec, region: str, key_id: str) -> int:
    """ReplicationAdmin/ForcePrimaryRegion, sent to the region being promoted (issue 3)."""
    with cluster.region_channel(spec, spec.regions[region]) as channel:
        stub = replication_admin_pb2_grpc.ReplicationAdminStub(channel)
        response = stub.ForcePrimaryRegion(
            replication_admin_pb2.ForcePrimaryRegionRequest(key_id=key_id, primary_region=region),
            timeout=10.0,
        )
    return int(response.epoch)


def _wait_primary_seen(
    spec: cluster_state.ClusterSpec, region: str, key_id: str, expected: str
) -> str | None:
    """The primary region `region`'s copy of the key names, once it is `expected` or late."""
    deadline = time.monotonic() + _MERGE_WAIT_S
    primary: str | None = None
    with cluster.region_channel(spec, spec.regions[region]) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                metadata = stub.DescribeKey(
                    kms_pb2.DescribeKeyRequest(key_id=key_id), timeout=2.0
                ).key_metadata
                primary = metadata.multi_region_configuration.primary_key.region or None
            except grpc.RpcError:
                primary = None
            if primary == expected:
                break
            time.sleep(0.2)
    return primary


DRILLS: dict[str, Drill] = {
    drill.name: drill
    for drill in (
        Drill(
            "region-outage",
            "kill -9 a region under load, restart it later",
            False,
            True,
            _region_outage,
        ),
        Drill(
            "partition",
            "cut a region off from its peers (not from clients), heal",
            True,
            True,
            _partition,
        ),
        Drill(
            "primary-outage",
            "lose an MRK's primary, force-promote a replica, bring it back",
            False,
            True,
            _primary_outage,
        ),
        Drill(
            "slow-region",
            "add latency to the nearest region; the client should move away",
            True,
            False,
            _slow_region,
        ),
        Drill("crash-loop", "kill -9 a node repeatedly during writes", False, True, _crash_loop),
    )
}


def _skip_reason(drill: Drill, keys: DrillKeys) -> str | None:
    if drill.name == "primary-outage" and (keys.mrk is None or len(keys.mrk_regions) < 2):
        return f"needs a multi-region key with a replica (issue 3); {keys.mrk_note}"
    return None


def exercises(drill: Drill, keys: DrillKeys, target: str) -> list[str]:
    failover = (
        "SDK failover and nearest-region routing (issue 4): calls not tied to one region move"
        if hasattr(KmsClient, "check_health")
        else "no SDK failover yet (issue 4): calls go to the home region only"
    )
    items = [
        f"multi-region key: {keys.mrk_note}",
        failover,
        "single-region keys in every region (fail only in their own region while it is out)",
    ]
    if drill.writes:
        items.append(f"acknowledged CreateKey writes in {target}, checked afterwards")
        if drill.name != "primary-outage":
            items.append(f"shared-property writes: {keys.shared_writes_note}")
    return items


def run(
    name: str,
    directory: Path,
    *,
    target: str | None = None,
    durations: Durations | None = None,
    report: Report = lambda line: None,
) -> DrillResult:
    """Run one drill against the running cluster in `directory`."""
    drill = DRILLS.get(name)
    if drill is None:
        raise ClusterError(f"unknown drill {name!r}; choose one of {', '.join(DRILLS)}")
    durations = durations or Durations()
    directory = directory.resolve()
    spec = cluster_state.read(directory)
    regions = list(spec.regions)
    target = target or regions[0]
    cluster_state.region_entry(spec, target)
    down = [item.region for item in cluster.status(directory) if item.health != "SERVING"]
    if down:
        raise ClusterError(f"every region must be SERVING before a drill; not: {', '.join(down)}")
    if drill.needs_proxy and spec.proxy is None:
        reason = "needs link proxies; restart the cluster with `--network geography` or `flat`"
        return DrillResult(name, target, (), reason, None, (), (), None, 0.0)
    report(f"preparing keys in {', '.join(regions)}")
    # The MRK's primary is the first region given: the target, for primary-outage.
    first = [target] if drill.name == "primary-outage" else []
    ordered = first + [region for region in regions if region not in first]
    keys = prepare_keys(directory / cluster_state.CLUSTER_FILE_NAME, ordered)
    skip = _skip_reason(drill, keys)
    if skip is not None:
        return DrillResult(name, target, (), skip, None, (), (), None, 0.0)
    write_regions = [target] if drill.writes else []
    # A forced promotion makes the old primary refuse shared-property writes by design.
    workload = Workload(
        directory / cluster_state.CLUSTER_FILE_NAME,
        keys,
        write_regions=write_regions,
        shared_writes=drill.writes and drill.name != "primary-outage",
    )
    context = _Context(directory, target, durations, workload, keys, report)
    sampler = LagSampler(directory, regions, workload.now_s)
    workload.start()
    sampler.start()
    try:
        context.mark("workload started")
        time.sleep(durations.baseline_s)
        drill.action(context)
        assert context.heal is not None
        remaining_s = durations.recovery_s - (workload.now_s() - context.heal)
        time.sleep(max(0.0, remaining_s))
        context.mark("workload stopped")
    finally:
        sampler.stop()
        workload.stop()
        _leave_cluster_whole(directory, report)
    verification = checks.verify(
        directory / cluster_state.CLUSTER_FILE_NAME,
        keys,
        workload.writes,
        workload.ciphertexts,
        context.convergence,
        checks.audit_state(directory, regions),
        checks.shared_settings_state(directory, keys, workload.rotation_acknowledged),
    )
    fault_window = (
        (context.fault_start, context.heal)
        if context.fault_start is not None and context.heal is not None
        else None
    )
    return DrillResult(
        name=name,
        target=target,
        exercises=tuple(exercises(drill, keys, target)),
        skipped=None,
        fault_window=fault_window,
        events=tuple(context.events),
        records=tuple(workload.snapshot()),
        lag_samples=tuple(sampler.samples),
        lag_note=None if sampler.samples else sampler.unavailable,
        verification=verification,
        duration_s=workload.stopped_s,
    )


def _leave_cluster_whole(directory: Path, report: Report) -> None:
    """Whatever happened, a drill ends with every region running and every link restored."""
    spec = cluster_state.read(directory)
    if spec.proxy is not None:
        cluster_network.ensure_proxy(spec, report)
        cluster_network.restore_all(directory, report)
    for state in cluster.status(directory):
        if not state.alive:
            report(f"starting {state.region} again")
            cluster.start(directory, state.region)
