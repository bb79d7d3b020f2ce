"""`meridian cluster status`: the operator's view of a local cluster.

Per region: the process and its health (cli/cluster.py `status`), how many keys it
holds (and how many of them are multi-region), and its replication lag per peer; for the
whole cluster: the link proxy and every link that differs from its configured shape.
Each region is asked directly, not through its client proxy, so a partitioned client
link does not hide a healthy node. One region's failure to answer is reported in its
row and never fails the command.

Replication lag comes from a :data:`ReplicationProbe`: by default each node's
`ReplicationAdmin/GetReplicationStatus` (issue 3), asked directly; a node that does not
serve it says so in its row. Tests plug their own probe into the same seam.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from meridian.cli import cluster, cluster_network, cluster_state
from meridian.cli.cluster_state import ClusterError, ClusterSpec
from meridian.client import KmsClient
from meridian.client.errors import KmsError

__all__ = [
    "KEYS_COUNTED_MAX",
    "ClusterReport",
    "KeyCount",
    "PeerLag",
    "RegionReport",
    "ReplicationProbe",
    "ReplicationUnavailable",
    "inspect",
]

NOT_REPORTED = "not reported by this node version (replication: issue 3)"
# Counting pages through ListKeys; a cluster with more keys shows "10000+".
KEYS_COUNTED_MAX = 10_000
_PAGE_KEYS = 1000


class ReplicationUnavailable(Exception):
    """The region cannot say how far its peers are behind; the message says why."""


@dataclasses.dataclass(frozen=True)
class PeerLag:
    """What one region knows about one peer's copy of its replication log."""

    peer: str
    acknowledged_seq: int | None
    backlog_entries: int | None
    lag_s: float | None
    state: str | None = None  # e.g. connected, backing-off


@dataclasses.dataclass(frozen=True)
class KeyCount:
    total: int
    multi_region: int
    more: bool  # counting stopped at KEYS_COUNTED_MAX


@dataclasses.dataclass(frozen=True)
class RegionReport:
    status: cluster.RegionStatus
    keys: KeyCount | None
    keys_note: str | None
    replication: tuple[PeerLag, ...] | None
    replication_note: str | None


@dataclasses.dataclass(frozen=True)
class ClusterReport:
    regions: tuple[RegionReport, ...]
    proxy: str  # "running (pid N)", "not running", "none (direct links)"
    faults: dict[str, str]  # link -> its current shape, for links changed at run time


ReplicationProbe = Callable[[ClusterSpec, str, float], Sequence[PeerLag]]
"""``probe(spec, region, timeout_s)``: the region's peers and their lag, or raise
:class:`ReplicationUnavailable`."""


def replication_not_reported(spec: ClusterSpec, region: str, timeout_s: float) -> list[PeerLag]:
    """A probe for nodes that do not report replication status (tests, old nodes)."""
    del spec, region, timeout_s
    raise ReplicationUnavailable(NOT_REPORTED)


