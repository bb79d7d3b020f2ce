"""`meridian usage report`: requests per key, operation and region, and what they cost.

Asks every region of the cluster for its counters (``GetUsageReport``) and prints:
the period's requests per region and operation, the top keys with their estimated
cost, keys unused for ``--unused-days`` (deletion candidates: disable them first and
watch the audit trail for DisabledException, as AWS advises), and what the SDK's
data-key cache would save at a given reuse (``--data-key-reuse``). Prices are AWS's
list prices unless ``--prices FILE`` says otherwise (server/audit/pricing.py).

A key's last use is also available per key, as in AWS: ``meridian kms
get-key-last-usage --key-id K``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

CLUSTER_FILE_ENV = "MERIDIAN_CLUSTER_FILE"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("usage", help="usage and cost reports")
    commands = parser.add_subparsers(dest="usage_command", metavar="COMMAND")
    commands.required = True
    report = commands.add_parser("report", help="requests, cost, top keys, unused keys")
    report.add_argument("--cluster-file", type=Path, help=f"default: ${CLUSTER_FILE_ENV}")
    report.add_argument("--region", action="append", help="only these regions (repeatable)")
    report.add_argument("--days", type=int, default=30, help="period ending today (default 30)")
    report.add_argument("--first-day", default="", help="YYYY-MM-DD (instead of --days)")
    report.add_argument("--last-day", default="", help="YYYY-MM-DD (default: today)")
    report.add_argument("--prices", type=Path, help="price table (TOML or JSON)")
    report.add_argument("--top", type=int, default=10, help="how many top keys to show")
    report.add_argument("--unused-days", type=int, default=90, help="deletion candidates")
    report.add_argument(
        "--data-key-reuse",
        type=int,
        default=100,
        help="messages per data key with the SDK's data-key cache (for the estimate)",
    )
    report.add_argument("--json", action="store_true", help="one JSON document")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    # Imported on use: parsing `meridian` must stay light for every other command.
    from meridian.cli import usage_tools

    return usage_tools.run_report(args)
