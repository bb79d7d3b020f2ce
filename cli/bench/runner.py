"""Runs the side-by-side benchmark: the empty-call ceiling, Meridian with audit on and
with audit off, and moto's KMS.

All targets run on this machine in the same run, so the ratios hold even on a shared,
noisy host: the two Meridian nodes run at the same time and each operation is measured
on one right after the other, so a burst of load from elsewhere hits both alike. Load
comes from separate processes; the server's CPU per operation is read from /proc before
and after each run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from meridian.cli import cluster
from meridian.cli.bench import batches, py_spy
from meridian.cli.bench.display import Display
from meridian.cli.bench.loadgen import (
    BotoWorkerSpec,
    GrpcWorkerSpec,
    WorkerResult,
    run_boto_worker,
    run_grpc_worker,
)
from meridian.cli.bench.prepare import prepare_meridian, prepare_peer
from meridian.cli.bench.profile_summary import describe, summarize_directory
from meridian.cli.bench.stats import RunStats, median_of, summarize
from meridian.cli.bench.targets import check_targets
from meridian.cli.bench.workloads import Prepared, Workload, workload
from meridian.server.event_loop import resolve as resolve_event_loop

REGION = "us-east-1"
# Connections per load process with --node-workers (cli/bench/workers_scaling.py too).
WORKER_CONNECTIONS = 16
TARGET_CEILING = "ceiling (empty)"
TARGET_MERIDIAN = "meridian"  # the real configuration: audit on
TARGET_AUDIT_OFF = "meridian (audit off)"
TARGET_PEER = "moto"
# boto3 is synchronous (one thread per call in flight) and moto's server is a threaded
# Werkzeug app: more threads than this only add contention on its own lock.
PEER_CONCURRENCY_MAX = 16
# The CPU window opens this long after the warm-up, once every caller is measuring.
CPU_WINDOW_DELAY_S = 0.2
Report = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    operations: Sequence[str]
    duration_s: float = 5.0
    warmup_s: float = 1.0
    concurrency: int = 32
    processes: int = 1
    payload_bytes: int = 1024
    # Every run repeated this many times (interleaved); the tables show medians.
    rounds: int = 1
    peer: bool = True
    audit_off: bool = True  # also measure a node with `[audit] enabled = false`
    output: Path = Path("bench-results/latest.json")
    # py-spy profiles of the audit-on node, one per operation (collapsed stacks).
    profile_dir: Path | None = None
    # Open loop at this many calls per second in all (0: closed loop at ``concurrency``):
    # latency at an equal offered load rather than throughput at saturation.
    open_loop_rate: float = 0.0
    # Worker processes per Meridian node (`workers = N`, server/workers.py); the ceiling
    # is measured on the same node, so the ratios compare like with like.
    node_workers: int = 1


@dataclass(frozen=True)
class _Node:
    target: str
    directory: Path
    spec: dict[str, Any]  # endpoint and TLS material for the load generator
    pid: int  # the node's process (with workers: their supervisor)
    prepared: Prepared
    # Every process whose CPU is the node's: itself and, with workers, each worker.
    pids: tuple[int, ...] = ()


def server_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _pool(processes: int) -> ProcessPoolExecutor:
    # spawn: workers must not inherit grpc's state from this process (fork is unsafe).
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))


def _merge(results: Sequence[WorkerResult]) -> WorkerResult:
    merged = WorkerResult(latencies_s=[], errors=0)
    for result in results:
        merged.latencies_s.extend(result.latencies_s)
        merged.errors += result.errors
        merged.first_error = merged.first_error or result.first_error
    return merged


class _CpuWindow:
    """The server's CPU time (all its processes) from just after the warm-up until the
    load ends."""

    def __init__(self, pids: Sequence[int], opens_after_s: float) -> None:
        self._pids = tuple(pids)
        self._opens_at = time.monotonic() + opens_after_s
        self._before: float | None = None

    def _now(self) -> float:
        return sum(server_cpu_s(pid) for pid in self._pids)

    def poll(self) -> None:
        if self._before is None and time.monotonic() >= self._opens_at:
            self._before = self._now()

    def close(self) -> float | None:
        if self._before is None:  # the run ended before the window opened
            return None
        return self._now() - self._before


Submit = Callable[[ProcessPoolExecutor], list[Future[WorkerResult]]]


def _submitter(run_worker: Callable[[Any], WorkerResult], spec: object, count: int) -> Submit:
    def submit(pool: ProcessPoolExecutor) -> list[Future[WorkerResult]]:
        return [pool.submit(run_worker, spec) for _ in range(count)]

    return submit


def _measure(
    options: BenchOptions,
    display: Display,
    label: str,
    pids: Sequence[int],
    processes: int,
    submit: Submit,
) -> tuple[WorkerResult, float | None]:
    with _pool(processes) as pool:
        futures = submit(pool)
        window = _CpuWindow(pids, options.warmup_s + CPU_WINDOW_DELAY_S)

        def done() -> bool:
            window.poll()
            return all(future.done() for future in futures)

        display.wait(label, options.warmup_s + options.duration_s, done)
        results = [future.result() for future in futures]
        cpu_s = window.close()
    return _merge(results), cpu_s


def run_grpc(
    options: BenchOptions,
    target: str,
    node: _Node,
    work: Workload,
    display: Display,
) -> RunStats:
    per_process = max(1, options.concurrency // options.processes)
    worker = GrpcWorkerSpec(
        method=work.method,
        request=work.build(node.prepared).SerializeToString(),
        concurrency=per_process,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        rate_per_s=options.open_loop_rate / options.processes,
        # A node of several workers gets its calls spread as connections: enough of
        # them for each worker to get a share (the same for the ceiling and every run).
        connections=min(per_process, WORKER_CONNECTIONS) if options.node_workers > 1 else 1,
        **node.spec,
    )
    if work.items_per_call > 1:
        # The load generator sees statuses only; a batch must answer every item.
        problem = batches.check_items(node.spec, work, worker.request)
        if problem:
            display.note(f"  {target} {work.name}: the batch's items fail ({problem})")
    profiler = _start_profiler(options, target, node.pid, work.name, display)
    try:
        merged, cpu_s = _measure(
            options,
            display,
            f"{target} {work.name}",
            node.pids,
            options.processes,
            _submitter(run_grpc_worker, worker, options.processes),
        )
    finally:
        if profiler is not None:
            profiler.wait(timeout=options.warmup_s + options.duration_s + 30)
    stats = summarize(
        target, work.name, merged.latencies_s, merged.errors, options.duration_s, cpu_s
    )
    display.note(_line(stats, merged.first_error))
    return stats


def _start_profiler(
    options: BenchOptions, target: str, pid: int, operation: str, display: Display
) -> subprocess.Popen[bytes] | None:
    """py-spy on the node while it serves ``operation`` (audit on only), if asked
    (cli/bench/py_spy.py); with workers, the supervisor is idle, so its workers too."""
    if options.profile_dir is None or target != TARGET_MERIDIAN:
        return None
    found = py_spy.find_py_spy()
    if found is None:
        display.note("  py-spy not installed (`pip install -e '.[bench]'`): no profile")
        return None
    options.profile_dir.mkdir(parents=True, exist_ok=True)
    return py_spy.record(
        found,
        pid,
        options.profile_dir / f"{operation}.txt",
        options.warmup_s + options.duration_s,
        subprocesses=options.node_workers > 1,
    )


def _line(stats: RunStats, first_error: str = "") -> str:
    cpu = stats.server_cpu_ms_per_op
    line = (
        f"  {stats.target:<21} {stats.operation:<22} {stats.ops_per_s:>9.1f} ops/s"
        f"  p50 {stats.p50_ms:7.2f}  p99 {stats.p99_ms:7.2f}  p99.9 {stats.p999_ms:7.2f} ms"
        f"  cpu {cpu if cpu is not None else float('nan'):6.3f} ms/op  errors {stats.errors}"
    )
    items = batches.items_per_s(stats)
    if items is not None:
        line += f"  = {items:.1f} items/s"
    return line + (f"  first error: {first_error}" if first_error else "")


def _meridian_spec(directory: Path) -> tuple[dict[str, Any], int]:
    spec = json.loads((directory / "cluster.json").read_text())
    entry = spec["regions"][REGION]
    return (
        {
            "endpoint": entry.get("direct_endpoint") or entry["endpoint"],
            "server_name": entry["server_name"],
            "ca_cert": Path(spec["ca_cert"]).read_bytes(),
            "client_cert": Path(spec["client_cert"]).read_bytes(),
            "client_key": Path(spec["client_key"]).read_bytes(),
        },
        int(entry["pid"]),
    )


def set_workers(config: Path, workers: int) -> None:
    """Rewrite a node's config with `workers = N` (the node must be stopped)."""
    document = tomllib.loads(config.read_text())
    document["workers"] = workers
    config.write_text(tomli_w.dumps(document))


