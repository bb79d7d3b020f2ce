"""`DIR/cluster.json` and the lock beside it: what a local cluster *is*, on disk.

The file is the shared contract of docs/contributors/shared-contracts.md: clients read
each region's `endpoint` from it, the cluster commands its process ids. This module only
reads and writes it (atomically) and holds `DIR/cluster.lock`; starting and stopping
processes is cli/cluster.py's job.

Format 1 grew, without breaking older readers or older files:

- per region `direct_endpoint` (the node's own listen address; clients use `endpoint`,
  which is the region's client proxy when the cluster runs with emulated links) and
  `peer_endpoints` (where this region's node dials each peer: the proxy of that link);
- at the top level `proxy`: the link proxy's process, or null for a cluster whose links
  are direct.

A file without these fields (written before they existed) reads as a direct cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from meridian.cli import pki

__all__ = [
    "CLUSTER_FILE_FORMAT",
    "CLUSTER_FILE_NAME",
    "ClusterError",
    "ClusterSpec",
    "ProxyEntry",
    "RegionEntry",
    "locked",
    "read",
    "region_entry",
    "require_directory",
    "write",
]

CLUSTER_FILE_NAME = "cluster.json"
CLUSTER_FILE_FORMAT = 1
LOCK_FILE_NAME = "cluster.lock"


class ClusterError(Exception):
    """An operator error (missing cluster, already running, a node that will not start)."""


@dataclasses.dataclass(frozen=True)
class RegionEntry:
    """One region of `cluster.json`."""

    endpoint: str
    server_name: str
    pid: int | None
    config: Path
    data_dir: Path
    log: Path
    # The node's own listen address; equal to `endpoint` when clients connect directly.
    direct_endpoint: str = ""
    # Peer region -> the address this region's node dials it at (its link's proxy).
    peer_endpoints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The region's AWS-compatible HTTPS endpoint, e.g. https://127.0.0.11:4443 (cli/cluster_aws.py).
    aws_endpoint: str | None = None

    def __post_init__(self) -> None:
        if not self.direct_endpoint:
            object.__setattr__(self, "direct_endpoint", self.endpoint)

    @property
    def host(self) -> str:
        """The region's loopback address: its node and every proxy in front of it use it."""
        return self.direct_endpoint.rpartition(":")[0]

    @property
    def port(self) -> int:
        """The node's own port (not the client proxy's)."""
        return int(self.direct_endpoint.rpartition(":")[2])

    @property
    def proxied(self) -> bool:
        return self.endpoint != self.direct_endpoint


