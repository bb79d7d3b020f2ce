"""`meridian node --config FILE`: run one regional node in the foreground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from meridian.cli import rewrap_cmd, seed_cmd
from meridian.server import event_loop
from meridian.server.config import ConfigError, load_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("node", help="run one regional node")
    # Required to run a node; `meridian node rewrap-root` takes its own --config.
    parser.add_argument("--config", type=Path, help="the node's TOML config")
    parser.set_defaults(func=_run)
    actions = parser.add_subparsers(dest="node_action", metavar="ACTION")
    rewrap_cmd.register(actions)
    seed_cmd.register(actions)


def _run(args: argparse.Namespace) -> int:
    # Imported here so that other sub-commands do not pay for the server's imports.
    from meridian.server.logging import configure_logging
    from meridian.server.node import NodeStartError, serve

    if args.config is None:
        print("meridian node: --config FILE is required", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"meridian node: {error}", file=sys.stderr)
        return 1
    configure_logging(config.log_level, region=config.region)
    if config.workers > 1:
        # A supervisor of several worker processes on one port (server/workers.py).
        from meridian.server.workers import run_workers

        return run_workers(config)
    try:
        event_loop.run(serve(config), config.event_loop)
    except NodeStartError as error:
        print(f"meridian node: {error}", file=sys.stderr)
        return 1
    return 0