def disable_audit(config: Path) -> None:
    """Rewrite a node's config with `[audit] enabled = false` (the node must be stopped)."""
    document = tomllib.loads(config.read_text())
    document.setdefault("audit", {})["enabled"] = False
    config.write_text(tomli_w.dumps(document))


def _start_node(
    target: str,
    directory: Path,
    *,
    audit: bool,
    payload: bytes,
    workloads: Sequence[Workload],
    display: Display,
    workers: int = 1,
) -> _Node:
    with display.step(f"starting {target}"):
        # Direct: the benchmark measures the node, not the fault-injecting link proxy.
        cluster.up(directory, [REGION], network="direct")
        if not audit or workers > 1:
            # `cluster up` writes the real configuration; a restart on the same data and
            # port with the audit table switched off (or several workers) is the only
            # difference.
            cluster.down(directory)
            config = cluster.load(directory).regions[REGION].config
            if not audit:
                disable_audit(config)
            if workers > 1:
                set_workers(config, workers)
            cluster.start(directory, REGION)
        spec, pid = _meridian_spec(directory)
        pids: tuple[int, ...] = (pid,)
        if workers > 1:
            from meridian.cli.bench.workers_scaling import wait_for_workers

            pids += tuple(wait_for_workers(cluster.load(directory).regions[REGION], workers))
        prepared = prepare_meridian(directory, REGION, payload, workloads)
    display.note(
        f"{target}: node pid {pid} at {spec['endpoint']} (audit {'on' if audit else 'off'}"
        + (f", {workers} workers: pids {list(pids[1:])})" if workers > 1 else ")")
    )
    return _Node(target, directory, spec, pid, prepared, pids)


