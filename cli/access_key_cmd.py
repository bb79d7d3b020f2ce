"""`meridian access-key`: SigV4 access keys for the AWS-compatible endpoint.

    meridian access-key create --principal NAME (--config NODE.toml ... | --cluster-dir DIR)
    meridian access-key list   [--principal NAME] (--config NODE.toml | --cluster-dir DIR)
    meridian access-key revoke ACCESS_KEY_ID (--config NODE.toml ... | --cluster-dir DIR)

`create` prints the secret once, in the JSON shape of `aws iam create-access-key`; it is
stored only wrapped by each region's root key. With --cluster-dir the key is installed in
every region of a local cluster, as one AWS access key works in every AWS region.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from meridian.cli import access_keys
from meridian.server.storage.access_keys import AccessKeyRow


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "access-key",
        help="SigV4 access keys for the AWS-compatible endpoint",
        description=(
            "Create, list and revoke the access keys that AWS SDKs and the AWS CLI sign "
            "requests with. Each key maps to a Meridian principal."
        ),
    )
    commands = parser.add_subparsers(dest="access_key_command", metavar="COMMAND")
    commands.required = True

    create = commands.add_parser("create", help="create a key; prints its secret once")
    create.add_argument("--principal", required=True, help="the principal the key signs as")
    create.add_argument("--description", default="", help="a note for operators")
    _add_targets(create)
    create.set_defaults(func=_create)

    listing = commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--principal", help="only this principal's keys")
    _add_targets(listing)
    listing.set_defaults(func=_list)

    revoke = commands.add_parser("revoke", help="revoke a key; it stops working at once")
    revoke.add_argument("access_key_id", metavar="ACCESS_KEY_ID")
    _add_targets(revoke)
    revoke.set_defaults(func=_revoke)


def _add_targets(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--config",
        type=Path,
        action="append",
        metavar="NODE.toml",
        help="a region's node config (repeat for several regions)",
    )
    group.add_argument(
        "--cluster-dir", type=Path, metavar="DIR", help="every region of a local cluster"
    )


def _targets(args: argparse.Namespace) -> list[access_keys.RegionConfig]:
    if args.cluster_dir is not None:
        return access_keys.cluster_region_configs(args.cluster_dir)
    return access_keys.load_region_configs(args.config)


def _create(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        targets = _targets(args)
        key = await access_keys.create(targets, args.principal, args.description)
        return {
            "AccessKey": {
                "UserName": key.principal,
                "AccessKeyId": key.access_key_id,
                "Status": "Active",
                "SecretAccessKey": key.secret_access_key,
                "CreateDate": _iso(key.created_at),
            },
            "Regions": [target.region for target in targets],
        }

    return _print_result("create", run)


def _list(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        regions: dict[str, Any] = {}
        for target in _targets(args):
            rows = await access_keys.list_keys(target, args.principal)
            regions[target.region] = [_metadata(row) for row in rows]
        return {"Regions": regions}

    return _print_result("list", run)


def _revoke(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        outcomes = await access_keys.revoke(_targets(args), args.access_key_id)
        return {"AccessKeyId": args.access_key_id, "Regions": outcomes}

    return _print_result("revoke", run)


def _print_result(command: str, run: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> int:
    try:
        result = asyncio.run(run())
    except access_keys.AccessKeyCommandError as error:
        print(f"meridian access-key {command}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _metadata(row: AccessKeyRow) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "UserName": row.principal,
        "AccessKeyId": row.access_key_id,
        "Status": "Active" if row.active else "Inactive",
        "CreateDate": _iso(row.created_at),
    }
    if row.description:
        metadata["Description"] = row.description
    if row.revoked_at is not None:
        metadata["RevokeDate"] = _iso(row.revoked_at)
    return metadata


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
