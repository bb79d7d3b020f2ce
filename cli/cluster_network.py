"""The emulated network of a local cluster: proxy addresses, the proxy process, link changes.

cli/cluster.py calls this module at fixed points: `prepare` before the nodes' configs
are written (it decides every proxy address), `start_proxy` before the nodes start (they
dial their peers through it), `ensure_proxy` when one node is started again, and
`stop_proxy` after the nodes have stopped. `change_links` and `links_report` serve
`meridian cluster link` and `meridian cluster links`. The proxy itself is cli/netem; its
process is cli/proxy_main.py.

Every proxy listener sits on the address of the region it leads to (the region's own
loopback address, on another port), so the address a caller dials always belongs to the
region it reaches, and the node certificates' IP SANs stay correct.
"""

from __future__ import annotations

import dataclasses
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from meridian.cli import cluster_state, pki, ports, processes
from meridian.cli.cluster_state import ClusterError, ClusterSpec, ProxyEntry
from meridian.cli.netem import control, state
from meridian.cli.netem.proxy import Route
from meridian.cli.netem.shape import CLIENT, LinkId, LinkShape, ShapeChange, ShapeError

__all__ = [
    "ALL",
    "NETWORK_DEFAULT",
    "NETWORK_DIRECT",
    "LinkRow",
    "change_links",
    "ensure_proxy",
    "links_report",
    "prepare",
    "proxy_command",
    "proxy_running",
    "read_links",
    "restore_all",
    "routes",
    "start_proxy",
    "stop_proxy",
]

NETWORK_DEFAULT = "geography"
NETWORK_DIRECT = "direct"
ALL = "all"
CONTROL_HOST = "127.0.0.1"
PROXY_READY_TIMEOUT_S = 10.0
PROXY_STOP_TIMEOUT_S = 5.0
_KILL_WAIT_S = 5.0
_PING_TIMEOUT_S = 0.5

Report = Callable[[str], None]


def network_dir(directory: Path) -> Path:
    return directory / "network"


def links_path(directory: Path) -> Path:
    return network_dir(directory) / "links.json"


def token_path(directory: Path) -> Path:
    return network_dir(directory) / "control.token"


def proxy_command(directory: Path) -> list[str]:
    """The proxy's command line; the absolute cluster folder is how we recognize it later."""
    return [sys.executable, "-m", "meridian.cli.proxy_main", "--dir", str(directory)]


# ---------------------------------------------------------------------------------------
# Planning (before the nodes' configs are written)


def prepare(spec: ClusterSpec, network: str | None, report: Report) -> ClusterSpec:
    """Decide the client and peer addresses of every region, and the proxy's.

    `network`: "direct" (no proxy), "geography" or "flat" (a proxy with those shapes), a
    network file (TOML, cli/netem/state.py), or None to keep what the cluster had.
    Ports that are taken now are re-picked; the others are kept across restarts.
    """
    directory = spec.directory
    if network is None and spec.proxy is None:
        network = NETWORK_DIRECT
    if network == NETWORK_DIRECT:
        regions = {
            region: dataclasses.replace(entry, endpoint=entry.direct_endpoint, peer_endpoints={})
            for region, entry in spec.regions.items()
        }
        return dataclasses.replace(spec, regions=regions, proxy=None)
    if network is None and links_path(directory).is_file():
        report(f"keeping the link shapes in {links_path(directory)}")
    else:
        shapes = _configured_shapes(list(spec.regions), network or NETWORK_DEFAULT)
        state.write_state(links_path(directory), state.NetworkState.fresh(shapes))
    _ensure_token(directory)
    return _assign_ports(spec)


def _configured_shapes(regions: list[str], network: str) -> dict[LinkId, LinkShape]:
    try:
        if network in state.BASES:
            return state.shapes_for(regions, network)
        return state.load_network_file(Path(network), regions)
    except ShapeError as error:
        raise ClusterError(str(error)) from None


def _assign_ports(spec: ClusterSpec) -> ClusterSpec:
    taken = {(entry.host, entry.port) for entry in spec.regions.values()}

    def keep_or_pick(host: str, old_endpoint: str | None) -> str:
        if old_endpoint is not None:
            old_host, _, old_port = old_endpoint.rpartition(":")
            address = (old_host, int(old_port))
            if old_host == host and address not in taken and ports.port_is_free(*address):
                taken.add(address)
                return old_endpoint
        while True:
            address = (host, ports.pick_port(host))
            if address not in taken:
                taken.add(address)
                return f"{host}:{address[1]}"

    regions = {}
    for region, entry in spec.regions.items():
        old_client = entry.endpoint if entry.proxied else None
        peer_endpoints = {
            peer: keep_or_pick(peer_entry.host, entry.peer_endpoints.get(peer))
            for peer, peer_entry in spec.regions.items()
            if peer != region
        }
        regions[region] = dataclasses.replace(
            entry, endpoint=keep_or_pick(entry.host, old_client), peer_endpoints=peer_endpoints
        )
    old_control = spec.proxy.control if spec.proxy is not None else None
    proxy = ProxyEntry(
        pid=spec.proxy.pid if spec.proxy is not None else None,
        control=keep_or_pick(CONTROL_HOST, old_control),
        log=network_dir(spec.directory) / "proxy.log",
    )
    return dataclasses.replace(spec, regions=regions, proxy=proxy)