def run_meridian(options: BenchOptions, base: Path, display: Display) -> list[list[RunStats]]:
    """Every round's runs: the ceiling, then each operation on each node in turn (the
    nodes' order alternates between rounds, so neither always goes first)."""
    works = [workload(name) for name in options.operations]
    payload = os.urandom(options.payload_bytes)
    nodes: list[_Node] = []
    plan = [(TARGET_MERIDIAN, "audit-on", True)]
    if options.audit_off:
        plan.append((TARGET_AUDIT_OFF, "audit-off", False))
    try:
        for target, folder, audit in plan:
            nodes.append(
                _start_node(
                    target,
                    base / folder,
                    audit=audit,
                    payload=payload,
                    workloads=works,
                    display=display,
                    workers=options.node_workers,
                )
            )
        rounds: list[list[RunStats]] = []
        for number in range(options.rounds):
            if options.rounds > 1:
                display.note(f"-- round {number + 1} of {options.rounds}")
            results = [run_grpc(options, TARGET_CEILING, nodes[0], workload("Empty"), display)]
            order = nodes if number % 2 == 0 else nodes[::-1]
            for work in works:
                for node in order:
                    results.append(run_grpc(options, node.target, node, work, display))
            rounds.append(results)
        return rounds
    finally:
        for node in nodes:
            cluster.down(node.directory)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peer_workloads(operations: Sequence[str]) -> list[Workload]:
    """The selected workloads that the peer implements (the others are "n/a")."""
    return [w for w in map(workload, operations) if w.boto_operation and w.boto_parameters]


