"""`meridian bench --workers 1,2`: throughput of one node run as 1, 2, ... worker processes.

For each worker count the benchmark starts a fresh single-region node (direct network,
audit on: the real configuration) with ``workers = N`` (server/workers.py) and runs
each operation with the same load. Connections are spread over the workers by the
kernel (SO_REUSEPORT hashes each connection), so every load process opens several
connections of its own and spreads its calls over them.

On a small machine the load generator competes with the node for the same cores: a
single call costs the client a good part of what it costs the node, so on 2 cores two
workers never get a second core to themselves. Batch calls (100 items) cost the client
little per item, so they show what the workers can do when the node is the bound.
Each run therefore also says where the CPU went during its measuring window (the
load's own window, read from /proc samples afterwards): the node's processes (per
worker), the load generator, and the whole machine (which includes anything else
running), and per item what the node and the load generator spent. workers_report.py
turns those into the table: items/s and its ratio, and the ratio this machine's cores
would allow at the measured costs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from meridian.cli import cluster
from meridian.cli.bench import batches, py_spy
from meridian.cli.bench.loadgen import WorkerResult, closed_loop, open_calls
from meridian.cli.bench.prepare import prepare_meridian
from meridian.cli.bench.profile_summary import gil_shares
from meridian.cli.bench.runner import (
    REGION,
    WORKER_CONNECTIONS,
    _pool,
    server_cpu_s,
    set_workers,
)
from meridian.cli.bench.stats import summarize
from meridian.cli.bench.workers_report import CpuSample, cpu_between, summarize_operations
from meridian.cli.bench.workloads import Workload, workload

# Each load process's calls go over this many connections, so that N workers each get
# some even from one process (a connection is served by one worker for its lifetime).
CONNECTIONS_PER_PROCESS = WORKER_CONNECTIONS
WORKERS_READY_TIMEOUT_S = 120.0
# How often the node's and the machine's CPU counters are read during a run (the
# kernel counts in 10 ms ticks; reading /proc a few times costs nothing measurable).
CPU_SAMPLE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class ScalingOptions:
    workers: Sequence[int]
    operations: Sequence[str]
    duration_s: float = 5.0
    warmup_s: float = 1.0
    concurrency: int = 32
    processes: int = 1
    payload_bytes: int = 1024
    output: Path = Path("bench-results/workers.json")
    # py-spy each serving process during each run; collapsed stacks in this folder.
    profile_dir: Path | None = None


@dataclass(frozen=True)
class _LoadSpec:
    endpoint: str
    server_name: str
    ca_cert: bytes
    client_cert: bytes
    client_key: bytes
    method: str
    request: bytes
    concurrency: int
    connections: int
    duration_s: float
    warmup_s: float


@dataclass
class _LoadResult(WorkerResult):
    # CPU seconds this load process used while measuring.
    cpu_s: float = 0.0
    # The measuring window, in time.monotonic() seconds (CLOCK_MONOTONIC is one clock
    # for every process on Linux, so the benchmark can read the node's CPU over it).
    window_start: float = 0.0
    window_end: float = 0.0


def run_load(spec: _LoadSpec) -> _LoadResult:
    """One load process (runs in a ``spawn`` pool process), on the node's default loop
    as the side-by-side benchmark's load is (cli/bench/loadgen.py)."""
    from meridian.server.event_loop import run

    return run(_load(spec))


async def _load(spec: _LoadSpec) -> _LoadResult:
    result = _LoadResult(latencies_s=[], errors=0)
    channels, calls = await open_calls(spec, spec.connections)
    try:
        window: dict[str, tuple[float, float]] = {}

        def mark(name: str) -> None:
            window[name] = (time.monotonic(), time.process_time())

        await closed_loop(spec, calls, result, mark=mark)
        if "start" in window and "end" in window:
            result.window_start, cpu_start = window["start"]
            result.window_end, cpu_end = window["end"]
            result.cpu_s = cpu_end - cpu_start
    finally:
        for channel in channels:
            await channel.close(None)
    return result


def _machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / ticks, total / ticks


