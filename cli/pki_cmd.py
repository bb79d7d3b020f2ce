"""`meridian pki`: create the development CA and issue node and client certificates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from meridian.cli import pki


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "pki",
        help="development PKI: a cluster CA, node and client certificates",
        description="Create a development CA and issue node and client certificates.",
    )
    commands = parser.add_subparsers(dest="pki_command", metavar="COMMAND")
    commands.required = True

    init = commands.add_parser("init", help="create the CA (ca.pem, ca.key) in DIR")
    init.add_argument("--dir", required=True, type=Path, help="PKI folder")
    init.add_argument("--common-name", default="Meridian dev CA", help="CA subject CN")
    init.add_argument(
        "--days", type=int, default=pki.CA_VALIDITY_DAYS_DEFAULT, help="validity in days"
    )
    init.set_defaults(func=_init)

    issue = commands.add_parser("issue", help="issue a node or a client certificate")
    issue.add_argument("--dir", required=True, type=Path, help="PKI folder holding the CA")
    subject = issue.add_mutually_exclusive_group(required=True)
    subject.add_argument("--node", metavar="REGION", help="issue the node certificate of REGION")
    subject.add_argument("--principal", metavar="NAME", help="issue a client certificate")
    issue.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="IP",
        help="IP address SAN of a node certificate (repeatable; default 127.0.0.1)",
    )
    issue.add_argument(
        "--days", type=int, default=pki.LEAF_VALIDITY_DAYS_DEFAULT, help="validity in days"
    )
    issue.set_defaults(func=_issue)


def _init(args: argparse.Namespace) -> int:
    try:
        pki.init_ca(args.dir, common_name=args.common_name, days=args.days)
    except (pki.PkiError, OSError) as error:
        print(f"meridian pki init: {error}", file=sys.stderr)
        return 1
    for path in pki.ca_paths(args.dir):
        print(path)
    return 0


def _issue(args: argparse.Namespace) -> int:
    try:
        if args.node is not None:
            paths = pki.issue_node(
                args.dir, args.node, ips=args.ip or pki.DEFAULT_NODE_IPS, days=args.days
            )
        else:
            if args.ip:
                raise pki.PkiError("--ip applies to node certificates only")
            paths = pki.issue_client(args.dir, args.principal, days=args.days)
    except (pki.PkiError, OSError) as error:
        print(f"meridian pki issue: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
