"""`meridian bench`: the side-by-side benchmark (see docs/performance.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_OPERATIONS = "Encrypt,Decrypt,GenerateDataKey,ReEncrypt,CreateKey"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark Meridian against the empty-call ceiling and moto",
        description="Starts a local node, measures each operation and the empty gRPC call "
        "(same stack, TLS on) side by side, then moto's KMS server with the same operations.",
    )
    parser.add_argument("--operations", default=DEFAULT_OPERATIONS, help="comma-separated")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--no-peer", action="store_true", help="skip moto")
    parser.add_argument("--output", type=Path, default=Path("bench-results/latest.json"))
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from meridian.cli.bench.runner import BenchOptions, run
    from meridian.cli.bench.workloads import workload

    operations = [name.strip() for name in args.operations.split(",") if name.strip()]
    try:
        for name in operations:
            workload(name)
    except ValueError as error:
        print(f"meridian bench: {error}")
        return 2
    options = BenchOptions(
        operations=[workload(name).name for name in operations],
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        processes=args.processes,
        payload_bytes=args.payload_bytes,
        peer=not args.no_peer,
        output=args.output,
    )
    document = run(options)
    print()
    header = ("operation", "meridian ops/s", "of ceiling", "p99/ceil p99", "vs moto")
    print(f"{header[0]:<16} {header[1]:>15} {header[2]:>11} {header[3]:>13} {header[4]:>8}")
    by_key = {(r["target"], r["operation"]): r for r in document["results"]}
    for operation, row in document["ratios"].items():
        ops = by_key[("meridian", operation)]["ops_per_s"]
        print(
            f"{operation:<16} {ops:>15.1f} {row.get('of_ceiling', float('nan')):>11.2f}"
            f" {row.get('p99_vs_ceiling_p99', float('nan')):>13.2f}"
            f" {row.get('vs_moto', float('nan')):>8.1f}"
        )
    print(f"\nwritten to {options.output}")
    return 0
