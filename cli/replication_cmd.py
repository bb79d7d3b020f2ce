"""`meridian replication status`: each region's view of the replication log.

For every region of the cluster file (or those given with ``--region``), asks the node
(``ReplicationAdmin.GetReplicationStatus``) and prints, per peer it ships to: the
connection state, the acknowledged position of its log, the backlog (entries the peer
has not acknowledged), the lag (age of the oldest of them), and the last error; then
what it applied of each peer's log, and key versions still pending (two-phase rotation:
shipped, not yet acknowledged by every replica, so not yet encrypting).

Exit codes: 0 every region answered; 1 some region could not be asked (it is listed as
unreachable); 253 the cluster file is missing or invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO, Any

CLUSTER_FILE_ENV = "MERIDIAN_CLUSTER_FILE"
CLUSTER_FILE_DEFAULT = Path("demo-cluster") / "cluster.json"
STATUS_TIMEOUT_S = 5.0
EXIT_UNREACHABLE = 1
EXIT_CONFIG = 253


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("replication", help="multi-region replication")
    commands = parser.add_subparsers(dest="replication_command", metavar="COMMAND")
    commands.required = True
    status = commands.add_parser(
        "status", help="per region and peer: position, backlog, lag, errors, pending versions"
    )
    status.add_argument(
        "--cluster-file",
        type=Path,
        help=f"cluster.json (default: ${CLUSTER_FILE_ENV}, else {CLUSTER_FILE_DEFAULT})",
    )
    status.add_argument("--region", action="append", help="only these regions (repeatable)")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace, *, out: IO[str] | None = None) -> int:
    # Imported on use: parsing `meridian` must stay light for every other command.
    from meridian.client import ClientConfigError, KmsClient, KmsError

    stdout = out or sys.stdout
    path = args.cluster_file or Path(os.environ.get(CLUSTER_FILE_ENV) or CLUSTER_FILE_DEFAULT)
    try:
        client = KmsClient.from_cluster_file(path)
    except ClientConfigError as error:
        print(f"meridian replication: {error}", file=sys.stderr)
        return EXIT_CONFIG
    with client:
        regions = args.region or list(client.regions)
        unknown = [region for region in regions if region not in client.regions]
        if unknown:
            print(f"meridian replication: unknown region(s): {', '.join(unknown)}", file=sys.stderr)
            return EXIT_CONFIG
        document: dict[str, Any] = {}
        for region in regions:
            try:
                status = client.get_replication_status(region=region, timeout_s=STATUS_TIMEOUT_S)
            except KmsError as error:
                document[region] = {"unreachable": f"{error.error_name}: {error.message}"}
                continue
            document[region] = _jsonable(asdict(status))
    if args.json:
        stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        stdout.write(render(document))
    return EXIT_UNREACHABLE if any("unreachable" in item for item in document.values()) else 0


def render(document: dict[str, Any]) -> str:
    lines: list[str] = []
    for region, status in document.items():
        if "unreachable" in status:
            lines.append(f"{region}: unreachable ({status['unreachable']})")
            lines.append("")
            continue
        lines.append(
            f"{region}: log {status['log_id'][:8]} at {status['head_seq']} "
            f"(retained from {status['first_retained_seq']}), "
            f"{status['multi_region_keys']} multi-Region key(s), "
            f"node key {status['signing_key_fingerprint'][:16]}"
        )
        lines.append(
            f"  {'peer':<16} {'state':<12} {'acked':>8} {'backlog':>8} {'lag_s':>9}  last error"
        )
        for peer in status["peers"]:
            state = peer["connection_state"] + (" (snapshot)" if peer["snapshotting"] else "")
            lines.append(
                f"  {peer['region']:<16} {state:<12} {peer['acked_seq']:>8} "
                f"{peer['backlog_entries']:>8} {peer['lag_s']:>9.3f}  {peer['last_error'] or '-'}"
            )
        for inbound in status["inbound"]:
            lines.append(
                f"  applied from {inbound['origin_region']}: up to {inbound['applied_seq']} "
                f"(at {inbound['applied_at'] or '-'})"
            )
        for pending in status["pending_versions"]:
            missing = ", ".join(pending["missing_regions"]) or "none (promoting)"
            lines.append(
                f"  pending version {pending['key_material_id'][:16]} of {pending['key_id']} "
                f"(primary {pending['primary_region']}): waiting for {missing}"
            )
        lines.append("")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
