"""The AWS-compatible endpoint of every region of the local cluster (server/gateway).

`cluster up` turns each node's ``[aws_gateway]`` on, on a port of its own on the
region's loopback address, records it as ``aws_endpoint`` in ``cluster.json``, creates
one access key for the cluster's admin principal in every region, and writes
``DIR/aws/config`` (mode 0600): one AWS profile per region naming its endpoint, the
cluster's CA and that key, plus ``default`` for the first region. So

    AWS_CONFIG_FILE=DIR/aws/config aws --profile eu-west-1 kms list-keys

or ``boto3.Session(profile_name="eu-west-1").client("kms")`` needs nothing else. The
endpoint is always direct: an emulated network (cli/cluster_network.py) shapes gRPC only.
"""

from __future__ import annotations

import asyncio
import configparser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meridian.cli import access_keys, ports
from meridian.cli.cluster_state import ClusterError, ClusterSpec, RegionEntry

AWS_DIR_NAME = "aws"
AWS_CONFIG_NAME = "config"
_SCHEME = "https://"


def aws_config_path(directory: Path) -> Path:
    return directory / AWS_DIR_NAME / AWS_CONFIG_NAME


def prepare(spec: ClusterSpec, report: Callable[[str], None]) -> ClusterSpec:
    """Give every region an AWS endpoint port; one it has is kept unless another holds it."""
    for region, entry in spec.regions.items():
        listen = _listen(entry)
        if listen is not None:
            host, _, port = listen.rpartition(":")
            if ports.port_is_free(host, int(port)):
                continue
            report(f"region {region}: AWS endpoint port {port} is taken; picking another")
        endpoint = f"{_SCHEME}{entry.host}:{ports.pick_port(entry.host)}"
        spec = spec.with_region(region, aws_endpoint=endpoint)
    return spec


def node_config_tables(entry: RegionEntry) -> dict[str, Any]:
    """The ``[aws_gateway]`` table of a region's node config (TLS: the node's own)."""
    listen = _listen(entry)
    return {} if listen is None else {"aws_gateway": {"listen": listen}}


def ensure_credentials(spec: ClusterSpec, report: Callable[[str], None]) -> None:
    """Create the admin's access key in every region and write DIR/aws/config, once.

    Runs before the nodes start (their databases may not exist yet; this creates them as
    the node would). A cluster that has the file keeps its key; the file's endpoints are
    refreshed, since ports may have moved on a restart.
    """
    path = aws_config_path(spec.directory)
    existing = _existing_key(path)
    try:
        if existing is None:
            configs = access_keys.load_region_configs(
                [entry.config for entry in spec.regions.values()]
            )
            report(f"creating an AWS access key for principal {spec.principal} in every region")
            key = asyncio.run(access_keys.create(configs, spec.principal, "cluster admin"))
            key_id, secret = key.access_key_id, key.secret_access_key
        else:
            key_id, secret = existing
        access_keys.write_aws_config(
            path,
            endpoints={
                region: entry.aws_endpoint
                for region, entry in spec.regions.items()
                if entry.aws_endpoint is not None
            },
            ca_bundle=spec.ca_cert,
            access_key_id=key_id,
            secret_access_key=secret,
        )
    except access_keys.AccessKeyCommandError as error:
        raise ClusterError(f"cannot set up the AWS endpoint's access key: {error}") from error


def _existing_key(path: Path) -> tuple[str, str] | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
        section = parser["default"]
        return section["aws_access_key_id"], section["aws_secret_access_key"]
    except (OSError, configparser.Error, KeyError):
        return None


def _listen(entry: RegionEntry) -> str | None:
    endpoint = entry.aws_endpoint
    if endpoint is None or not endpoint.startswith(_SCHEME):
        return None
    return endpoint[len(_SCHEME) :]