def _ensure_token(directory: Path) -> None:
    path = token_path(directory)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        pki.write_atomic(path, secrets.token_hex(32).encode(), mode=0o600, overwrite=True)


def token(directory: Path) -> str:
    """The proxy's control token (DIR/network/control.token)."""
    try:
        return token_path(directory).read_text().strip()
    except OSError as error:
        raise ClusterError(f"cannot read the link proxy's token: {error}") from None


def routes(spec: ClusterSpec) -> list[Route]:
    """Every listener of the proxy: one per region for clients, one per ordered peer pair."""
    result: list[Route] = []
    for region, entry in spec.regions.items():
        if not entry.proxied:
            continue
        result.append(
            Route(
                link=LinkId.between(CLIENT, region),
                listen=address(entry.endpoint),
                upstream=address(entry.direct_endpoint),
                caller=CLIENT,
                callee=region,
            )
        )
        for peer, endpoint in entry.peer_endpoints.items():
            result.append(
                Route(
                    link=LinkId.between(region, peer),
                    listen=address(endpoint),
                    upstream=address(spec.regions[peer].direct_endpoint),
                    caller=region,
                    callee=peer,
                    source_host=entry.host,
                )
            )
    return result


def address(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------------------------------
# The proxy process


def proxy_running(spec: ClusterSpec) -> bool:
    proxy = spec.proxy
    return (
        proxy is not None and proxy.pid is not None and processes.is_ours(proxy.pid, spec.directory)
    )


def start_proxy(spec: ClusterSpec, report: Report) -> ClusterSpec:
    """Start the cluster's proxy (if it has one and it is not running); wait until it answers."""
    proxy = spec.proxy
    if proxy is None or proxy_running(spec):
        return spec
    offset = processes.file_size(proxy.log)
    try:
        pid = processes.spawn(proxy_command(spec.directory), proxy.log, "starting the link proxy")
    except OSError as error:
        raise ClusterError(f"cannot start the link proxy: {error}") from error
    spec = spec.with_proxy_pid(pid)
    cluster_state.write(spec)
    try:
        _wait_proxy_ready(spec, pid, offset)
    except BaseException:
        stop_proxy(spec, report)
        raise
    report(f"link proxy: started pid {pid}, control on {proxy.control}")
    return spec


def ensure_proxy(spec: ClusterSpec, report: Report) -> ClusterSpec:
    """Start the proxy again if it died (a node restarted behind a dead proxy is unreachable)."""
    if spec.proxy is None or proxy_running(spec):
        return spec
    if spec.proxy.pid is not None:
        report(f"link proxy: process {spec.proxy.pid} is gone; starting it again")
    return start_proxy(spec.with_proxy_pid(None), report)


def stop_proxy(spec: ClusterSpec, report: Report) -> ClusterSpec:
    """SIGTERM the proxy, SIGKILL it if it lingers; its pid becomes null."""
    proxy = spec.proxy
    if proxy is None or proxy.pid is None:
        return spec
    pid = proxy.pid
    if processes.is_ours(pid, spec.directory):
        processes.send_signal(pid, signal.SIGTERM)
        if processes.wait_gone({"proxy": pid}, PROXY_STOP_TIMEOUT_S):
            report(f"link proxy: no exit within {PROXY_STOP_TIMEOUT_S:g} s; sending SIGKILL")
            processes.send_signal(pid, signal.SIGKILL)
            if processes.wait_gone({"proxy": pid}, _KILL_WAIT_S):
                report(f"link proxy: pid {pid} survives SIGKILL; leaving it recorded")
                return spec
    spec = spec.with_proxy_pid(None)
    cluster_state.write(spec)
    return spec


def _wait_proxy_ready(spec: ClusterSpec, pid: int, log_offset: int) -> None:
    assert spec.proxy is not None
    secret = token(spec.directory)
    deadline = time.monotonic() + PROXY_READY_TIMEOUT_S
    while True:
        code = processes.reap(pid)  # before `is_ours` reaps it and drops how it ended
        if code is not None or not processes.is_ours(pid, spec.directory):
            if code is None:
                code = processes.exit_code(pid, 1.0)
            raise ClusterError(
                _proxy_failure(
                    spec, f"{processes.describe_exit(code, 'it')} during startup", log_offset
                )
            )
        try:
            control.call(spec.proxy.control, secret, "ping", timeout_s=_PING_TIMEOUT_S)
            return
        except control.ControlError as error:
            if time.monotonic() >= deadline:
                reason = f"no answer within {PROXY_READY_TIMEOUT_S:g} s ({error})"
                raise ClusterError(_proxy_failure(spec, reason, log_offset)) from None
        time.sleep(processes.POLL_INTERVAL_S)


def _proxy_failure(spec: ClusterSpec, reason: str, log_offset: int) -> str:
    assert spec.proxy is not None
    return processes.failure("the link proxy", reason, spec.proxy.log, log_offset)


# ---------------------------------------------------------------------------------------
# Changing links at run time


@dataclasses.dataclass(frozen=True)
class LinkRow:
    link: LinkId
    configured: LinkShape
    current: LinkShape
    stats: Mapping[str, Any] | None  # from the running proxy; None if it is not running


def resolve_links(spec: ClusterSpec, one: str, other: str) -> list[LinkId]:
    """The links `meridian cluster link ONE OTHER` means; `all` stands for every region."""
    sides = [*spec.regions, CLIENT]
    for side in (one, other):
        if side not in (*sides, ALL):
            raise ClusterError(
                f"unknown side {side!r}: name a region ({', '.join(spec.regions)}), "
                f"{CLIENT!r} or {ALL!r}"
            )
    if spec.proxy is None:
        raise ClusterError(
            f"the cluster in {spec.directory} runs without link proxies (network 'direct'); "
            f"restart it with `meridian cluster up --network geography` to shape its links"
        )

    def expand(side: str, other_side: str) -> list[str]:
        if side != ALL:
            return [side]
        return [region for region in spec.regions if region != other_side]

    links: set[LinkId] = set()
    for first in expand(one, other):
        for second in expand(other, first):
            if first == second:
                continue
            try:
                links.add(LinkId.between(first, second))
            except ShapeError as error:
                raise ClusterError(str(error)) from None
    if not links:
        raise ClusterError(f"{one} {other} names no link")
    return sorted(links)


def change_links(
    directory: Path,
    one: str,
    other: str,
    change: ShapeChange,
    *,
    restore: bool = False,
    report: Report = lambda message: None,
) -> list[LinkRow]:
    """Change links at run time; in force when this returns if the proxy runs."""
    directory = directory.resolve()
    with cluster_state.locked(directory):
        spec = cluster_state.read(directory)
        links = resolve_links(spec, one, other)
        current = read_links(directory)
        new = current.restored(links) if restore else current.changed(links, change)
        return _apply(spec, links, new, report)


def restore_all(directory: Path, report: Report = lambda message: None) -> list[LinkRow]:
    """Every link back to its configured shape (after a drill, in tests); none: no-op."""
    directory = directory.resolve()
    with cluster_state.locked(directory):
        spec = cluster_state.read(directory)
        if spec.proxy is None:
            return []
        current = read_links(directory)
        links = sorted(current.faults())
        if not links:
            return []
        return _apply(spec, links, current.restored(links), report)


def _apply(
    spec: ClusterSpec, links: list[LinkId], new: state.NetworkState, report: Report
) -> list[LinkRow]:
    """Save the new state, then have the running proxy apply it before returning."""
    directory = spec.directory
    state.write_state(links_path(directory), new)
    if proxy_running(spec):
        assert spec.proxy is not None
        try:
            answer = control.call(spec.proxy.control, token(directory), "reload")
        except control.ControlError as error:
            raise ClusterError(str(error)) from None
        if answer.get("revision") != new.revision:
            raise ClusterError(
                f"the link proxy applied revision {answer.get('revision')}, not "
                f"{new.revision}: another change came in between; check `links`"
            )
    else:
        report("the link proxy is not running; the change applies when it starts")
    return [LinkRow(link, new.configured[link], new.current[link], None) for link in links]


def links_report(
    directory: Path, one: str | None = None, other: str | None = None
) -> list[LinkRow]:
    """The links between two sides (default: every link): configured and current shape,
    and the proxy's counters if it runs."""
    directory = directory.resolve()
    spec = cluster_state.read(directory)
    if spec.proxy is None:
        return []
    current = read_links(directory)
    wanted = set(current.current)
    if one is not None and other is not None:
        wanted = set(resolve_links(spec, one, other))
    stats: Mapping[str, Any] = {}
    if proxy_running(spec):
        try:
            stats = control.call(spec.proxy.control, token(directory), "stats")["links"]
        except control.ControlError:
            stats = {}
    return [
        LinkRow(link, current.configured[link], shape, stats.get(str(link)))
        for link, shape in sorted(current.current.items())
        if link in wanted
    ]


def network_faults(directory: Path) -> dict[LinkId, str]:
    """The links whose shape differs from the configured one (for `status`)."""
    try:
        return read_links(directory.resolve()).faults()
    except ClusterError:
        return {}


def read_links(directory: Path) -> state.NetworkState:
    """DIR/network/links.json; an unreadable file is a ClusterError naming it."""
    try:
        return state.read_state(links_path(directory))
    except ShapeError as error:
        raise ClusterError(f"the cluster's link shapes: {error}") from None