def replication_from_node(spec: ClusterSpec, region: str, timeout_s: float) -> list[PeerLag]:
    """The region's own account: `ReplicationAdmin/GetReplicationStatus`, asked directly.

    A node that does not serve the RPC (built before replication, issue 3) answers
    UNIMPLEMENTED, which is reported as "not reported", not as an error.
    """
    try:
        from meridian.proto.replication_admin.v1 import (
            replication_admin_pb2,
            replication_admin_pb2_grpc,
        )
    except ImportError:
        raise ReplicationUnavailable(NOT_REPORTED) from None
    entry = spec.regions[region]
    try:
        channel = cluster.region_channel(spec, entry)
    except ClusterError as error:
        raise ReplicationUnavailable(str(error)) from None
    with channel:
        stub = replication_admin_pb2_grpc.ReplicationAdminStub(channel)
        try:
            status = stub.GetReplicationStatus(
                replication_admin_pb2.GetReplicationStatusRequest(), timeout=timeout_s
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise ReplicationUnavailable(NOT_REPORTED) from None
            raise ReplicationUnavailable(f"{error.code().name}: {error.details()}") from None
    return [
        PeerLag(
            peer=peer.region,
            acknowledged_seq=int(peer.acked_seq),
            backlog_entries=int(peer.backlog_entries),
            lag_s=float(peer.lag_s),
            state=peer.connection_state or None,
        )
        for peer in status.peers
    ]


def inspect(
    directory: Path,
    *,
    probe_timeout_s: float = cluster.PROBE_TIMEOUT_S_DEFAULT,
    replication_probe: ReplicationProbe = replication_from_node,
) -> ClusterReport:
    """Everything `meridian cluster status` shows. Changes nothing on disk."""
    directory = directory.resolve()
    statuses = cluster.status(directory, probe_timeout_s=probe_timeout_s)
    spec = cluster_state.read(directory)

    def detail(state: cluster.RegionStatus) -> RegionReport:
        if state.health != "SERVING":
            return RegionReport(state, None, None, None, None)
        keys: KeyCount | None = None
        keys_note = None
        try:
            keys = _count_keys(spec, state.region, probe_timeout_s)
        except KmsError as error:
            keys_note = f"{type(error).__name__}: {error}"
        replication: tuple[PeerLag, ...] | None = None
        replication_note = None
        try:
            replication = tuple(replication_probe(spec, state.region, probe_timeout_s))
        except ReplicationUnavailable as error:
            replication_note = str(error)
        return RegionReport(state, keys, keys_note, replication, replication_note)

    with ThreadPoolExecutor(max_workers=len(statuses)) as pool:
        regions = tuple(pool.map(detail, statuses))
    return ClusterReport(regions=regions, proxy=_proxy_state(spec), faults=_faults(directory))


def _count_keys(spec: ClusterSpec, region: str, timeout_s: float) -> KeyCount:
    entry = spec.regions[region]
    total = multi_region = 0
    with KmsClient(
        {region: entry.direct_endpoint},
        ca_cert=spec.ca_cert.read_bytes(),
        client_cert=spec.client_cert.read_bytes(),
        client_key=spec.client_key.read_bytes(),
        server_names={region: entry.server_name},
        region=region,
        timeout_s=timeout_s,
    ) as kms:
        for key in kms.iter_keys(limit=_PAGE_KEYS):
            if total >= KEYS_COUNTED_MAX:
                return KeyCount(total, multi_region, more=True)
            total += 1
            multi_region += key.key_id.startswith("mrk-")
    return KeyCount(total, multi_region, more=False)


def _proxy_state(spec: ClusterSpec) -> str:
    if spec.proxy is None:
        return "none (direct links)"
    if cluster_network.proxy_running(spec):
        return f"running (pid {spec.proxy.pid}, control {spec.proxy.control})"
    return "NOT RUNNING: clients and peers cannot reach any region; `cluster start` restarts it"


def _faults(directory: Path) -> dict[str, str]:
    return {str(link): shape for link, shape in cluster_network.network_faults(directory).items()}


def describe_replication(report: RegionReport) -> str:
    """One cell of the status table: the worst peer's lag, or why there is none."""
    if report.replication is None:
        return "-" if report.replication_note is None else "n/a"
    if not report.replication:
        return "no peers"
    parts = []
    for peer in report.replication:
        lag = "?" if peer.lag_s is None else f"{peer.lag_s:.1f}s"
        backlog = "" if not peer.backlog_entries else f"/{peer.backlog_entries} behind"
        parts.append(f"{peer.peer} {lag}{backlog}")
    return ", ".join(parts)


def describe_keys(report: RegionReport) -> str:
    if report.keys is None:
        return "-" if report.keys_note is None else "?"
    plus = "+" if report.keys.more else ""
    return f"{report.keys.total}{plus} ({report.keys.multi_region} mrk)"


def render(report: ClusterReport) -> list[str]:
    """The status table and the notes under it, as lines."""
    header = ("REGION", "PID", "ALIVE", "HEALTH", "ENDPOINT", "KEYS", "REPLICATION LAG")
    rows = [
        (
            item.status.region,
            "-" if item.status.pid is None or not item.status.alive else str(item.status.pid),
            "yes" if item.status.alive else "no",
            item.status.health,
            item.status.endpoint,
            describe_keys(item),
            describe_replication(item),
        )
        for item in report.regions
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.append(f"link proxy: {report.proxy}")
    for link, shape in sorted(report.faults.items()):
        lines.append(f"link changed: {link}: {shape}")
    for item in report.regions:
        region = item.status.region
        if item.status.note:
            lines.append(f"note: {region}: {item.status.note}")
        if item.keys_note:
            lines.append(f"note: {region}: keys: {item.keys_note}")
    notes = {item.replication_note for item in report.regions if item.replication_note}
    for note in sorted(notes):
        lines.append(f"replication lag: {note}")
    return lines


def to_json(report: ClusterReport) -> dict[str, object]:
    """`status --json`: the fields of the plain `status` plus keys, replication, network."""
    return {
        "regions": {
            item.status.region: {
                "pid": item.status.pid,
                "alive": item.status.alive,
                "health": item.status.health,
                "endpoint": item.status.endpoint,
                "note": item.status.note,
                "keys": None if item.keys is None else dataclasses.asdict(item.keys),
                "keys_note": item.keys_note,
                "replication": None
                if item.replication is None
                else [dataclasses.asdict(peer) for peer in item.replication],
                "replication_note": item.replication_note,
            }
            for item in report.regions
        },
        "network": {"proxy": report.proxy, "changed_links": report.faults},
    }
