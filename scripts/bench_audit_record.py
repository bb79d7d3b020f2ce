"""What one audit record costs in CPU, without gRPC: the audit hook on a real trail.

Runs the ``AuditHook.after`` of a realistic Encrypt call (an ARN, an encryption context,
the authorization facts the authorizer leaves) against a real ``AuditTrail`` on a SQLite
file in a temporary directory, in two shapes: single calls (``--concurrency`` at a time)
and batches of ``--batch`` items (``after_items``, as BatchEncrypt does). It prints, per
record, the CPU of the event-loop thread, of the whole process (so the commit thread is
included) and the wall time, and writes them to ``--output`` (JSON). The machine may be
busy: compare runs made one right after the other, and prefer the CPU figures.

    .venv/bin/python scripts/bench_audit_record.py [--records 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.audit_hook import FACT_RECEIVED_AT, AuditHook
from meridian.server.api.interceptor import CallInfo
from meridian.server.audit.settings import AuditSettings
from meridian.server.audit.trail import AuditTrail
from meridian.server.domain.clock import SystemClock
from meridian.server.domain.crypto.rootkey import FileRootKeyProvider
from meridian.server.domain.model import Caller
from meridian.server.storage.audit_store import SqliteAuditStorage
from meridian.server.storage.store import SqliteStore

ACCOUNT = "111122223333"
REGION = "us-east-1"
KEY_ARN = f"arn:meridian:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PRINCIPAL = f"arn:meridian:iam::{ACCOUNT}:user/bench"


def _call(index: int, clock: SystemClock) -> tuple[CallInfo, Any, None]:
    request = pb.EncryptRequest(
        key_id=KEY_ARN, plaintext=b"p" * 64, encryption_context={"purpose": "bench"}
    )
    response = pb.EncryptResponse(
        ciphertext_blob=b"c" * 180, key_id=KEY_ARN, encryption_algorithm="SYMMETRIC_DEFAULT"
    )
    facts: dict[str, Any] = {
        FACT_RECEIVED_AT: clock.now(),
        "user_agent": "grpc-python-asyncio/1.70.0 grpc-c/45.0.0 (linux; chttp2)",
        "key_arn": KEY_ARN,
        "authorization": {
            "decision": "allow",
            "action": "kms:Encrypt",
            "resource": KEY_ARN,
            "matched": [{"source": "KeyPolicy", "policy": "default", "sid": "Enable IAM"}],
            "reason": "allowed by policy",
        },
    }
    call = CallInfo(
        operation="Encrypt",
        request=request,
        caller=Caller(PRINCIPAL),
        request_id=f"bench-{index}",
        source_address="ipv4:127.0.0.1:50000",
        started=time.perf_counter(),
        facts=facts,
    )
    return call, response, None


async def _lookup(alias: str) -> str | None:
    return None


async def _measure(
    hook: AuditHook, records: int, *, batch: int, concurrency: int
) -> dict[str, float]:
    clock = SystemClock()
    calls = [_call(index, clock) for index in range(records)]
    cpu_loop = time.thread_time()
    cpu_process = time.process_time()
    wall = time.perf_counter()
    if batch > 1:
        for start in range(0, records, batch):
            failures = await hook.after_items(calls[start : start + batch])
            assert not any(failures), failures
    else:
        for start in range(0, records, concurrency):
            await asyncio.gather(
                *(
                    hook.after(call, response, error)
                    for call, response, error in calls[start : start + concurrency]
                )
            )
    wall = time.perf_counter() - wall
    return {
        "loop_cpu_us_per_record": (time.thread_time() - cpu_loop) / records * 1e6,
        "process_cpu_us_per_record": (time.process_time() - cpu_process) / records * 1e6,
        "wall_us_per_record": wall / records * 1e6,
    }


async def _run(arguments: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"single": [], "batch": []}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "meridian.sqlite3"
        store = await SqliteStore.open(path)
        await store.close()
        storage = await SqliteAuditStorage.open(path)
        trail = await AuditTrail.open(
            storage=storage,
            settings=AuditSettings(),
            region=REGION,
            account_id=ACCOUNT,
            clock=SystemClock(),
            root_key=FileRootKeyProvider.open_or_create(Path(directory) / "root.key"),
            randbytes=os.urandom,
        )
        await trail.start()
        hook = AuditHook(
            trail, region=REGION, account_id=ACCOUNT, clock=SystemClock(), alias_lookup=_lookup
        )
        try:
            await _measure(
                hook, min(arguments.records, 2000), batch=1, concurrency=arguments.concurrency
            )
            for _ in range(arguments.rounds):
                results["single"].append(
                    await _measure(
                        hook, arguments.records, batch=1, concurrency=arguments.concurrency
                    )
                )
                results["batch"].append(
                    await _measure(hook, arguments.records, batch=arguments.batch, concurrency=1)
                )
        finally:
            await trail.close()
            await storage.close()
    summary = {
        shape: {name: statistics.median(run[name] for run in runs) for name in runs[0]}
        for shape, runs in results.items()
    }
    return {
        "benchmark": "audit-record",
        "when": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "records": arguments.records,
        "rounds": arguments.rounds,
        "concurrency": arguments.concurrency,
        "batch": arguments.batch,
        "median": summary,
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--output", type=Path, default=Path("bench-results/audit-record.json"))
    arguments = parser.parse_args()
    report = asyncio.run(_run(arguments))
    for shape, figures in report["median"].items():
        print(
            f"{shape:>6}: event loop {figures['loop_cpu_us_per_record']:6.1f} us CPU/record, "
            f"process {figures['process_cpu_us_per_record']:6.1f} us CPU/record, "
            f"wall {figures['wall_us_per_record']:6.1f} us/record"
        )
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {arguments.output}")


if __name__ == "__main__":
    main()