def run_moto(options: BenchOptions, display: Display) -> list[list[RunStats]]:
    try:
        import boto3
    except ImportError:
        display.note(
            "  moto/boto3 not installed: `pip install -e '.[bench]'` to compare with the peer"
        )
        return []
    works = peer_workloads(options.operations)
    if not works:
        return []
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "kms",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106
        )
        with display.step("starting moto"):
            for _ in range(100):
                try:
                    client.list_keys()
                    break
                except Exception:  # the server is still starting
                    time.sleep(0.1)
            else:
                display.note("  moto did not start; skipping the peer")
                return []
            peer = prepare_peer(client, os.urandom(options.payload_bytes), works)
        rounds: list[list[RunStats]] = []
        for _ in range(options.rounds):
            rounds.append(
                [_run_peer(options, display, endpoint, server.pid, work, peer) for work in works]
            )
        return rounds
    finally:
        server.terminate()
        server.wait(timeout=10)


def _run_peer(
    options: BenchOptions,
    display: Display,
    endpoint: str,
    pid: int,
    work: Workload,
    peer: dict[str, Any],
) -> RunStats:
    assert work.boto_operation is not None
    assert work.boto_parameters is not None
    spec = BotoWorkerSpec(
        endpoint_url=endpoint,
        region=REGION,
        operation=work.boto_operation,
        parameters=work.boto_parameters(peer),
        concurrency=min(options.concurrency, PEER_CONCURRENCY_MAX),
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
    )
    merged, cpu_s = _measure(
        options,
        display,
        f"{TARGET_PEER} {work.name}",
        (pid,),
        1,
        _submitter(run_boto_worker, spec, 1),
    )
    stats = summarize(
        TARGET_PEER, work.name, merged.latencies_s, merged.errors, options.duration_s, cpu_s
    )
    display.note(_line(stats, merged.first_error))
    return stats


def medians(rounds: Sequence[Sequence[RunStats]]) -> list[RunStats]:
    """One run per target and operation, in the order of the first round."""
    grouped: dict[tuple[str, str], list[RunStats]] = {}
    for runs in rounds:
        for run in runs:
            grouped.setdefault((run.target, run.operation), []).append(run)
    return [median_of(runs) for runs in grouped.values()]


def _ratio(numerator: float, denominator: float, digits: int) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


def ratios(
    results: Sequence[RunStats], operations: Sequence[str] = (), *, peer: bool = False
) -> dict[str, dict[str, float | None]]:
    """Per Meridian operation: audit on (and off) as a fraction of the ceiling's
    throughput and a multiple of its p99, the cost of auditing, and a multiple of moto.

    ``vs_moto`` is None ("n/a") for an operation the peer does not implement and absent
    when the peer was not run.
    """
    ceiling = next((r for r in results if r.target == TARGET_CEILING), None)
    by_target = {(r.target, r.operation): r for r in results}
    peer_has = {w.name for w in peer_workloads(operations)}
    table: dict[str, dict[str, float | None]] = {}
    for result in results:
        if result.target != TARGET_MERIDIAN:
            continue
        row: dict[str, float | None] = {}
        off = by_target.get((TARGET_AUDIT_OFF, result.operation))
        if ceiling and ceiling.server_cpu_ms_per_op and result.server_cpu_ms_per_op:
            # Steadier than throughput on a busy machine: what a call costs the node.
            row["cpu_vs_ceiling"] = _ratio(
                result.server_cpu_ms_per_op, ceiling.server_cpu_ms_per_op, 2
            )
        if ceiling and ceiling.ops_per_s:
            row["of_ceiling"] = _ratio(result.ops_per_s, ceiling.ops_per_s, 3)
            if ceiling.p99_ms:
                row["p99_vs_ceiling_p99"] = _ratio(result.p99_ms, ceiling.p99_ms, 2)
            if off:
                row["audit_off_of_ceiling"] = _ratio(off.ops_per_s, ceiling.ops_per_s, 3)
                if ceiling.p99_ms:
                    row["audit_off_p99_vs_ceiling_p99"] = _ratio(off.p99_ms, ceiling.p99_ms, 2)
        if off:
            row["audit_on_vs_off"] = _ratio(result.ops_per_s, off.ops_per_s, 3)
            if result.server_cpu_ms_per_op is not None and off.server_cpu_ms_per_op is not None:
                row["audit_cpu_ms_per_op"] = round(
                    result.server_cpu_ms_per_op - off.server_cpu_ms_per_op, 3
                )
        peer_result = by_target.get((TARGET_PEER, result.operation))
        if peer_result and peer_result.ops_per_s:
            row["vs_moto"] = _ratio(result.ops_per_s, peer_result.ops_per_s, 1)
        elif peer and result.operation not in peer_has:
            row["vs_moto"] = None
        # Batch workloads: items/s, and as a multiple of the single operation's ops/s.
        row.update(batches.batch_row(result, by_target, audit_off_target=TARGET_AUDIT_OFF))
        table[result.operation] = row
    return table


