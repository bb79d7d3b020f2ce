"""What auditing costs: the same workload against a node with the audit trail on and off.

Starts a real node process per run (mTLS, synchronous=FULL, the default group commit),
drives it from separate load-generator processes (meridian.cli.bench.loadgen), and
alternates "off" and "on" runs so that a noisy machine affects both alike. Prints a
table and writes the figures as JSON.

    scripts/bench-audit [--duration 5] [--rounds 2] [--concurrency 64] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meridian.cli import pki
from meridian.cli.bench.loadgen import GrpcWorkerSpec, WorkerResult, run_grpc_worker
from meridian.cli.bench.runner import server_cpu_s
from meridian.cli.bench.stats import summarize
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc

REGION = "us-east-1"
SERVER_NAME = f"{REGION}.node.meridian"
SERVICE = "/meridian.kms.v1.KeyManagementService/"
READY_TIMEOUT_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs per workload")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight per process")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--workloads", default="Encrypt,CreateKey", help="comma-separated")
    parser.add_argument("--output", type=Path, default=Path("bench-results/audit.json"))
    args = parser.parse_args()
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]

    with tempfile.TemporaryDirectory(prefix="meridian-bench-audit-") as scratch:
        root = Path(scratch)
        pki.init_ca(root / "pki")
        pki.issue_node(root / "pki", REGION, ips=["127.0.0.1"])
        pki.issue_client(root / "pki", "admin")
        runs: list[dict[str, Any]] = []
        for workload in workloads:
            for round_number in range(args.rounds):
                for audit in (False, True):
                    run = _run(root, workload, audit, round_number, args)
                    runs.append(run)
                    print(
                        f"  {workload:<10} audit {'on ' if audit else 'off'} round {round_number}: "
                        f"{run['ops_per_s']:>9.1f} ops/s  p50 {run['p50_ms']:.2f} ms  "
                        f"p99 {run['p99_ms']:.2f} ms  errors {run['errors']}",
                        flush=True,
                    )
    summary = _summary(runs, workloads)
    document = {
        "benchmark": "audit trail on vs off",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "processes": args.processes,
        },
        "summary": summary,
        "runs": runs,
    }
    print()
    print(f"{'workload':<10} {'off ops/s':>10} {'on ops/s':>10} {'on/off':>7} "
          f"{'off p99':>9} {'on p99':>9} {'cpu/op off':>11} {'cpu/op on':>10}")  # fmt: skip
    for row in summary:
        print(
            f"{row['workload']:<10} {row['off_ops_per_s']:>10.1f} {row['on_ops_per_s']:>10.1f} "
            f"{row['throughput_ratio']:>7.3f} {row['off_p99_ms']:>8.2f}ms "
            f"{row['on_p99_ms']:>8.2f}ms {row['off_cpu_ms_per_op']:>9.3f}ms "
            f"{row['on_cpu_ms_per_op']:>8.3f}ms"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.output}")
    return 0


def _run(
    root: Path, workload: str, audit: bool, round_number: int, args: argparse.Namespace
) -> dict[str, Any]:
    name = f"{workload}-{'on' if audit else 'off'}-{round_number}"
    directory = root / name
    directory.mkdir()
    port = _free_port()
    config = directory / "node.toml"
    config.write_bytes(
        tomli_w.dumps(
            {
                "region": REGION,
                "listen": f"127.0.0.1:{port}",
                "data_dir": str(directory / "data"),
                "tls": {
                    "ca_cert": str(root / "pki" / "ca.pem"),
                    "cert": str(root / "pki" / "nodes" / f"{REGION}.pem"),
                    "key": str(root / "pki" / "nodes" / f"{REGION}.key"),
                },
                "log": {"level": "warning"},
                "audit": {"enabled": audit},
            }
        ).encode()
    )
    log = (directory / "node.log").open("wb")
    node = subprocess.Popen(
        [str(Path(sys.executable).parent / "meridian"), "node", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        endpoint = f"127.0.0.1:{port}"
        credentials = _credentials(root)
        _wait_ready(endpoint, credentials, node)
        request = _request(workload, endpoint, credentials)
        spec = GrpcWorkerSpec(
            endpoint=endpoint,
            server_name=SERVER_NAME,
            ca_cert=(root / "pki" / "ca.pem").read_bytes(),
            client_cert=(root / "pki" / "clients" / "admin.pem").read_bytes(),
            client_key=(root / "pki" / "clients" / "admin.key").read_bytes(),
            method=SERVICE + workload,
            request=request,
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
        )
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.processes, mp_context=context) as pool:
            futures = [pool.submit(run_grpc_worker, spec) for _ in range(args.processes)]
            time.sleep(args.warmup + 0.5)  # the workers connect, warm up, then measure
            cpu_before = server_cpu_s(node.pid)
            results: list[WorkerResult] = [future.result() for future in futures]
            cpu_after = server_cpu_s(node.pid)
        latencies = [sample for result in results for sample in result.latencies_s]
        errors = sum(result.errors for result in results)
        stats = summarize(
            "audit-on" if audit else "audit-off",
            workload,
            latencies,
            errors,
            args.duration,
            cpu_after - cpu_before,
        )
        row = stats.as_dict()
        row.update(audit=audit, round=round_number)
        first_error = next((r.first_error for r in results if r.first_error), "")
        if first_error:
            row["first_error"] = first_error
        return row
    finally:
        node.terminate()
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        log.close()


def _summary(runs: list[dict[str, Any]], workloads: list[str]) -> list[dict[str, Any]]:
    rows = []
    for workload in workloads:

        def median(audit: bool, field: str, workload: str = workload) -> float:
            values = [r[field] for r in runs if r["operation"] == workload and r["audit"] is audit]
            values = [value for value in values if value is not None]
            return float(statistics.median(values)) if values else float("nan")

        off, on = median(False, "ops_per_s"), median(True, "ops_per_s")
        rows.append(
            {
                "workload": workload,
                "off_ops_per_s": off,
                "on_ops_per_s": on,
                "throughput_ratio": round(on / off, 4) if off else float("nan"),
                "off_p50_ms": median(False, "p50_ms"),
                "on_p50_ms": median(True, "p50_ms"),
                "off_p99_ms": median(False, "p99_ms"),
                "on_p99_ms": median(True, "p99_ms"),
                "off_cpu_ms_per_op": median(False, "server_cpu_ms_per_op"),
                "on_cpu_ms_per_op": median(True, "server_cpu_ms_per_op"),
            }
        )
    return rows


def _request(workload: str, endpoint: str, credentials: grpc.ChannelCredentials) -> bytes:
    if workload == "CreateKey":
        return pb.CreateKeyRequest(description="bench").SerializeToString()
    with _channel(endpoint, credentials) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        arn = stub.CreateKey(pb.CreateKeyRequest(description="bench")).key_metadata.arn
    if workload == "Encrypt":
        return pb.EncryptRequest(key_id=arn, plaintext=os.urandom(1024)).SerializeToString()
    if workload == "GenerateDataKey":
        return pb.GenerateDataKeyRequest(key_id=arn, key_spec="AES_256").SerializeToString()
    if workload == "DescribeKey":
        return pb.DescribeKeyRequest(key_id=arn).SerializeToString()
    raise SystemExit(
        f"unknown workload {workload!r} (Encrypt, CreateKey, GenerateDataKey, DescribeKey)"
    )


def _credentials(root: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(root / "pki" / "ca.pem").read_bytes(),
        private_key=(root / "pki" / "clients" / "admin.key").read_bytes(),
        certificate_chain=(root / "pki" / "clients" / "admin.pem").read_bytes(),
    )


def _channel(endpoint: str, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(
        endpoint, credentials, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
    )


def _wait_ready(
    endpoint: str, credentials: grpc.ChannelCredentials, node: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"the node exited with {node.returncode}")
        try:
            with _channel(endpoint, credentials) as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            time.sleep(0.1)
    raise SystemExit("the node did not become ready")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
