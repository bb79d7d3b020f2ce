"""`meridian audit query|export|verify|seal|public-key`: the auditor's commands.

Two questions, one command each:

    # Who decrypted with this key last week?
    meridian audit query --key-id alias/payroll --operation Decrypt --start-time 7d
    # Is this log complete and unaltered (checked against the other regions' copies)?
    meridian audit verify --region us-east-1

A trail is read through a running node (``--cluster-file``, ``--region``; the
default) or straight from a node's SQLite file (``--data-dir`` or ``--database``),
for forensics on a stopped node or a copied file.

Exit codes: 0 success (for verify: the trail verifies); 1 verify found a problem;
2 the command line is wrong or the trail cannot be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

CLUSTER_FILE_ENV = "MERIDIAN_CLUSTER_FILE"
CLUSTER_FILE_DEFAULT = Path("demo-cluster") / "cluster.json"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="query, export and verify the audit trail",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    commands = parser.add_subparsers(dest="audit_command", metavar="COMMAND")
    commands.required = True

    query = commands.add_parser("query", help="records matching filters (a table, or --json)")
    _source_options(query)
    _filter_options(query)
    query.add_argument("--limit", type=int, default=None, help="at most this many records")
    query.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    query.set_defaults(func=_run("query"))

    export = commands.add_parser("export", help="JSON lines with CloudTrail-like field names")
    _source_options(export)
    _filter_options(export)
    export.add_argument("--out", type=Path, help="write to FILE instead of standard output")
    export.set_defaults(func=_run("export"))

    verify = commands.add_parser("verify", help="check the chain, the digests and the peers")
    _source_options(verify)
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        help="trust only this audit public key (PEM or raw; repeatable)",
    )
    verify.add_argument(
        "--no-peers", action="store_true", help="do not compare with other regions' copies"
    )
    verify.set_defaults(func=_run("verify"))

    seal = commands.add_parser("seal", help="seal a digest now (through a running node)")
    _source_options(seal, local=False)
    seal.set_defaults(func=_run("seal"))

    public_key = commands.add_parser("public-key", help="print the region's audit public key(s)")
    _source_options(public_key)
    public_key.add_argument("--out", type=Path, help="write the PEM to FILE")
    public_key.set_defaults(func=_run("public_key"))


def _source_options(parser: argparse.ArgumentParser, *, local: bool = True) -> None:
    parser.add_argument(
        "--cluster-file",
        type=Path,
        help=f"cluster.json (default: ${CLUSTER_FILE_ENV}, else {CLUSTER_FILE_DEFAULT})",
    )
    parser.add_argument("--region", help="the region whose trail to read (default: the first)")
    if local:
        parser.add_argument("--data-dir", type=Path, help="read a node's data folder directly")
        parser.add_argument("--database", type=Path, help="read a node's SQLite file directly")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-id", default="", help="key id, key ARN, alias or alias ARN")
    parser.add_argument("--principal", default="", help="principal name or ARN")
    parser.add_argument("--operation", default="", help="event name, e.g. Decrypt")
    parser.add_argument(
        "--outcome", default="", choices=("", "Success", "Failure", "Denied", "Unknown")
    )
    parser.add_argument("--error-code", default="", help="e.g. AccessDeniedException")
    parser.add_argument("--start-time", default="", help="ISO 8601, or 7d / 12h / 30m ago")
    parser.add_argument("--end-time", default="", help="ISO 8601, or 7d / 12h / 30m ago")


def _run(name: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        # Imported on use: parsing `meridian` must stay light for every other command.
        from meridian.cli import audit_tools

        code: int = getattr(audit_tools, f"run_{name.replace('-', '_')}")(args)
        return code

    return handler
