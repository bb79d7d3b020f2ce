"""`meridian node --config FILE`: run one regional node in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from meridian.server.config import ConfigError, load_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("node", help="run one regional node")
    parser.add_argument("--config", required=True, type=Path, help="the node's TOML config")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported here so that other sub-commands do not pay for the server's imports.
    from meridian.server.logging import configure_logging
    from meridian.server.node import NodeStartError, serve

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"meridian node: {error}", file=sys.stderr)
        return 1
    configure_logging(config.log_level, region=config.region)
    try:
        asyncio.run(serve(config))
    except NodeStartError as error:
        print(f"meridian node: {error}", file=sys.stderr)
        return 1
    return 0
