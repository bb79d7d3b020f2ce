"""`meridian node rewrap-root`: move a region's key material to another root key, online.

    meridian node rewrap-root --config node.toml --from file --to pkcs11

The node's config must already name the new provider as ``[root_key]`` and the old one as
``[root_key.previous]`` (and the node should run with that config), so that the node can
read every row at every moment of the migration. server/rewrap.py says how it is
crash-safe; docs/hsm.md walks through a migration.
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
    from meridian.server.rewrap import RewrapReport

PROVIDERS = ("file", "pkcs11")
_EXIT_INCOMPLETE = 1
_EXIT_USAGE = 2
# Progress is printed about this often (in percent of the rows), plus once at the end.
_PROGRESS_STEP_PERCENT = 5


def register(node_actions: argparse._SubParsersAction[Any]) -> None:
    parser = node_actions.add_parser(
        "rewrap-root",
        help="re-wrap every stored secret (key material...) under the other root key provider",
        description=(
            "Re-wrap everything stored under the root key (key material, audit signing keys, "
            "access key secrets) from one root key provider to the other while "
            "the node keeps serving. The config must name the new provider as [root_key] "
            "and the old one as [root_key.previous]. Safe to interrupt and run again."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="the node's TOML config")
    parser.add_argument("--from", dest="source", required=True, choices=PROVIDERS)
    parser.add_argument("--to", dest="target", required=True, choices=PROVIDERS)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        metavar="ROWS",
        help="rows per transaction (default 100)",
    )
    parser.add_argument(
        "--pause-ms",
        type=int,
        default=0,
        metavar="MS",
        help="pause between batches, to spread the load on the HSM and the database",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="change nothing; check that every stored secret unwraps under the new root key",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from meridian.server.logging import configure_logging

    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _fail(str(error), _EXIT_USAGE)
    problem = _check_config(config, args.source, args.target)
    if problem is not None:
        return _fail(problem, _EXIT_USAGE)
    if not 1 <= args.batch_size <= 10_000 or not 0 <= args.pause_ms <= 60_000:
        return _fail("--batch-size must be 1-10000 and --pause-ms 0-60000", _EXIT_USAGE)
    configure_logging("warning", region=config.region)
    try:
        return asyncio.run(_rewrap(config, args))
    except KeyboardInterrupt:
        print("interrupted; every finished batch is committed: run the command again")
        return 130


def _check_config(config: NodeConfig, source: str, target: str) -> str | None:
    if source == target:
        return "--from and --to must differ"
    root_key = config.root_key
    previous = root_key.previous
    if root_key.provider != target or previous is None or previous.provider != source:
        return (
            f"the config must name the new provider as [root_key] (provider = {target!r}) and "
            f"the old one as [root_key.previous] (provider = {source!r}); restart the node "
            "with that config first, so that it can read secrets under either root key "
            "(see docs/hsm.md)"
        )
    return None


async def _rewrap(config: NodeConfig, args: argparse.Namespace) -> int:
    from meridian.server.domain.crypto.rootkey import RootKeyError
    from meridian.server.rewrap import RewrapReport, present, rewrap, stored_secrets, verify
    from meridian.server.rootkeys import open_root_keys
    from meridian.server.storage.wrapped_material import WrappedMaterialStore

    try:
        store = await WrappedMaterialStore.open(config.database_path)
    except FileNotFoundError as error:
        return _fail(f"{error}; is data_dir right?", _EXIT_USAGE)
    try:
        try:
            ring = await open_root_keys(config.root_key)
        except RootKeyError as error:
            return _fail(f"cannot open the root keys: {error}", _EXIT_INCOMPLETE)
        try:
            source, target = ring.previous, ring.current
            assert source is not None
            secrets = await present(store, stored_secrets())
            if args.verify_only:
                report = await verify(
                    store, target, RewrapReport(source.name, target.name), secrets=secrets
                )
            else:
                total = sum([await store.count(item.column) for item in secrets])
                names = ", ".join(item.name for item in secrets)
                print(f"re-wrapping {total} stored secrets ({names}) from {source.name} to "
                      f"{target.name}")  # fmt: skip
                report = await rewrap(
                    store,
                    source,
                    target,
                    secrets=secrets,
                    batch_rows=args.batch_size,
                    pause_s=args.pause_ms / 1000,
                    progress=_progress_printer(total),
                )
        except RootKeyError as error:
            return _fail(f"stopped: {error}; run the command again to resume", _EXIT_INCOMPLETE)
        finally:
            await ring.aclose()
    finally:
        await store.close()
    return _summarize(report)


def _progress_printer(total: int) -> Callable[[RewrapReport], None]:
    printed = [-_PROGRESS_STEP_PERCENT]

    def progress(report: RewrapReport) -> None:
        percent = 100 if total == 0 else min(100, report.rows_seen * 100 // total)
        if percent - printed[0] >= _PROGRESS_STEP_PERCENT:
            printed[0] = percent
            print(
                f"  {report.rows_seen}/{total} ({percent}%): {report.rewrapped} re-wrapped, "
                f"{report.already_under_target} already under {report.target}",
                flush=True,
            )

    return progress


def _summarize(report: RewrapReport) -> int:
    if report.skipped_concurrent:
        print(f"{report.skipped_concurrent} secrets changed meanwhile and were left alone")
    for problem in report.problems:
        print(f"problem: {problem}")
    if report.problem_count > len(report.problems):
        print(f"... and {report.problem_count - len(report.problems)} more problems")
    print(
        f"verified: {report.verified} of {report.rows_seen_in_verification} stored secrets "
        f"unwrap under the {report.target} root key; {report.remaining_under_source} remain "
        f"under {report.source}"
    )
    if report.complete:
        print(
            f"done: everything stored is under the {report.target} root key; "
            "[root_key.previous] can be removed from the config"
        )
        return 0
    if report.remaining_under_source:
        print(
            f"incomplete: a node still wraps new secrets with the {report.source} root "
            "key (is it running with the new config?); run the command again"
        )
    return _EXIT_INCOMPLETE


def _fail(message: str, code: int) -> int:
    print(f"meridian node rewrap-root: {message}", file=sys.stderr)
    return code
