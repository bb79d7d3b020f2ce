"""Runs the side-by-side benchmark: the empty-call ceiling, Meridian, and moto's KMS.

All targets run on this machine in the same run, so the ratios hold even on a shared,
noisy host. Load comes from separate processes; the server's CPU per operation is read
from /proc before and after each run.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meridian.cli import cluster
from meridian.cli.bench.loadgen import (
    BotoWorkerSpec,
    GrpcWorkerSpec,
    WorkerResult,
    run_boto_worker,
    run_grpc_worker,
)
from meridian.cli.bench.stats import RunStats, summarize
from meridian.cli.bench.workloads import Prepared, Workload, workload

REGION = "us-east-1"
Report = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    operations: Sequence[str]
    duration_s: float = 5.0
    warmup_s: float = 1.0
    concurrency: int = 32
    processes: int = 1
    payload_bytes: int = 1024
    peer: bool = True
    output: Path = Path("bench-results/latest.json")


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


def run_grpc(
    options: BenchOptions,
    target: str,
    spec: dict[str, Any],
    pid: int,
    work: Workload,
    prepared: Prepared,
    report: Report,
) -> RunStats:
    per_process = max(1, options.concurrency // options.processes)
    worker = GrpcWorkerSpec(
        method=work.method,
        request=work.build(prepared).SerializeToString(),
        concurrency=per_process,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        **spec,
    )
    with _pool(options.processes) as pool:
        futures = [pool.submit(run_grpc_worker, worker) for _ in range(options.processes)]
        time.sleep(options.warmup_s + 0.2)
        cpu_before = server_cpu_s(pid)
        results = [future.result() for future in futures]
        cpu_after = server_cpu_s(pid)
    merged = _merge(results)
    stats = summarize(
        target,
        work.name,
        merged.latencies_s,
        merged.errors,
        options.duration_s,
        cpu_after - cpu_before,
    )
    report(_line(stats) + (f"  first error: {merged.first_error}" if merged.first_error else ""))
    return stats


def _line(stats: RunStats) -> str:
    return (
        f"  {stats.target:<18} {stats.operation:<16} {stats.ops_per_s:>9.1f} ops/s"
        f"  p50 {stats.p50_ms:7.3f} ms  p99 {stats.p99_ms:7.3f} ms  errors {stats.errors}"
    )


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


def _prepare_meridian(directory: Path, payload: bytes) -> Prepared:
    from meridian.client import KmsClient

    with KmsClient.from_cluster_file(directory / "cluster.json") as kms:
        key_id = kms.create_key(description="bench").key_metadata.key_id
        blob = kms.encrypt(key_id=key_id, plaintext=payload).ciphertext_blob
    return Prepared(key_id=key_id, ciphertext_blob=blob, payload=payload)


def run_meridian(options: BenchOptions, directory: Path, report: Report) -> list[RunStats]:
    report(f"starting a Meridian node in {directory}")
    # Direct: the benchmark measures the node, not the fault-injecting link proxy.
    cluster.up(directory, [REGION], network="direct")
    try:
        spec, pid = _meridian_spec(directory)
        prepared = _prepare_meridian(directory, os.urandom(options.payload_bytes))
        results = [
            run_grpc(options, "ceiling (empty)", spec, pid, workload("Empty"), prepared, report)
        ]
        for name in options.operations:
            results.append(
                run_grpc(options, "meridian", spec, pid, workload(name), prepared, report)
            )
        return results
    finally:
        cluster.down(directory)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_moto(options: BenchOptions, report: Report) -> list[RunStats]:
    try:
        import boto3
    except ImportError:
        report("  moto/boto3 not installed: `pip install -e '.[bench]'` to compare with the peer")
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
        for _ in range(100):
            try:
                key_id = client.create_key()["KeyMetadata"]["KeyId"]
                break
            except Exception:  # the server is still starting
                time.sleep(0.1)
        else:
            report("  moto did not start; skipping the peer")
            return []
        payload = os.urandom(options.payload_bytes)
        blob = client.encrypt(KeyId=key_id, Plaintext=payload)["CiphertextBlob"]
        peer = {"key_id": key_id, "payload": payload, "ciphertext_blob": blob}
        results = []
        for name in options.operations:
            work = workload(name)
            if work.boto_operation is None or work.boto_parameters is None:
                continue
            spec = BotoWorkerSpec(
                endpoint_url=endpoint,
                region=REGION,
                operation=work.boto_operation,
                parameters=work.boto_parameters(peer),
                concurrency=min(options.concurrency, 16),
                duration_s=options.duration_s,
                warmup_s=options.warmup_s,
            )
            with _pool(1) as pool:
                future = pool.submit(run_boto_worker, spec)
                time.sleep(options.warmup_s + 0.2)
                cpu_before = server_cpu_s(server.pid)
                result = future.result()
                cpu_after = server_cpu_s(server.pid)
            stats = summarize(
                "moto",
                work.name,
                result.latencies_s,
                result.errors,
                options.duration_s,
                cpu_after - cpu_before,
            )
            report(_line(stats))
            results.append(stats)
        return results
    finally:
        server.terminate()
        server.wait(timeout=10)


def ratios(results: Sequence[RunStats]) -> dict[str, dict[str, float]]:
    """Each Meridian operation as a fraction of the ceiling and a multiple of moto."""
    ceiling = next((r for r in results if r.operation == "Empty"), None)
    by_target = {(r.target, r.operation): r for r in results}
    table: dict[str, dict[str, float]] = {}
    for result in results:
        if result.target != "meridian":
            continue
        row: dict[str, float] = {}
        if ceiling and ceiling.ops_per_s:
            row["of_ceiling"] = round(result.ops_per_s / ceiling.ops_per_s, 3)
            if ceiling.p99_ms:
                row["p99_vs_ceiling_p99"] = round(result.p99_ms / ceiling.p99_ms, 2)
        peer = by_target.get(("moto", result.operation))
        if peer and peer.ops_per_s:
            row["vs_moto"] = round(result.ops_per_s / peer.ops_per_s, 1)
        table[result.operation] = row
    return table


def run(options: BenchOptions, report: Report = print) -> dict[str, Any]:
    started = time.time()
    directory = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
    try:
        report(
            f"== Meridian and the empty-call ceiling ({options.concurrency} in flight, "
            f"{options.processes} load process(es), {options.duration_s:g} s per run)"
        )
        results = run_meridian(options, directory, report)
        if options.peer:
            report("== moto's KMS (the peer), same operations")
            results += run_moto(options, report)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    document = {
        "started_at": started,
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "options": {
            "duration_s": options.duration_s,
            "concurrency": options.concurrency,
            "processes": options.processes,
            "payload_bytes": options.payload_bytes,
        },
        "results": [r.as_dict() for r in results],
        "ratios": ratios(results),
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(document, indent=2) + "\n")
    return document