def _children(pid: int) -> list[int]:
    """The node's worker processes (multiprocessing spawn children of the supervisor)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
            found.append(int(entry))
    return sorted(found)


def wait_for_workers(entry: Any, workers: int) -> list[int]:
    """The pids of a supervisor's ``workers`` processes, once all of them serve
    (`cluster start` returns once one worker answers). ``entry``: the region's
    cluster entry (its ``pid`` and ``log``)."""
    deadline = time.monotonic() + WORKERS_READY_TIMEOUT_S
    marker = f'"workers": {workers}'.encode()
    while marker not in entry.log.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node's {workers} workers did not all start")
        time.sleep(0.1)
    return _children(entry.pid)


def _start_node(directory: Path, workers: int) -> tuple[dict[str, Any], list[int]]:
    """A fresh node with ``workers`` processes; its load spec and its pids (supervisor
    first)."""
    cluster.up(directory, [REGION], network="direct")
    spec = cluster.load(directory)
    entry = spec.regions[REGION]
    if workers > 1:
        cluster.down(directory)
        set_workers(entry.config, workers)
        cluster.start(directory, REGION)
        spec = cluster.load(directory)
        entry = spec.regions[REGION]
    assert entry.pid is not None
    pids = [entry.pid]
    if workers > 1:
        pids += wait_for_workers(entry, workers)
    raw = json.loads((directory / "cluster.json").read_text())
    region = raw["regions"][REGION]
    load = {
        "endpoint": region.get("direct_endpoint") or region["endpoint"],
        "server_name": region["server_name"],
        "ca_cert": Path(raw["ca_cert"]).read_bytes(),
        "client_cert": Path(raw["client_cert"]).read_bytes(),
        "client_key": Path(raw["client_key"]).read_bytes(),
    }
    return load, pids


def _measure(
    options: ScalingOptions,
    load: dict[str, Any],
    pids: list[int],
    work: Workload,
    request: bytes,
    workers: int,
) -> dict[str, Any]:
    per_process = max(1, options.concurrency // options.processes)
    spec = _LoadSpec(
        method=work.method,
        request=request,
        concurrency=per_process,
        connections=min(CONNECTIONS_PER_PROCESS, per_process),
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        **load,
    )
    samples: list[CpuSample] = []
    with _pool(options.processes) as pool:
        futures: list[Future[_LoadResult]] = [
            pool.submit(run_load, spec) for _ in range(options.processes)
        ]
        # The node's CPU is sampled throughout and read over the load's own window
        # afterwards: the load processes take a while (and under load, a varying while)
        # to start, connect and warm up.
        samples.append(_cpu_sample(pids))
        while not all(future.done() for future in futures):
            time.sleep(CPU_SAMPLE_INTERVAL_S)
            samples.append(_cpu_sample(pids))
        samples.append(_cpu_sample(pids))
        results = [future.result() for future in futures]
    measured = [result for result in results if result.window_end > result.window_start]
    if not measured:
        raise RuntimeError(f"the load of {work.name} never reached its measuring window")
    window_start = min(result.window_start for result in measured)
    window_end = max(result.window_end for result in measured)
    window_s = window_end - window_start
    node_cpu, machine_cpu = cpu_between(samples, window_start, window_end)
    latencies = [latency for result in results for latency in result.latencies_s]
    errors = sum(result.errors for result in results)
    stats = summarize(
        f"meridian workers={workers}", work.name, latencies, errors, window_s, sum(node_cpu)
    )
    node_cores = sum(node_cpu) / window_s
    load_cpu_s = sum(result.cpu_s for result in results)
    items = len(latencies) * work.items_per_call
    return {
        **stats.as_dict(),
        "items_per_call": work.items_per_call,
        "items_per_s": round(items / window_s, 1),
        # What an item (a call, or one item of a batch) costs in CPU: the node's (all
        # its processes) and the load generator's. Much steadier than ops/s on a shared
        # machine, and what the ceilings in workers_report.py are made of.
        "node_cpu_ms_per_item": round(sum(node_cpu) / items * 1000, 4) if items else None,
        "load_generator_cpu_ms_per_item": round(load_cpu_s / items * 1000, 4) if items else None,
        "machine_cores_busy": round(machine_cpu / window_s, 2),
        # Throughput per core the node actually got: on a shared machine the share of
        # CPU the node gets varies, this much less (it shows the cost of coordination).
        "ops_per_node_core_s": round(stats.ops_per_s / node_cores, 1) if node_cores else None,
        "first_error": next((r.first_error for r in results if r.first_error), ""),
        # Cores busy on average during the window (1.0 = one core fully used).
        "cpu_cores": {
            "node": round(node_cores, 2),
            "node_per_process": [round(cpu / window_s, 2) for cpu in node_cpu],
            "load_generator": round(load_cpu_s / window_s, 2),
            "machine": round(machine_cpu / window_s, 2),
            "machine_cores": os.cpu_count() or 1,
        },
    }


def _cpu_sample(pids: Sequence[int]) -> CpuSample:
    return CpuSample(
        time.monotonic(),
        tuple(server_cpu_s(pid) for pid in pids),
        _machine_busy_s()[0],
    )


def run_scaling(options: ScalingOptions, report: Any = print) -> dict[str, Any]:
    works = [workload(name) for name in options.operations]
    payload = os.urandom(options.payload_bytes)
    base = Path(tempfile.mkdtemp(prefix="meridian-bench-workers-"))
    started = time.time()
    results: list[dict[str, Any]] = []
    try:
        for run, count in enumerate(options.workers):
            # A fresh node per entry: `--workers 1,2,1,2` alternates, so drift in the
            # machine's other load shows as a spread rather than as a false ratio.
            directory = base / f"run-{run}-workers-{count}"
            report(f"starting a node with workers = {count}")
            load, pids = _start_node(directory, count)
            try:
                prepared = prepare_meridian(directory, REGION, payload, works)
                for work in works:
                    request = work.build(prepared).SerializeToString()
                    if work.items_per_call > 1:
                        # The load generator sees statuses only; a batch must answer
                        # every item, or failing items would look fast.
                        problem = batches.check_items(load, work, request)
                        if problem:
                            raise RuntimeError(f"{work.name}: the batch's items fail ({problem})")
                    # The supervisor only watches; py-spy the processes that serve.
                    profiler = _start_profilers(
                        options, pids[1:] or pids, f"w{count}-run{run}-{work.name}"
                    )
                    try:
                        row = _measure(options, load, pids, work, request, count)
                    finally:
                        _wait_profilers(profiler, options)
                    row["workers"] = count
                    row["run"] = run
                    if profiler:
                        row["profile_gil_shares"] = [
                            gil_shares(path.read_text()) if path.exists() else {}
                            for path, _ in profiler
                        ]
                    results.append(row)
                    report(_line(row))
            finally:
                cluster.down(directory)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    cores = os.cpu_count() or 1
    summaries = summarize_operations(results, cores)
    document = {
        "kind": "workers-scaling",
        "started_at": started,
        "options": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            "connections_per_process": CONNECTIONS_PER_PROCESS,
        },
        "machine": {"cores": cores, "load_average_at_start": os.getloadavg()},
        "results": results,
        "summary": [summary.as_dict() for summary in summaries],
        "scaling": scaling(results),
        "scaling_per_node_core": scaling(results, "ops_per_node_core_s"),
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(document, indent=2) + "\n")
    return document


def _start_profilers(
    options: ScalingOptions, pids: Sequence[int], name: str
) -> list[tuple[Path, subprocess.Popen[bytes]]]:
    """py-spy on each serving process for the run (``--profile DIR``), if asked: GIL
    samples only, which is what bounds one worker; collapsed stacks, one file each."""
    if options.profile_dir is None:
        return []
    found = py_spy.find_py_spy()
    if found is None:
        raise RuntimeError("py-spy is not installed (`pip install -e '.[bench]'`)")
    options.profile_dir.mkdir(parents=True, exist_ok=True)
    started = []
    duration_s = options.warmup_s + options.duration_s
    for index, pid in enumerate(pids):
        output = options.profile_dir / f"{name}-worker{index}.txt"
        started.append((output, py_spy.record(found, pid, output, duration_s)))
    return started


def _wait_profilers(
    profilers: Sequence[tuple[Path, subprocess.Popen[bytes]]], options: ScalingOptions
) -> None:
    for _, process in profilers:
        try:
            process.wait(timeout=options.warmup_s + options.duration_s + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scaling(
    results: Sequence[dict[str, Any]], field: str = "ops_per_s"
) -> dict[str, dict[str, float]]:
    """Per operation: the mean of ``field`` for each worker count (over its runs) as a
    multiple of the first count's."""
    table: dict[str, dict[str, float]] = {}
    for operation in dict.fromkeys(row["operation"] for row in results):
        by_count: dict[int, list[float]] = {}
        for row in results:
            if row["operation"] == operation:
                by_count.setdefault(row["workers"], []).append(row[field] or 0.0)
        means = {count: sum(values) / len(values) for count, values in by_count.items()}
        base = next(iter(means.values()))
        table[operation] = {
            str(count): round(mean / base, 2) if base else 0.0 for count, mean in means.items()
        }
    return table


def _line(row: dict[str, Any]) -> str:
    cores = row["cpu_cores"]
    node_ms = row["node_cpu_ms_per_item"]
    load_ms = row["load_generator_cpu_ms_per_item"]
    return (
        f"  workers={row['workers']:<2} {row['operation']:<22} {row['items_per_s']:>9.1f} items/s"
        f"  p50 {row['p50_ms']:7.2f}  p99 {row['p99_ms']:7.2f} ms"
        f"  CPU ms/item: node {node_ms or float('nan'):.4f} load {load_ms or float('nan'):.4f}"
        f"  cores: node {cores['node']:.2f} {cores['node_per_process']}"
        f" load {cores['load_generator']:.2f} machine {cores['machine']:.2f}"
        f"/{cores['machine_cores']}  errors {row['errors']}"
    )