def run(options: BenchOptions, display: Display | None = None) -> dict[str, Any]:
    display = display or Display()
    started = time.time()
    load_average = os.getloadavg()
    directory = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
    runs = 1 + len(options.operations) * (2 if options.audit_off else 1)
    if options.peer and not options.open_loop_rate:
        runs += len(peer_workloads(options.operations))
    rounds: list[list[RunStats]] = []
    peer_ran = False
    with display:
        display.plan(runs * options.rounds)
        try:
            load = (
                f"open loop at {options.open_loop_rate:g} calls/s"
                if options.open_loop_rate
                else f"{options.concurrency} in flight"
            )
            display.note(
                f"== Meridian and the empty-call ceiling ({load}, "
                f"{options.processes} load process(es), {options.warmup_s:g} s warm-up + "
                f"{options.duration_s:g} s per run, {options.payload_bytes} B payload, "
                f"{resolve_event_loop('auto')} event loop)"
            )
            rounds = run_meridian(options, directory, display)
            if options.peer and options.open_loop_rate:
                # boto3's harness is closed loop only, and moto's throughput is below
                # most rates worth measuring latency at.
                display.note("== the peer is measured in closed-loop runs only")
            elif options.peer:
                display.note("== moto's KMS (the peer), same operations")
                peer_rounds = run_moto(options, display)
                peer_ran = bool(peer_rounds)
                for ours, theirs in zip(rounds, peer_rounds, strict=False):
                    ours.extend(theirs)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    results = medians(rounds)
    document = {
        "started_at": started,
        "host": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            # A shared machine shows here: the ratios still compare runs made side by side.
            "load_average_at_start": [round(value, 2) for value in load_average],
            # The nodes' and the load generator's loop (server/event_loop.py, "auto").
            "event_loop": resolve_event_loop("auto"),
        },
        "options": {
            "operations": list(options.operations),
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "concurrency": options.concurrency,
            "processes": options.processes,
            "payload_bytes": options.payload_bytes,
            "open_loop_rate": options.open_loop_rate,
            "node_workers": options.node_workers,
            "rounds": options.rounds,
            "audit_off": options.audit_off,
            "peer": options.peer,
        },
        # The medians over the rounds (a single round: its runs), then every round's runs.
        "results": [r.as_dict() for r in results],
        "ratios": ratios(results, options.operations, peer=peer_ran),
        "rounds": [[r.as_dict() for r in runs] for runs in rounds],
    }
    # The targets against this run's ratios (cli/bench/targets.py).
    document["targets"] = [check.as_dict() for check in check_targets(document)]
    if options.profile_dir is not None:
        # Shares of the audit-on node's GIL samples by part of the request path.
        profiles = summarize_directory(options.profile_dir)
        document["profiles"] = profiles
        display.note(f"== where the audit-on node held the GIL (py-spy, {options.profile_dir})")
        for operation, shares in profiles.items():
            display.note(f"  {operation}: {describe(shares)}")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(document, indent=2) + "\n")
    return document
