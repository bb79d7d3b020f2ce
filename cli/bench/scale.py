"""`meridian bench --scale 1000,100000,1000000`: the same operations as a region grows.

For each size: a fresh one-region node (``cluster up --network direct``, then stopped),
seeded with that many keys by ``server/seeding.py`` (the seeding rate is measured),
started again while the start-up is timed (process start to health SERVING, the median
of three starts). All sizes' nodes then run side by side, and Encrypt, Decrypt,
GenerateDataKey and DescribeKey are measured against each in ``rounds`` rounds with the
sizes interleaved, so that a shared host's noise falls on every size alike. Three ways:

- ``working-set``: a random key per call from a sample of ``sample_keys`` keys (all of
  them for a smaller region), every one used once before measuring: a service whose
  callers use a bounded set of keys, which the caches hold.
- ``all-keys``: a random key per call from every key of the region (Decrypt: from a
  uniform sample of ciphertexts sealed at seeding, at most ``ciphertexts_max``), not
  primed: the honest test of cache misses in a large region.
- ``hot-key``: one key for every call.

Reported per size: start-up time, resident memory (VmRSS) after start-up and after
the load, peak (VmHWM), database size, and p50/p99/ops/s per mode and operation; the
table compares each size's p50 with the smallest size's. The document goes to
``bench-results/scale.json``.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from meridian.cli import cluster
from meridian.cli.bench.scale_load import (
    KEY_ID_BYTES,
    OPERATIONS,
    ScaleWorkerSpec,
    run_scale_worker,
    write_ciphertexts,
    write_key_ids,
)
from meridian.cli.bench.stats import summarize

REGION = "us-east-1"
MODES = ("working-set", "hot-key", "all-keys")
STARTS = 3
P50_GROWTH_TARGET = 0.10  # the target: p50 grows at most 10% from smallest to largest
Report = Callable[[str], None]


@dataclass(frozen=True)
class ScaleOptions:
    sizes: Sequence[int]
    operations: Sequence[str] = OPERATIONS
    duration_s: float = 5.0
    warmup_s: float = 1.0
    concurrency: int = 16
    processes: int = 1
    sample_keys: int = 10_000
    ciphertexts_max: int = 200_000
    # A data key's size: KMS Decrypt mostly unwraps data keys.
    payload_bytes: int = 32
    seed: int = 1
    # Every (mode, operation, size) is measured this many times, the sizes interleaved.
    rounds: int = 3
    # After the rounds, Encrypt under this many distinct keys of the largest size, once
    # each, to measure memory with the caches full (they hold 100,000 keys); 0 = skip.
    fill_caches_keys: int = 0
    output: Path = Path("bench-results/scale.json")


@dataclass
class SizeResult:
    keys: int
    seed_s: float = 0.0
    seed_keys_per_s: float = 0.0
    startup_s: float = 0.0
    startup_runs_s: list[float] = field(default_factory=list)
    rss_after_start_mb: float = 0.0
    rss_after_load_mb: float = 0.0
    rss_peak_mb: float = 0.0
    # With --scale-fill-caches, largest size only: RSS once every cache is full.
    rss_full_caches_mb: float | None = None
    database_after_seeding_mb: float = 0.0
    database_mb: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)


def _pool(processes: int) -> ProcessPoolExecutor:
    # spawn: workers must not inherit grpc's state from this process (fork is unsafe).
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))


def memory_mb(pid: int, field_name: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM...), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise ValueError(f"{field_name} not in /proc/{pid}/status")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _database_mb(data_dir: Path) -> float:
    total = sum(path.stat().st_size for path in data_dir.glob("meridian.sqlite3*"))
    return round(total / 2**20, 1)


@dataclass(frozen=True)
class _Files:
    """Where each mode's keys and ciphertexts are, for the workers."""

    keys: dict[str, Path]
    ciphertexts: dict[str, Path]


