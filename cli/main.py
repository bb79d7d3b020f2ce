"""Entry point of the `meridian` command.

Each sub-command group lives in its own module exposing
``register(subparsers) -> None``; the module sets ``func`` on its parser(s) with
``parser.set_defaults(func=handler)`` where ``handler(args) -> int`` returns the
process exit code. Keeping registration in a table lets groups be added without
touching each other.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Module name (inside meridian.cli) of each sub-command group, in help order.
_GROUPS: tuple[str, ...] = (
    "node_cmd",
    "pki_cmd",
    "cluster_cmd",
    "kms_cmd",
    "envelope_cmd",
    "bench_cmd",
    "hsm_cmd",
    "access_key_cmd",
    "audit_cmd",
    "usage_cmd",
    "drill_cmd",
    "replication_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meridian",
        description="Meridian: a self-hosted, multi-region key management service.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _GROUPS:
        module = importlib.import_module(f"meridian.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
