"""`meridian bench`: the side-by-side benchmark (see docs/performance.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_OPERATIONS = (
    "Encrypt,Decrypt,GenerateDataKey,ReEncrypt,GenerateMac,Sign-ECC_NIST_P256,"
    "Verify-ECC_NIST_P256,Sign-ML_DSA_65,Verify-ML_DSA_65,CreateKey"
)
# Per-run defaults, and the shorter ones of --quick (a look in about two minutes).
RUN_DEFAULTS = {"duration": 5.0, "warmup": 1.0}
QUICK_DEFAULTS = {"duration": 1.5, "warmup": 0.5}
DEFAULT_OUTPUT = Path("bench-results/latest.json")
WORKERS_OUTPUT = Path("bench-results/workers.json")
# `--workers` runs without `--operations`: single calls, whose client costs a sixth
# (crypto) to over half (empty call) of the node's CPU, and batches of 100, where the
# node does nearly all the work (so on a small machine a second worker has a core to
# use even with the load generator beside it; docs/performance.md §8).
WORKERS_DEFAULT_OPERATIONS = (
    "Empty,Encrypt,Decrypt,GenerateDataKey,CreateKey,BatchEncrypt,BatchDecrypt,BatchGenerateDataKey"
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark Meridian against the empty-call ceiling and moto",
        description="Starts a local node, measures each operation and the empty gRPC call "
        "(same stack, TLS on) side by side, then moto's KMS server with the same operations.",
    )
    parser.add_argument(
        "--operations",
        "--ops",
        default=DEFAULT_OPERATIONS,
        help=f"comma-separated workloads, or `all` (default: {DEFAULT_OPERATIONS})",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (5)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (1)")
    parser.add_argument("--quick", action="store_true", help="1.5 s runs after 0.5 s of warm-up")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every run this many times, interleaved; the tables show medians",
    )
    parser.add_argument(
        "--payload-bytes", "--payload", type=int, default=1024, help="plaintext/message bytes"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip moto")
    parser.add_argument(
        "--node-workers",
        type=int,
        default=1,
        metavar="N",
        help="run each Meridian node of the side-by-side run as N worker processes "
        "(`workers = N`); the ceiling is measured on the same node",
    )
    parser.add_argument(
        "--open-loop",
        type=float,
        default=0.0,
        metavar="CALLS_PER_S",
        help="start calls at this fixed rate instead of keeping --concurrency in flight: "
        "latency at an equal load for the ceiling and each operation (timed from when "
        "each call was due); the peer is skipped",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the audit-on node (with --workers: each worker) during each "
        "operation; collapsed stacks in DIR",
    )
    parser.add_argument(
        "--no-audit-off",
        action="store_true",
        help="skip the second node with `[audit] enabled = false`",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--workers",
        default=None,
        help="e.g. 1,2,1,2: compare a node run as that many worker processes "
        "(cli/bench/workers_scaling.py) instead of the side-by-side run; without "
        f"--operations it runs {WORKERS_DEFAULT_OPERATIONS}",
    )
    # `--scale 1000,100000,1000000`: keys in a region (cli/bench/scale.py).
    from meridian.cli.bench import scale

    scale.add_arguments(parser)
    # `--replication`: lag and catch-up on a two-region cluster (cli/bench/replication.py).
    from meridian.cli.bench import replication

    replication.add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.replication:
        from meridian.cli.bench import replication

        return replication.run_from_bench(args, default_output=DEFAULT_OUTPUT)
    for name, value in (QUICK_DEFAULTS if args.quick else RUN_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.workers:
        return _run_workers(args)
    if args.scale:
        from meridian.cli.bench import scale

        return scale.run_from_arguments(args)
    from meridian.cli.bench.batches import batch_summary
    from meridian.cli.bench.display import Display, per_target, side_by_side, targets_table
    from meridian.cli.bench.runner import BenchOptions, run
    from meridian.cli.bench.workloads import WORKLOADS, workload

    operations = [name.strip() for name in args.operations.split(",") if name.strip()]
    if [name.lower() for name in operations] == ["all"]:
        operations = [w.name for w in WORKLOADS if w.name != "Empty"]
    try:
        for name in operations:
            workload(name)
    except ValueError as error:
        print(f"meridian bench: {error}")
        return 2
    from meridian.server.config import WORKERS_MAX

    if not 1 <= args.node_workers <= WORKERS_MAX:
        print(f"meridian bench: --node-workers takes 1 to {WORKERS_MAX}")
        return 2
    if args.open_loop < 0:
        print("meridian bench: --open-loop takes a rate of calls per second above 0")
        return 2
    if args.profile is not None and args.profile.exists() and not args.profile.is_dir():
        # Found before minutes of benchmarking, not by a traceback at the first profile.
        print(f"meridian bench: --profile {args.profile} exists and is not a folder")
        return 2
    options = BenchOptions(
        operations=[workload(name).name for name in operations],
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        processes=args.processes,
        payload_bytes=args.payload_bytes,
        peer=not args.no_peer,
        audit_off=not args.no_audit_off,
        rounds=max(1, args.rounds),
        profile_dir=args.profile,
        output=args.output,
        open_loop_rate=args.open_loop,
        node_workers=args.node_workers,
    )
    display = Display()
    document = run(options, display)
    display.console.print()
    display.console.print(per_target(document["results"]))
    display.console.print(side_by_side(document))
    if document["targets"]:
        display.console.print(targets_table(document["targets"]))
    display.note(
        "of ceiling: ops/s as a fraction of the empty gRPC call's; on / off: audit on as a "
        "fraction of audit off; n/a: the peer has no such operation"
    )
    for line in batch_summary(document["ratios"]):
        display.note(line)
    display.note(f"written to {options.output}")
    errors = sum(result["errors"] for result in document["results"])
    return 1 if errors else 0


def _run_workers(args: argparse.Namespace) -> int:
    from meridian.cli.bench.workers_report import TABLE_NOTE, summarize_operations, table_lines
    from meridian.cli.bench.workers_scaling import ScalingOptions, run_scaling
    from meridian.cli.bench.workloads import workload

    named = args.operations if args.operations != DEFAULT_OPERATIONS else None
    try:
        counts = [int(value) for value in args.workers.split(",") if value.strip()]
        if not counts or any(count < 1 for count in counts):
            raise ValueError("--workers takes worker counts of 1 or more, e.g. 1,2")
        operations = [
            workload(name.strip()).name
            for name in (named or WORKERS_DEFAULT_OPERATIONS).split(",")
            if name.strip()
        ]
    except ValueError as error:
        print(f"meridian bench: {error}")
        return 2
    if args.profile is not None and args.profile.exists() and not args.profile.is_dir():
        print(f"meridian bench: --profile {args.profile} exists and is not a folder")
        return 2
    options = ScalingOptions(
        workers=counts,
        operations=operations,
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        processes=args.processes,
        payload_bytes=args.payload_bytes,
        # Its own file unless one is named: it is a different document.
        output=args.output if args.output != DEFAULT_OUTPUT else WORKERS_OUTPUT,
        profile_dir=args.profile,
    )
    document = run_scaling(options)
    print()
    cores = document["machine"]["cores"]
    for line in table_lines(summarize_operations(document["results"], cores), cores):
        print(line)
    print(f"\n{TABLE_NOTE}")
    print(f"\nwritten to {options.output}")
    errors = sum(row["errors"] for row in document["results"])
    return 1 if errors else 0