def _seed(
    directory: Path, size: int, options: ScaleOptions, result: SizeResult, report: Report
) -> _Files:
    from meridian.server.config import load_config
    from meridian.server.seeding import CiphertextSample, SeedOptions, SeedReport, seed_keys

    config = load_config(cluster.load(directory).regions[REGION].config)
    all_keys = directory / "keys-all-keys.bin"
    every = max(1, math.ceil(size / options.ciphertexts_max))
    payload = os.urandom(options.payload_bytes)
    printed = [0]

    def progress(seeded: SeedReport) -> None:
        if seeded.keys_seeded - printed[0] >= 100_000 or seeded.keys_seeded == size:
            printed[0] = seeded.keys_seeded
            report(f"    seeded {seeded.keys_seeded}/{size} ({seeded.keys_per_s:,.0f} keys/s)")

    seeded = asyncio.run(
        seed_keys(
            config,
            SeedOptions(
                count=size,
                description="scale bench",
                sample=CiphertextSample(every_keys=every, plaintext=payload),
                key_ids=lambda ids: write_key_ids(all_keys, ids),
                progress=progress,
            ),
        )
    )
    result.seed_s = round(seeded.elapsed_s, 2)
    result.seed_keys_per_s = round(seeded.keys_per_s)
    picker = random.Random(options.seed)  # noqa: S311 - picks benchmark keys, no secret
    working = picker.sample(seeded.ciphertexts, min(options.sample_keys, len(seeded.ciphertexts)))
    sets = {"working-set": working, "hot-key": working[:1], "all-keys": seeded.ciphertexts}
    files = _Files(keys={"all-keys": all_keys}, ciphertexts={})
    for mode, pairs in sets.items():
        files.ciphertexts[mode] = directory / f"ciphertexts-{mode}.bin"
        write_ciphertexts(files.ciphertexts[mode], [blob for _, blob in pairs])
        if mode != "all-keys":
            files.keys[mode] = directory / f"keys-{mode}.bin"
            write_key_ids(files.keys[mode], [key_id for key_id, _ in pairs])
    return files


