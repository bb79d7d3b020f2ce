"""`meridian cluster`: run a local multi-region cluster (one node process per region)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meridian.cli import cluster, cluster_inspect, cluster_link_cmd

_EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="run a local multi-region cluster",
        description=(
            "Run a local multi-region cluster: one node process per region on its own "
            "loopback address, a development PKI, data and logs under DIR, and "
            "DIR/cluster.json naming every region's endpoint and credentials."
        ),
    )
    commands = parser.add_subparsers(dest="cluster_command", metavar="COMMAND")
    commands.required = True

    up = commands.add_parser("up", help="create (or restart) the cluster and wait until healthy")
    up.add_argument(
        "--regions",
        required=True,
        type=_region_list,
        metavar="A,B,...",
        help="comma-separated regions; the first is the default home region",
    )
    _add_dir(up)
    up.add_argument(
        "--base-address",
        default=cluster.BASE_ADDRESS_DEFAULT,
        help="loopback address of the first region; the next ones count up from it",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=cluster.READY_TIMEOUT_S_DEFAULT,
        metavar="SECONDS",
        help="how long to wait for every node to be SERVING",
    )
    up.add_argument(
        "--network",
        metavar="KIND|FILE",
        help=(
            "how clients and regions are linked: 'geography' (a new cluster's default: "
            "a proxy per link with realistic delays), 'flat' (proxies without delay), "
            "'direct' (no proxies) or a network file (TOML); a restart keeps the old one"
        ),
    )
    up.add_argument(
        "--hsm-region",
        action="append",
        default=[],
        metavar="REGION",
        help="keep this region's root key in a SoftHSM2 token (repeatable; docs/hsm.md)",
    )
    up.set_defaults(func=_up)

    status = commands.add_parser(
        "status", help="each region's process, health, keys and replication lag; the links"
    )
    _add_dir(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    down = commands.add_parser("down", help="stop every node (SIGTERM, then SIGKILL)")
    _add_dir(down)
    down.set_defaults(func=_down)

    kill = commands.add_parser("kill", help="SIGKILL one region's node (a crash drill)")
    kill.add_argument("region", metavar="REGION")
    _add_dir(kill)
    kill.set_defaults(func=_kill)

    start = commands.add_parser("start", help="start one region's node again on its data")
    start.add_argument("region", metavar="REGION")
    _add_dir(start)
    start.add_argument(
        "--timeout",
        type=float,
        default=cluster.READY_TIMEOUT_S_DEFAULT,
        metavar="SECONDS",
        help="how long to wait for the node to be SERVING",
    )
    start.set_defaults(func=_start)

    cluster_link_cmd.register(commands)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path, help="the cluster's folder")


def _region_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _progress(message: str) -> None:
    # Progress goes to stderr so that stdout carries only the result.
    print(message, file=sys.stderr, flush=True)


def _run(name: str, action: Callable[[], None]) -> int:
    """Run one sub-command: operator errors become one line on stderr and exit code 1."""
    try:
        action()
    except cluster.ClusterError as error:
        print(f"meridian cluster {name}: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # A file system error (DIR is a file, no permission, disk full) is the operator's
        # to fix, and its message names the path; a traceback would add nothing.
        print(f"meridian cluster {name}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"meridian cluster {name}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    return 0


def _up(args: argparse.Namespace) -> int:
    def action() -> None:
        spec = cluster.up(
            args.dir,
            args.regions,
            base_address=args.base_address,
            network=args.network,
            ready_timeout_s=args.timeout,
            hsm_regions=args.hsm_region,
            report=_progress,
        )
        _print_table(cluster.status(spec.directory))
        print(f"cluster file: {spec.path}")

    return _run("up", action)


def _status(args: argparse.Namespace) -> int:
    def action() -> None:
        # Health, keys, replication lag and the network: cli/cluster_inspect.py.
        report = cluster_inspect.inspect(args.dir)
        if args.json:
            print(json.dumps(cluster_inspect.to_json(report), indent=2))
        else:
            print("\n".join(cluster_inspect.render(report)))

    return _run("status", action)


def _down(args: argparse.Namespace) -> int:
    def action() -> None:
        for region, outcome in cluster.down(args.dir, report=_progress).items():
            print(f"{region}: {outcome}")

    return _run("down", action)


def _kill(args: argparse.Namespace) -> int:
    def action() -> None:
        pid = cluster.kill(args.dir, args.region, report=_progress)
        print(f"{args.region}: killed pid {pid}")

    return _run("kill", action)


def _start(args: argparse.Namespace) -> int:
    def action() -> None:
        spec = cluster.start(args.dir, args.region, ready_timeout_s=args.timeout, report=_progress)
        entry = spec.regions[args.region]
        print(f"{args.region}: SERVING (pid {entry.pid} on {entry.endpoint})")

    return _run("start", action)


def _print_table(statuses: list[cluster.RegionStatus]) -> None:
    header = ("REGION", "PID", "ALIVE", "HEALTH", "ENDPOINT")
    rows = [
        (
            item.region,
            "-" if item.pid is None or not item.alive else str(item.pid),
            "yes" if item.alive else "no",
            item.health,
            item.endpoint,
        )
        for item in statuses
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for item in statuses:
        if item.note:
            print(f"note: {item.region}: {item.note}")
