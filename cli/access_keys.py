"""Access keys for the AWS endpoint, managed on the nodes' own databases.

The library behind `meridian access-key` and `meridian cluster up`. Each region keeps
its access keys in its own database, wrapped by its own root key (server/gateway), so a
key that should work in every region is installed in each, with one id and secret. The
functions work whether the nodes are running or not: they open the database and the root
key named by each node's configuration, as the node does, and write in a transaction.

    create(configs, principal)   a new key valid in every region of `configs`
    revoke(configs, key_id)      revoke it everywhere; it stops working at once
    list_keys(config)            one region's keys (never their secrets)
    write_aws_config(...)        an AWS CLI/SDK config file naming endpoints and a key
"""

from __future__ import annotations

import configparser
import io
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from meridian.cli import pki
from meridian.server.config import ConfigError, NodeConfig, load_config
from meridian.server.domain.clock import SystemClock
from meridian.server.domain.crypto.rootkey import RootKeyError
from meridian.server.gateway.access_keys import AccessKeyAdmin, AccessKeyError, NewAccessKey
from meridian.server.rootkeys import open_root_keys
from meridian.server.storage.access_keys import AccessKeyRow, AccessKeyTable

__all__ = [
    "AccessKeyCommandError",
    "RegionConfig",
    "cluster_region_configs",
    "create",
    "list_keys",
    "load_region_configs",
    "revoke",
    "write_aws_config",
]


class AccessKeyCommandError(Exception):
    """What the operator must fix: a bad config, an unknown key, an unreadable root key."""


@dataclass(frozen=True)
class RegionConfig:
    region: str
    config: NodeConfig


def load_region_configs(paths: Sequence[Path]) -> list[RegionConfig]:
    configs: list[RegionConfig] = []
    for path in paths:
        try:
            config = load_config(path)
        except ConfigError as error:
            raise AccessKeyCommandError(str(error)) from error
        configs.append(RegionConfig(config.region, config))
    regions = [entry.region for entry in configs]
    if len(set(regions)) != len(regions):
        raise AccessKeyCommandError("two of the configs are for the same region")
    return configs


def cluster_region_configs(directory: Path) -> list[RegionConfig]:
    """Every region's node config named by ``DIR/cluster.json`` (its shared format)."""
    path = directory / "cluster.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        paths = [Path(entry["config"]) for entry in document["regions"].values()]
    except FileNotFoundError:
        raise AccessKeyCommandError(f"no cluster in {directory} ({path} is missing)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise AccessKeyCommandError(f"{path} is not a readable cluster file: {error}") from None
    return load_region_configs(paths)


@asynccontextmanager
async def _admin(config: NodeConfig) -> AsyncIterator[AccessKeyAdmin]:
    try:
        root_keys = await open_root_keys(config.root_key)
    except (OSError, RootKeyError) as error:
        raise AccessKeyCommandError(
            f"region {config.region}: cannot open the root key: {error}"
        ) from None
    try:
        table = await AccessKeyTable.open(config.database_path, read_only=False)
        try:
            yield AccessKeyAdmin(table, root_keys, SystemClock())
        finally:
            await table.close()
    finally:
        await root_keys.aclose()


async def create(
    configs: Sequence[RegionConfig], principal: str, description: str = ""
) -> NewAccessKey:
    """One new key, installed in every region of ``configs``; all regions or none."""
    if not configs:
        raise AccessKeyCommandError("name at least one region's config")
    created: NewAccessKey | None = None
    done: list[RegionConfig] = []
    try:
        for entry in configs:
            async with _admin(entry.config) as admin:
                existing = (
                    None if created is None else (created.access_key_id, created.secret_access_key)
                )
                key = await admin.create(principal, description, existing=existing)
            created = created or key
            done.append(entry)
    except AccessKeyError as error:
        await _undo(done, created)
        raise AccessKeyCommandError(str(error)) from None
    except BaseException:
        await _undo(done, created)
        raise
    assert created is not None
    return created


async def _undo(done: Sequence[RegionConfig], created: NewAccessKey | None) -> None:
    if created is None:
        return
    for entry in done:
        async with _admin(entry.config) as admin:
            await admin.revoke(created.access_key_id)


async def revoke(configs: Sequence[RegionConfig], access_key_id: str) -> dict[str, str]:
    """Revoke the key in each region; returns what happened per region."""
    outcomes: dict[str, str] = {}
    for entry in configs:
        async with _admin(entry.config) as admin:
            try:
                await admin.revoke(access_key_id)
                outcomes[entry.region] = "revoked"
            except AccessKeyError as error:
                outcomes[entry.region] = str(error)
    if "revoked" not in outcomes.values():
        raise AccessKeyCommandError(f"there is no active access key {access_key_id}")
    return outcomes


async def list_keys(config: RegionConfig, principal: str | None = None) -> list[AccessKeyRow]:
    async with _admin(config.config) as admin:
        return await admin.list(principal)


def write_aws_config(
    path: Path,
    *,
    endpoints: Mapping[str, str],
    ca_bundle: Path,
    access_key_id: str,
    secret_access_key: str,
) -> None:
    """An AWS config file (AWS_CONFIG_FILE) with one profile per region and a default.

    botocore and the AWS CLI read ``endpoint_url`` and ``ca_bundle`` from a profile, so
    ``aws --profile eu-west-1 kms list-keys`` needs no other flag. The file holds a
    secret, so it is written with mode 0600.
    """
    parser = configparser.ConfigParser(interpolation=None)
    for index, (region, endpoint) in enumerate(endpoints.items()):
        section = {
            "region": region,
            "endpoint_url": endpoint,
            "ca_bundle": str(ca_bundle),
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        parser[f"profile {region}"] = section
        if index == 0:
            parser["default"] = section
    text = io.StringIO()
    parser.write(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pki.write_atomic(path, text.getvalue().encode(), mode=0o600, overwrite=True)
