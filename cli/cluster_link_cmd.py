"""`meridian cluster link|links|proxy`: the emulated network of a local cluster.

meridian cluster link us-east-1 eu-west-1 --latency-ms 80 --dir DIR
meridian cluster link eu-west-1 all --partition --dir DIR     (cut off from its peers)
meridian cluster link client us-east-1 --heal --dir DIR
meridian cluster link all all --restore --dir DIR             (undo every change)
meridian cluster links --dir DIR                               (shapes and counters)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from meridian.cli import cluster_network
from meridian.cli.cluster_state import ClusterError
from meridian.cli.netem.shape import ShapeChange, ShapeError


def register(commands: argparse._SubParsersAction[Any]) -> None:
    link = commands.add_parser(
        "link",
        help="change a link at run time (latency, jitter, loss, bandwidth, partition)",
        description=(
            "Change the emulated link between two sides at run time: two regions, "
            "'client' and a region, or 'all' for every region. Changes apply at once "
            "to new bytes on open connections. With no change given, shows the link."
        ),
    )
    link.add_argument("one", metavar="SIDE", help="a region, 'client' or 'all'")
    link.add_argument("other", metavar="SIDE", help="a region, 'client' or 'all'")
    _add_dir(link)
    link.add_argument("--latency-ms", type=float, help="one-way delay in each direction")
    link.add_argument("--jitter-ms", type=float, help="+/- variation of the delay")
    link.add_argument("--loss", type=float, metavar="PERCENT", help="segment loss in percent")
    link.add_argument(
        "--bandwidth-kbps", type=float, help="kilobits per second per direction (0: unlimited)"
    )
    fault = link.add_mutually_exclusive_group()
    fault.add_argument("--partition", action="store_true", help="cut the link")
    fault.add_argument("--heal", action="store_true", help="lift a partition")
    fault.add_argument(
        "--restore", action="store_true", help="back to the configured shape (undo all changes)"
    )
    link.set_defaults(func=_link)

    links = commands.add_parser("links", help="show every link: its shape and traffic")
    _add_dir(links)
    links.add_argument("--json", action="store_true", help="machine-readable output")
    links.set_defaults(func=_links)

    proxy = commands.add_parser(
        "proxy", help="run the cluster's link proxy in the foreground (`up` starts it)"
    )
    _add_dir(proxy)
    proxy.set_defaults(func=_proxy)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path, help="the cluster's folder")


def _fail(name: str, error: Exception) -> int:
    print(f"meridian cluster {name}: {error}", file=sys.stderr)
    return 1


def _link(args: argparse.Namespace) -> int:
    try:
        change = ShapeChange(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            loss_percent=args.loss,
            bandwidth_kbps=args.bandwidth_kbps,
            partitioned=True if args.partition else False if args.heal else None,
        )
        if change.is_empty and not args.restore:
            rows = cluster_network.links_report(args.dir, args.one, args.other)
        else:
            rows = cluster_network.change_links(
                args.dir,
                args.one,
                args.other,
                change,
                restore=args.restore,
                report=lambda line: print(line, file=sys.stderr),
            )
    except (ClusterError, ShapeError, OSError) as error:
        return _fail("link", error)
    for row in rows:
        print(f"{row.link}: {row.current.describe()}")
    return 0


def _links(args: argparse.Namespace) -> int:
    try:
        rows = cluster_network.links_report(args.dir)
    except (ClusterError, OSError) as error:
        return _fail("links", error)
    if args.json:
        document = {
            str(row.link): {
                "configured": row.configured.to_json(),
                "current": row.current.to_json(),
                "stats": row.stats,
            }
            for row in rows
        }
        print(json.dumps({"links": document}, indent=2))
        return 0
    if not rows:
        print("this cluster's links are direct (no link proxy)")
        return 0
    width = max(len(str(row.link)) for row in rows)
    print(f"{'LINK'.ljust(width)}  {'CONNECTIONS':>11}  SHAPE")
    for row in rows:
        stats = row.stats or {}
        connections = str(stats.get("connections_open", "-"))
        changed = "" if row.current == row.configured else "  (changed)"
        print(f"{str(row.link).ljust(width)}  {connections:>11}  {row.current.describe()}{changed}")
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from meridian.cli import proxy_main

    return proxy_main.run(args.dir)
