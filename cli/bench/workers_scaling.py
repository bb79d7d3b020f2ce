"""`meridian bench --workers 1,2`: throughput of one node run as 1, 2, ... worker processes.

For each worker count the benchmark starts a fresh single-region node (direct network,
audit on: the real configuration) with ``workers = N`` (server/workers.py) and runs
each operation with the same load. Connections are spread over the workers by the
kernel (SO_REUSEPORT hashes each connection), so every load process opens several
connections of its own and spreads its calls over them.

On a small machine the load generator competes with the node for the same cores, so
the result also says where the CPU went during each measuring window: the node's
processes (per worker), the load generator, and the whole machine (which includes
anything else running). Read the scaling together with that split: a node cannot use
a core the load generator is busy with.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from meridian.cli import cluster
from meridian.cli.bench.prepare import prepare_meridian
from meridian.cli.bench.runner import REGION, _pool, server_cpu_s
from meridian.cli.bench.stats import summarize
from meridian.cli.bench.workloads import Workload, workload

# Each load process's calls go over this many connections, so that N workers each get
# some even from one process (a connection is served by one worker for its lifetime).
CONNECTIONS_PER_PROCESS = 16
WORKERS_READY_TIMEOUT_S = 120.0


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
class _LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    # CPU seconds this load process used while measuring.
    cpu_s: float = 0.0


def run_load(spec: _LoadSpec) -> _LoadResult:
    """One load process (runs in a ``spawn`` pool process)."""
    return asyncio.run(_load(spec))


async def _load(spec: _LoadSpec) -> _LoadResult:
    import grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec.ca_cert,
        private_key=spec.client_key,
        certificate_chain=spec.client_cert,
    )
    options = [
        ("grpc.ssl_target_name_override", spec.server_name),
        # Without it channels with equal arguments share one connection (one worker).
        ("grpc.use_local_subchannel_pool", 1),
    ]
    channels = [
        grpc.aio.secure_channel(spec.endpoint, credentials, options=options)
        for _ in range(spec.connections)
    ]
    result = _LoadResult()
    try:
        calls = [
            channel.unary_unary(
                spec.method,
                request_serializer=lambda data: data,
                response_deserializer=lambda data: data,
            )
            for channel in channels
        ]
        for call in calls:
            await call(spec.request, timeout=30)  # connect each, warm the path
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + spec.warmup_s
        deadline = measure_from + spec.duration_s
        cpu_at_start: list[float] = []

        async def caller(index: int) -> None:
            call = calls[index % len(calls)]
            while True:
                started = time.perf_counter()
                now = loop.time()
                if now >= deadline:
                    return
                if now >= measure_from and not cpu_at_start:
                    cpu_at_start.append(time.process_time())
                try:
                    await call(spec.request, timeout=30)
                except grpc.aio.AioRpcError as error:
                    if loop.time() >= measure_from:
                        result.errors += 1
                        result.first_error = (
                            result.first_error or f"{error.code()}: {error.details()}"
                        )
                    continue
                if loop.time() >= measure_from:
                    result.latencies_s.append(time.perf_counter() - started)

        await asyncio.gather(*(caller(index) for index in range(spec.concurrency)))
        if cpu_at_start:
            result.cpu_s = time.process_time() - cpu_at_start[0]
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


def _start_node(directory: Path, workers: int) -> tuple[dict[str, Any], list[int]]:
    """A fresh node with ``workers`` processes; its load spec and its pids (supervisor
    first)."""
    cluster.up(directory, [REGION], network="direct")
    spec = cluster.load(directory)
    entry = spec.regions[REGION]
    if workers > 1:
        cluster.down(directory)
        document = tomllib.loads(entry.config.read_text())
        document["workers"] = workers
        entry.config.write_text(tomli_w.dumps(document))
        cluster.start(directory, REGION)
        spec = cluster.load(directory)
        entry = spec.regions[REGION]
    assert entry.pid is not None
    pids = [entry.pid]
    if workers > 1:
        # `cluster start` returns once one worker answers; wait for all of them.
        deadline = time.monotonic() + WORKERS_READY_TIMEOUT_S
        marker = f'"workers": {workers}'.encode()
        while marker not in entry.log.read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node's {workers} workers did not all start")
            time.sleep(0.1)
        pids += _children(entry.pid)
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
    with _pool(options.processes) as pool:
        futures: list[Future[_LoadResult]] = [
            pool.submit(run_load, spec) for _ in range(options.processes)
        ]
        # The load's first calls connect and warm up; measure the node in the window.
        time.sleep(options.warmup_s + 0.2)
        node_before = [server_cpu_s(pid) for pid in pids]
        machine_before = _machine_busy_s()
        window_started = time.monotonic()
        while not all(future.done() for future in futures):
            time.sleep(0.05)
        window_s = time.monotonic() - window_started
        node_after = [server_cpu_s(pid) for pid in pids]
        machine_after = _machine_busy_s()
        results = [future.result() for future in futures]
    latencies = [latency for result in results for latency in result.latencies_s]
    errors = sum(result.errors for result in results)
    node_cpu = [after - before for before, after in zip(node_before, node_after, strict=True)]
    stats = summarize(
        f"meridian workers={workers}",
        work.name,
        latencies,
        errors,
        options.duration_s,
        sum(node_cpu),
    )
    cores = os.cpu_count() or 1
    node_cores = sum(node_cpu) / window_s
    return {
        **stats.as_dict(),
        # Throughput per core the node actually got: on a shared machine the share of
        # CPU the node gets varies, this much less (it shows the cost of coordination).
        "ops_per_node_core_s": round(stats.ops_per_s / node_cores, 1) if node_cores else None,
        "first_error": next((r.first_error for r in results if r.first_error), ""),
        # Cores busy on average during the window (1.0 = one core fully used).
        "cpu_cores": {
            "node": round(node_cores, 2),
            "node_per_process": [round(cpu / window_s, 2) for cpu in node_cpu],
            "load_generator": round(sum(r.cpu_s for r in results) / window_s, 2),
            "machine": round((machine_after[0] - machine_before[0]) / window_s, 2),
            "machine_cores": cores,
        },
    }


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
                    row = _measure(options, load, pids, work, request, count)
                    row["workers"] = count
                    results.append(row)
                    report(_line(row))
            finally:
                cluster.down(directory)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    document = {
        "kind": "workers-scaling",
        "started_at": started,
        "options": {
            **{k: v for k, v in asdict(options).items() if k != "output"},
            "connections_per_process": CONNECTIONS_PER_PROCESS,
        },
        "machine": {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "results": results,
        "scaling": scaling(results),
        "scaling_per_node_core": scaling(results, "ops_per_node_core_s"),
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(document, indent=2) + "\n")
    return document


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
    return (
        f"  workers={row['workers']:<2} {row['operation']:<22} {row['ops_per_s']:>9.1f} ops/s"
        f"  p50 {row['p50_ms']:7.2f}  p99 {row['p99_ms']:7.2f} ms"
        f"  per node core {row['ops_per_node_core_s'] or float('nan'):7.1f} ops/s"
        f"  cores: node {cores['node']:.2f} {cores['node_per_process']}"
        f" load {cores['load_generator']:.2f} machine {cores['machine']:.2f}"
        f"/{cores['machine_cores']}  errors {row['errors']}"
    )