def _worker_spec(
    node: _Node, options: ScaleOptions, operation: str, mode: str, seed: int
) -> ScaleWorkerSpec:
    spec = cluster.load(node.directory)
    entry = spec.regions[REGION]
    return ScaleWorkerSpec(
        endpoint=entry.direct_endpoint,
        server_name=entry.server_name,
        ca_cert=spec.ca_cert.read_bytes(),
        client_cert=spec.client_cert.read_bytes(),
        client_key=spec.client_key.read_bytes(),
        operation=operation,
        keys_file=str(node.files.keys[mode]),
        ciphertexts_file=str(node.files.ciphertexts[mode]),
        payload=os.urandom(options.payload_bytes),
        concurrency=max(1, options.concurrency // options.processes),
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        seed=seed,
    )


@dataclass
class _Node:
    """One size's running node and what has been measured against it."""

    directory: Path
    files: _Files
    pid: int
    result: SizeResult
    latencies_s: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    cpu_s: dict[tuple[str, str], float] = field(default_factory=dict)
    round_p50_ms: dict[tuple[str, str], list[float]] = field(default_factory=dict)


def _run_once(
    pool: ProcessPoolExecutor,
    node: _Node,
    mode: str,
    operation: str,
    round_number: int,
    options: ScaleOptions,
    report: Report,
) -> None:
    # A seed of its own per operation: with one seed for all of them, GenerateDataKey and
    # DescribeKey drew the keys Encrypt had just used on the same node, so in `all-keys`
    # mode they measured cache hits, not the misses the mode is for.
    seed = options.seed + 1000 * round_number + 100 * OPERATIONS.index(operation)
    specs = [
        _worker_spec(node, options, operation, mode, seed + index)
        for index in range(options.processes)
    ]
    futures = [pool.submit(run_scale_worker, spec) for spec in specs]
    time.sleep(options.warmup_s + 0.5)  # the workers' start-up and warm-up
    cpu_before = _cpu_s(node.pid)
    results = [future.result() for future in futures]
    cpu_after = _cpu_s(node.pid)
    cell = (mode, operation)
    latencies = [latency for result in results for latency in result.latencies_s]
    errors = sum(result.errors for result in results)
    node.latencies_s.setdefault(cell, []).extend(latencies)
    node.errors[cell] = node.errors.get(cell, 0) + errors
    node.cpu_s[cell] = node.cpu_s.get(cell, 0.0) + cpu_after - cpu_before
    stats = summarize(mode, operation, latencies, errors, options.duration_s, None)
    node.round_p50_ms.setdefault(cell, []).append(stats.p50_ms)
    first_error = next((r.first_error for r in results if r.first_error), "")
    report(
        f"    {node.result.keys:>9,} keys  {mode:<12} {operation:<16} "
        f"{stats.ops_per_s:>8.1f} ops/s  p50 {stats.p50_ms:7.3f} ms  p99 {stats.p99_ms:7.3f} ms"
        f"  errors {errors}" + (f"  first error: {first_error}" if first_error else "")
    )


def _prime(pool: ProcessPoolExecutor, node: _Node, options: ScaleOptions, report: Report) -> None:
    """Use every working-set key once: the steady state a bounded set of keys reaches."""
    spec = _worker_spec(node, options, "Encrypt", "working-set", options.seed)
    primed = pool.submit(run_scale_worker, replace(spec, each_key_once=True)).result()
    if primed.errors:
        report(
            f"    priming {node.result.keys:,} keys: {primed.errors} errors ({primed.first_error})"
        )


def _start(size: int, directory: Path, options: ScaleOptions, report: Report) -> _Node:
    """A fresh node seeded with ``size`` keys, started (start-up timed), left running."""
    result = SizeResult(keys=size)
    report(f"== {size:,} keys")
    # A fresh node's files (PKI, config, schema, root key); seeding needs it stopped.
    cluster.up(directory, [REGION], network="direct")
    cluster.down(directory)
    files = _seed(directory, size, options, result, report)
    result.database_after_seeding_mb = _database_mb(
        cluster.load(directory).regions[REGION].data_dir
    )
    # Started STARTS times (the median is reported): a start-up is mostly Python's
    # imports, which a busy host stretches; the last start serves the load.
    for attempt in range(STARTS):
        started = time.monotonic()
        spec = cluster.start(directory, REGION)
        result.startup_runs_s.append(round(time.monotonic() - started, 2))
        if attempt < STARTS - 1:
            cluster.down(directory)
    result.startup_s = statistics.median(result.startup_runs_s)
    pid = spec.regions[REGION].pid
    assert pid is not None
    result.rss_after_start_mb = memory_mb(pid)
    report(
        f"    seeding {result.seed_keys_per_s:,.0f} keys/s; start-up {result.startup_s} s "
        f"(of {result.startup_runs_s}); RSS after start-up {result.rss_after_start_mb} MiB"
    )
    return _Node(directory=directory, files=files, pid=pid, result=result)


def _finish(node: _Node, options: ScaleOptions) -> None:
    """Fold the rounds' samples into the size's results."""
    for (mode, operation), latencies in node.latencies_s.items():
        cell = (mode, operation)
        stats = summarize(
            mode,
            operation,
            latencies,
            node.errors[cell],
            options.duration_s * len(node.round_p50_ms[cell]),
            node.cpu_s[cell],
        )
        node.result.runs.append({**stats.as_dict(), "round_p50_ms": node.round_p50_ms[cell]})


def measure(
    nodes: Sequence[_Node], options: ScaleOptions, pool: ProcessPoolExecutor, report: Report
) -> None:
    """Every (mode, operation) on every size, in rounds, the sizes interleaved.

    Interleaving is what makes sizes comparable on a shared, noisy host: a burst of
    someone else's load lands on every size alike instead of on the one measured then.
    """
    for node in nodes:
        _prime(pool, node, options, report)
    for round_number in range(options.rounds):
        report(f"== round {round_number + 1} of {options.rounds}")
        for mode in MODES:
            for operation in options.operations:
                # Rotated each round, so no size always goes first after a mode switch.
                order = [*nodes[round_number % len(nodes) :], *nodes[: round_number % len(nodes)]]
                for node in order:
                    _run_once(pool, node, mode, operation, round_number, options, report)
    for node in nodes:
        node.result.rss_after_load_mb = memory_mb(node.pid)
        node.result.rss_peak_mb = memory_mb(node.pid, "VmHWM")
        _finish(node, options)
    if options.fill_caches_keys and nodes:
        _fill_caches(max(nodes, key=lambda node: node.result.keys), options, pool, report)


def _fill_caches(
    node: _Node, options: ScaleOptions, pool: ProcessPoolExecutor, report: Report
) -> None:
    """Encrypt under ``fill_caches_keys`` distinct keys, then read the node's memory."""
    count = min(options.fill_caches_keys, node.result.keys)
    report(f"== filling the caches of the {node.result.keys:,}-key node ({count:,} keys)")
    all_keys = node.files.keys["all-keys"].read_bytes()
    fill = node.directory / "keys-fill.bin"
    fill.write_bytes(all_keys[: count * KEY_ID_BYTES])
    node.files.keys["fill"] = fill
    node.files.ciphertexts["fill"] = node.files.ciphertexts["all-keys"]
    spec = _worker_spec(node, options, "Encrypt", "fill", options.seed)
    started = time.monotonic()
    filled = pool.submit(
        run_scale_worker, replace(spec, each_key_once=True, concurrency=16)
    ).result()
    node.result.rss_full_caches_mb = memory_mb(node.pid)
    node.result.rss_peak_mb = memory_mb(node.pid, "VmHWM")
    report(
        f"    {count:,} keys used in {time.monotonic() - started:.0f} s ({filled.errors} errors);"
        f" RSS {node.result.rss_full_caches_mb} MiB"
    )


def growth(results: Sequence[SizeResult]) -> list[dict[str, Any]]:
    """Each (mode, operation)'s p50 and server CPU per call at every size, against the smallest.

    ``p50_change`` pools every round's calls; ``p50_change_by_round`` is the median of the
    rounds' own ratios (each taken minutes apart from the others, sizes side by side),
    which a burst of load elsewhere on the host moves less. Server CPU per call does not
    depend on how much CPU the node was given, so it shows a cost that grows with the
    key count even when the latency is mostly queueing.
    """
    if not results:
        return []
    base = {(run["target"], run["operation"]): run for run in results[0].runs}
    rows = []
    for result in results[1:]:
        for run in result.runs:
            first = base.get((run["target"], run["operation"]))
            if first is None or not first["p50_ms"]:
                continue
            change = run["p50_ms"] / first["p50_ms"] - 1
            by_round = [
                mine / theirs - 1
                for mine, theirs in zip(run["round_p50_ms"], first["round_p50_ms"], strict=False)
                if theirs
            ]
            cpu, first_cpu = run["server_cpu_ms_per_op"], first["server_cpu_ms_per_op"]
            rows.append(
                {
                    "mode": run["target"],
                    "operation": run["operation"],
                    "from_keys": results[0].keys,
                    "to_keys": result.keys,
                    "p50_change": round(change, 3),
                    "p50_change_by_round": round(statistics.median(by_round), 3)
                    if by_round
                    else None,
                    "server_cpu_change": round(cpu / first_cpu - 1, 3)
                    if cpu and first_cpu
                    else None,
                    "within_target": change <= P50_GROWTH_TARGET,
                }
            )
    return rows


def run(options: ScaleOptions, report: Report = print) -> dict[str, Any]:
    started = time.time()
    base = Path(tempfile.mkdtemp(prefix="meridian-scale-"))
    nodes: list[_Node] = []
    try:
        with _pool(options.processes) as pool:
            try:
                for size in options.sizes:
                    nodes.append(_start(size, base / f"keys-{size}", options, report))
                measure(nodes, options, pool, report)
            finally:
                for node in nodes:
                    cluster.down(node.directory)
                    node.result.database_mb = _database_mb(
                        cluster.load(node.directory).regions[REGION].data_dir
                    )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = [node.result for node in nodes]
    for result in results:
        report(
            f"{result.keys:>9,} keys: RSS after load {result.rss_after_load_mb} MiB "
            f"(peak {result.rss_peak_mb}); database {result.database_mb} MiB"
        )
    document = {
        "started_at": started,
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "options": {
            "sizes": list(options.sizes),
            "operations": list(options.operations),
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "rounds": options.rounds,
            "concurrency": options.concurrency,
            "processes": options.processes,
            "sample_keys": options.sample_keys,
            "ciphertexts_max": options.ciphertexts_max,
            "payload_bytes": options.payload_bytes,
            "fill_caches_keys": options.fill_caches_keys,
        },
        "sizes": [result.__dict__ for result in results],
        "p50_growth": growth(results),
        "p50_growth_target": P50_GROWTH_TARGET,
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(document, indent=2) + "\n")
    return document


def print_table(document: dict[str, Any], report: Report = print) -> None:
    """The summary: one line per size, then each mode and operation across sizes."""
    sizes = document["sizes"]
    report("")
    report(
        f"{'keys':>10} {'seed keys/s':>12} {'start-up s':>11} {'RSS start MiB':>14} "
        f"{'RSS load MiB':>13} {'full caches':>12} {'peak MiB':>9} {'DB seeded':>10} "
        f"{'DB after':>9}"
    )
    for size in sizes:
        full = size.get("rss_full_caches_mb")
        report(
            f"{size['keys']:>10,} {size['seed_keys_per_s']:>12,} {size['startup_s']:>11} "
            f"{size['rss_after_start_mb']:>14} {size['rss_after_load_mb']:>13} "
            f"{'-' if full is None else full:>12} {size['rss_peak_mb']:>9} "
            f"{size.get('database_after_seeding_mb', '-'):>10} {size['database_mb']:>9}"
        )
    report("")
    header = "".join(f"{size['keys']:>26,}" for size in sizes)
    report(f"{'mode':<12} {'operation':<16}{header}")
    report(f"{'':<29}" + f"{'p50 ms/p99 ms/ops/s/cpu ms':>26}" * len(sizes))
    for mode in MODES:
        for operation in document["options"]["operations"]:
            cells = []
            for size in sizes:
                run = next(
                    (
                        r
                        for r in size["runs"]
                        if r["target"] == mode and r["operation"] == operation
                    ),
                    None,
                )
                cells.append(
                    "-"
                    if run is None
                    else f"{run['p50_ms']:.2f}/{run['p99_ms']:.1f}/{run['ops_per_s']:.0f}"
                    f"/{run['server_cpu_ms_per_op'] or 0:.2f}"
                )
            report(f"{mode:<12} {operation:<16}" + "".join(f"{cell:>26}" for cell in cells))
    if document["p50_growth"]:
        report("")
        report(
            f"change from the smallest size (target: p50 at most +{P50_GROWTH_TARGET:.0%}); "
            "p50 pooled, p50 median of rounds, server CPU per call:"
        )
        for row in document["p50_growth"]:
            verdict = "ok" if row["within_target"] else "OVER"
            by_round = row.get("p50_change_by_round")
            cpu = row.get("server_cpu_change")
            report(
                f"  {row['mode']:<12} {row['operation']:<16} {row['from_keys']:,} -> "
                f"{row['to_keys']:,}: p50 {row['p50_change']:+.1%} {verdict}"
                + ("" if by_round is None else f", by round {by_round:+.1%}")
                + ("" if cpu is None else f", cpu {cpu:+.1%}")
            )


def add_arguments(parser: Any) -> None:
    """`meridian bench --scale SIZES` and its own options (the others are the bench's)."""
    parser.add_argument(
        "--scale",
        metavar="SIZES",
        help="instead of the side-by-side run: the scale benchmark, one fresh node seeded "
        "with each number of keys, e.g. 1000,100000,1000000 (uses --duration, --warmup, "
        "--concurrency, --processes)",
    )
    parser.add_argument(
        "--scale-sample-keys",
        type=int,
        default=10_000,
        metavar="KEYS",
        help="keys in the working-set mode (default 10000)",
    )
    parser.add_argument(
        "--scale-rounds",
        type=int,
        default=3,
        metavar="N",
        help="times each (mode, operation, size) is measured, sizes interleaved (default 3)",
    )
    parser.add_argument(
        "--scale-fill-caches",
        type=int,
        default=0,
        metavar="KEYS",
        help="afterwards, use this many distinct keys of the largest size once each and "
        "report its memory with full caches (e.g. 110000; default: skip)",
    )
    parser.add_argument("--scale-output", type=Path, default=Path("bench-results/scale.json"))


def run_from_arguments(args: Any) -> int:
    try:
        sizes = [int(size.replace("_", "")) for size in args.scale.split(",") if size.strip()]
    except ValueError:
        print(f"meridian bench: --scale takes comma-separated key counts, not {args.scale!r}")
        return 2
    if not sizes or any(not 1 <= size <= 10_000_000 for size in sizes):
        print("meridian bench: each --scale size must be 1 to 10000000 keys")
        return 2
    options = ScaleOptions(
        sizes=sizes,
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        processes=args.processes,
        sample_keys=args.scale_sample_keys,
        rounds=max(1, args.scale_rounds),
        fill_caches_keys=max(0, args.scale_fill_caches),
        output=args.scale_output,
    )
    document = run(options)
    print_table(document)
    print(f"\nwritten to {options.output}")
    return 0