@dataclasses.dataclass(frozen=True)
class ProxyEntry:
    """The link proxy process (cli/netem) of a cluster with emulated links."""

    pid: int | None
    control: str  # host:port of its control API
    log: Path


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """`cluster.json`, plus the folder it lives in. Regions keep the order of `up`."""

    directory: Path
    account_id: str
    ca_cert: Path
    client_cert: Path
    client_key: Path
    principal: str
    regions: Mapping[str, RegionEntry]
    proxy: ProxyEntry | None = None

    @property
    def path(self) -> Path:
        return self.directory / CLUSTER_FILE_NAME

    def with_region(self, region: str, **changes: Any) -> ClusterSpec:
        regions = dict(self.regions)
        regions[region] = dataclasses.replace(regions[region], **changes)
        return dataclasses.replace(self, regions=regions)

    def with_proxy_pid(self, pid: int | None) -> ClusterSpec:
        assert self.proxy is not None
        return dataclasses.replace(self, proxy=dataclasses.replace(self.proxy, pid=pid))

    def peer_endpoint(self, region: str, peer: str) -> str:
        """Where the node of `region` dials `peer`: the link's proxy, else the peer itself."""
        return self.regions[region].peer_endpoints.get(peer, self.regions[peer].direct_endpoint)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold DIR/cluster.lock so two commands never start or stop the same nodes at once."""
    require_directory(directory)
    with (directory / LOCK_FILE_NAME).open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ClusterError(
                f"another `meridian cluster` command is working on {directory}; "
                "try again when it has finished"
            ) from error
        yield


def require_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise ClusterError(
            f"{directory} does not exist; create a cluster there with "
            f"`meridian cluster up --regions REGION,... --dir {directory}`"
        )


def read(directory: Path) -> ClusterSpec:
    require_directory(directory)
    path = directory / CLUSTER_FILE_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ClusterError(
            f"no cluster in {directory} ({CLUSTER_FILE_NAME} is missing); create one with "
            f"`meridian cluster up --regions REGION,... --dir {directory}`"
        ) from error
    except (OSError, ValueError) as error:
        raise ClusterError(f"{path} cannot be read: {error}") from error
    try:
        return _from_json(directory, document)
    except (KeyError, TypeError, ValueError) as error:
        raise ClusterError(f"{path} is not a valid cluster file: {error}") from error


def write(spec: ClusterSpec) -> None:
    text = json.dumps(_to_json(spec), indent=2) + "\n"
    # Readers (clients, other commands) see the old file or the new one, never a mix.
    pki.write_atomic(spec.path, text.encode(), mode=0o644, overwrite=True)


def region_entry(spec: ClusterSpec, region: str) -> RegionEntry:
    try:
        return spec.regions[region]
    except KeyError:
        raise ClusterError(
            f"unknown region {region!r}; the cluster in {spec.directory} has "
            f"{', '.join(spec.regions)}"
        ) from None


def _field(obj: Any, name: str, kind: type[Any]) -> Any:
    if not isinstance(obj, dict):
        raise TypeError(f"expected an object around {name!r}")
    value = obj[name]
    # bool is an int in Python, but never a valid pid or format.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name!r} should be {kind.__name__}, not {value!r}")
    return value


def _optional_pid(obj: Any, name: str) -> int | None:
    pid = obj.get(name) if isinstance(obj, dict) else None
    return None if pid is None else int(_field(obj, name, int))


def _from_json(directory: Path, document: Any) -> ClusterSpec:
    if _field(document, "format", int) != CLUSTER_FILE_FORMAT:
        raise ValueError(f"format {document['format']} is not {CLUSTER_FILE_FORMAT}")
    regions: dict[str, RegionEntry] = {}
    for region, raw in _field(document, "regions", dict).items():
        endpoint = _field(raw, "endpoint", str)
        peers = raw.get("peer_endpoints", {})
        if not isinstance(peers, dict) or not all(isinstance(v, str) for v in peers.values()):
            raise TypeError(f"'peer_endpoints' of {region} should map regions to host:port")
        regions[pki.validate_region(region)] = RegionEntry(
            endpoint=endpoint,
            server_name=_field(raw, "server_name", str),
            pid=_optional_pid(raw, "pid"),
            config=Path(_field(raw, "config", str)),
            data_dir=Path(_field(raw, "data_dir", str)),
            log=Path(_field(raw, "log", str)),
            direct_endpoint=_field(raw, "direct_endpoint", str)
            if "direct_endpoint" in raw
            else endpoint,
            peer_endpoints=dict(peers),
            aws_endpoint=raw["aws_endpoint"] if isinstance(raw.get("aws_endpoint"), str) else None,
        )
    if not regions:
        raise ValueError("it names no region")
    for region, entry in regions.items():
        unknown = sorted(set(entry.peer_endpoints) - (set(regions) - {region}))
        if unknown:
            raise ValueError(f"'peer_endpoints' of {region} names unknown peers {unknown}")
    raw_proxy = document.get("proxy")
    proxy = None
    if raw_proxy is not None:
        proxy = ProxyEntry(
            pid=_optional_pid(raw_proxy, "pid"),
            control=_field(raw_proxy, "control", str),
            log=Path(_field(raw_proxy, "log", str)),
        )
    return ClusterSpec(
        directory=directory,
        account_id=_field(document, "account_id", str),
        ca_cert=Path(_field(document, "ca_cert", str)),
        client_cert=Path(_field(document, "client_cert", str)),
        client_key=Path(_field(document, "client_key", str)),
        principal=_field(document, "principal", str),
        regions=regions,
        proxy=proxy,
    )


def _to_json(spec: ClusterSpec) -> dict[str, Any]:
    proxy = spec.proxy
    return {
        "format": CLUSTER_FILE_FORMAT,
        "account_id": spec.account_id,
        "ca_cert": str(spec.ca_cert),
        "client_cert": str(spec.client_cert),
        "client_key": str(spec.client_key),
        "principal": spec.principal,
        "regions": {
            region: {
                "endpoint": entry.endpoint,
                "direct_endpoint": entry.direct_endpoint,
                "peer_endpoints": dict(entry.peer_endpoints),
                "server_name": entry.server_name,
                "pid": entry.pid,
                "config": str(entry.config),
                "data_dir": str(entry.data_dir),
                "log": str(entry.log),
                "aws_endpoint": entry.aws_endpoint,
            }
            for region, entry in spec.regions.items()
        },
        "proxy": None
        if proxy is None
        else {"pid": proxy.pid, "control": proxy.control, "log": str(proxy.log)},
    }
