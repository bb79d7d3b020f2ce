"""`meridian drill NAME --dir DIR`: rehearse a region failure against a running cluster.

Prints a summary, and writes a JSON report and a PNG timeline when asked. Exit codes:
0 the checks of DESIGN.md section 7 held, 1 they did not (or the drill could not run),
3 the drill was skipped because the cluster lacks what it needs (the reason is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from meridian.cli.cluster_state import ClusterError

EXIT_SKIPPED = 3


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    from meridian.cli.drill.drills import DRILLS

    parser = subparsers.add_parser(
        "drill",
        help="region-outage drills against a running local cluster",
        description=(
            "Run a client workload against the running cluster, inject a fault, heal, and "
            "check what still worked: "
            + "; ".join(f"{drill.name}: {drill.summary}" for drill in DRILLS.values())
        ),
    )
    parser.add_argument("name", choices=sorted(DRILLS), metavar="NAME", help=", ".join(DRILLS))
    parser.add_argument("--dir", required=True, type=Path, help="the cluster's folder")
    parser.add_argument(
        "--target", metavar="REGION", help="the region to fault (default: the first)"
    )
    parser.add_argument("--short", action="store_true", help="2 s + 3 s + 3 s phases (tests)")
    parser.add_argument("--baseline-s", type=float, help="workload before the fault (default 5)")
    parser.add_argument("--fault-s", type=float, help="how long the fault lasts (default 10)")
    parser.add_argument("--recovery-s", type=float, help="workload after the heal (default 10)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the JSON report here")
    parser.add_argument("--png", type=Path, metavar="FILE", help="write the PNG timeline here")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from meridian.cli.drill import drills, report, timeline

    durations = drills.Durations.short() if args.short else drills.Durations()
    changes = {
        field: value
        for field, value in (
            ("baseline_s", args.baseline_s),
            ("fault_s", args.fault_s),
            ("recovery_s", args.recovery_s),
        )
        if value is not None
    }
    durations = dataclasses.replace(durations, **changes)
    try:
        result = drills.run(
            args.name,
            args.dir,
            target=args.target,
            durations=durations,
            report=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (ClusterError, OSError) as error:
        print(f"meridian drill {args.name}: {error}", file=sys.stderr)
        return 1
    document = report.summarize(result)
    print("\n".join(report.terminal_lines(document)))
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"JSON report: {args.json}")
    if args.png is not None and result.skipped is None:
        timeline.write_png(result, args.png)
        print(f"timeline: {args.png}")
    if result.skipped is not None:
        return EXIT_SKIPPED
    return 0 if report.passed(document) else 1
