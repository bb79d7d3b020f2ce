"""`meridian node seed-keys`: bulk-load keys into a stopped node (benchmarks, load tests).

    meridian node seed-keys --config node.toml --count 1000000

server/seeding.py says what is written and why the node must be stopped; the numbers
it reaches are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meridian.server.config import ConfigError, NodeConfig, load_config

if TYPE_CHECKING:
    from meridian.server.seeding import SeedOptions, SeedReport

_EXIT_FAILED = 1
_EXIT_USAGE = 2
# Progress is printed about this often (in percent of the keys), plus once at the end.
_PROGRESS_STEP_PERCENT = 10


def register(node_actions: argparse._SubParsersAction[Any]) -> None:
    parser = node_actions.add_parser(
        "seed-keys",
        help="write N new keys straight into a STOPPED node's store (benchmarks, load tests)",
        description=(
            "Create COUNT new keys in the region of a stopped node by writing its SQLite "
            "store directly: the same rows CreateKey makes (material wrapped by the "
            "region's root key, the default key policy), many thousands per second instead "
            "of one API call each. Refused while the node runs (it holds DATA_DIR/node.lock). "
            "The run is one SeedKeys service event in the audit trail; the keys get no "
            "per-key records, as no API call made them. Interrupting keeps every finished "
            "batch."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="the node's TOML config")
    parser.add_argument("--count", required=True, type=int, help="how many keys to create")
    parser.add_argument(
        "--spec",
        default="SYMMETRIC_DEFAULT",
        choices=("SYMMETRIC_DEFAULT",),
        help="key spec of the new keys (only SYMMETRIC_DEFAULT today)",
    )
    parser.add_argument("--description", default="", help="Description of every new key")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=50_000,
        metavar="KEYS",
        help="keys per transaction (default 50000)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from meridian.server.logging import configure_logging
    from meridian.server.seeding import SeedOptions

    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _fail(str(error), _EXIT_USAGE)
    from meridian.server.domain.errors import ValidationException
    from meridian.server.domain.model import KeySpec

    options = SeedOptions(
        count=args.count,
        key_spec=KeySpec(args.spec),
        description=args.description,
        batch_keys=args.batch_size,
        progress=_progress_printer(args.count),
    )
    try:
        options.check()
    except (ValueError, ValidationException) as error:
        return _fail(str(error), _EXIT_USAGE)
    configure_logging("warning", region=config.region)
    try:
        return asyncio.run(_seed(config, options))
    except KeyboardInterrupt:
        print("interrupted; every finished batch is committed and usable")
        return 130


async def _seed(config: NodeConfig, options: SeedOptions) -> int:
    from meridian.server.audit.sink import AuditUnavailable
    from meridian.server.data_dir_lock import DataDirBusy
    from meridian.server.domain.crypto.rootkey import RootKeyError
    from meridian.server.seeding import seed_keys

    try:
        report = await seed_keys(config, options)
    except DataDirBusy as error:
        return _fail(
            f"{error}; stop the node first (seeding writes its store directly)", _EXIT_FAILED
        )
    except (RootKeyError, AuditUnavailable) as error:
        return _fail(str(error), _EXIT_FAILED)
    print(
        f"seeded {report.keys_seeded} {options.key_spec.value} keys into {config.region} in "
        f"{report.elapsed_s:.1f} s ({report.keys_per_s:,.0f} keys/s)"
    )
    return 0


def _progress_printer(total: int) -> Callable[[SeedReport], None]:
    printed = [-_PROGRESS_STEP_PERCENT]

    def progress(report: SeedReport) -> None:
        percent = report.keys_seeded * 100 // total
        if percent - printed[0] >= _PROGRESS_STEP_PERCENT:
            printed[0] = percent
            print(
                f"  {report.keys_seeded}/{total} ({percent}%), {report.keys_per_s:,.0f} keys/s",
                flush=True,
            )

    return progress


def _fail(message: str, code: int) -> int:
    print(f"meridian node seed-keys: {message}", file=sys.stderr)
    return code
