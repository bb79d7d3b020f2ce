"""The local multi-region cluster manager behind `meridian cluster`.

One node process per region on its own loopback address, a development PKI, and
`DIR/cluster.json` (the shared contract in docs/contributors/shared-contracts.md) naming
every region's endpoint and process. cli/DESIGN.md describes the data flow, the process
lifecycle and the failure modes; the functions here are the library that the command
line, the tests and the scripts share:

    up(directory, regions)    create or restart the cluster and wait until it is healthy
    status(directory)         per region: process alive?, health, endpoint
    down(directory)           SIGTERM every node, SIGKILL what outlives the deadline
    kill(directory, region)   SIGKILL one region's node (for drills)
    start(directory, region)  start one region's node again on the same data and config

Every operator error is a :class:`ClusterError` whose message says what to do.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meridian.cli import (
    cluster_aws,
    cluster_hsm,
    cluster_network,
    cluster_state,
    pki,
    ports,
    processes,
)
from meridian.cli.cluster_state import (
    CLUSTER_FILE_FORMAT,
    CLUSTER_FILE_NAME,
    ClusterError,
    ClusterSpec,
    RegionEntry,
)

__all__ = [
    "CLUSTER_FILE_FORMAT",
    "CLUSTER_FILE_NAME",
    "ClusterError",
    "ClusterSpec",
    "RegionEntry",
    "RegionStatus",
    "down",
    "kill",
    "load",
    "node_command",
    "region_channel",
    "start",
    "status",
    "up",
]

ADMIN_PRINCIPAL = "admin"
ACCOUNT_ID_DEFAULT = "000000000000"
BASE_ADDRESS_DEFAULT = "127.0.0.11"
REGIONS_MAX = 64
READY_TIMEOUT_S_DEFAULT = 30.0
STOP_TIMEOUT_S_DEFAULT = 15.0
PROBE_TIMEOUT_S_DEFAULT = 2.0
# After SIGKILL only an uninterruptible sleep in the kernel can keep a process alive.
KILL_WAIT_S = 5.0
PORT_GRACE_S = 3.0
_EXIT_CODE_WAIT_S = 1.0
LOG_TAIL_LINES = 20
_READY_PROBE_TIMEOUT_S = 0.5
_READY_POLL_INTERVAL_S = 0.1
# While a node starts, connections are refused; short reconnect backoff lets the wait
# loop see it as soon as it listens instead of after gRPC's default 1 s-120 s backoff.
_READY_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)

Report = Callable[[str], None]


def _silent(message: str) -> None:
    del message


@dataclasses.dataclass(frozen=True)
class RegionStatus:
    region: str
    endpoint: str
    pid: int | None
    alive: bool
    health: str  # SERVING, NOT_SERVING, ... or "unreachable"
    note: str | None = None


def node_command(config: Path) -> list[str]:
    """The command line of a region's node; its config path is how we recognize it later."""
    return [sys.executable, "-m", "meridian", "node", "--config", str(config)]


# ---------------------------------------------------------------------------------------
# Operations


def up(
    directory: Path,
    regions: Sequence[str],
    *,
    base_address: str = BASE_ADDRESS_DEFAULT,
    account_id: str = ACCOUNT_ID_DEFAULT,
    ready_timeout_s: float = READY_TIMEOUT_S_DEFAULT,
    network: str | None = None,
    hsm_regions: Sequence[str] = (),
    report: Report = _silent,
) -> ClusterSpec:
    """Create the cluster in `directory` (or restart a stopped one there) and wait for it.

    Regions in `hsm_regions` keep their root key in a SoftHSM2 token (cli/cluster_hsm.py).

    `network` says how regions and the client are linked (cli/cluster_network.py):
    "geography" (the default for a new cluster: proxies with realistic delays), "flat"
    (proxies, no delay), "direct" (no proxies) or a network file; None on a restart keeps
    the cluster's network as it was.

    Returns once every node answers SERVING; otherwise stops the nodes it started and
    raises :class:`ClusterError` quoting the failing node's log.
    """
    regions = _validate_regions(regions)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with cluster_state.locked(directory):
        if (directory / CLUSTER_FILE_NAME).exists():
            spec = _prepare_restart(cluster_state.read(directory), regions, report)
            # A proxy left over by an interrupted `down` holds the ports; start afresh.
            spec = cluster_network.stop_proxy(spec, report)
        else:
            spec = _create(directory, regions, base_address, account_id, report)
            network = network or cluster_network.NETWORK_DEFAULT
        spec = cluster_network.prepare(spec, network, report)
        cluster_hsm.prepare(spec, hsm_regions, report)
        spec = cluster_aws.prepare(spec, report)
        for region in spec.regions:
            _write_node_config(spec, region)
        cluster_state.write(spec)
        cluster_aws.ensure_credentials(spec, report)
        # The nodes dial their peers through the proxy, so it must listen first.
        spec = cluster_network.start_proxy(spec, report)
        try:
            return _start_regions(spec, list(spec.regions), ready_timeout_s, report)
        except BaseException:
            cluster_network.stop_proxy(cluster_state.read(directory), report)
            raise


def status(
    directory: Path, *, probe_timeout_s: float = PROBE_TIMEOUT_S_DEFAULT
) -> list[RegionStatus]:
    """Each region's process and health, in the order of `up`. Changes nothing on disk."""
    spec = cluster_state.read(directory.resolve())
    credentials = _client_credentials(spec)

    def region_status(region: str) -> RegionStatus:
        entry = spec.regions[region]
        if entry.pid is None:
            return RegionStatus(region, entry.endpoint, None, False, "unreachable")
        if not processes.is_ours(entry.pid, entry.config):
            stale = f"process {entry.pid} is gone; treated as stopped"
            return RegionStatus(region, entry.endpoint, entry.pid, False, "unreachable", stale)
        probe = _probe(credentials, entry, probe_timeout_s)
        failure = probe.detail if probe.health == "unreachable" else None
        return RegionStatus(region, entry.endpoint, entry.pid, True, probe.health, failure)

    # Probing in parallel bounds the command at one probe timeout, however many regions hang.
    with ThreadPoolExecutor(max_workers=len(spec.regions)) as pool:
        return list(pool.map(region_status, spec.regions))


def down(
    directory: Path,
    *,
    stop_timeout_s: float = STOP_TIMEOUT_S_DEFAULT,
    report: Report = _silent,
) -> dict[str, str]:
    """Stop every node; returns what happened to each region ("stopped", "killed", ...)."""
    directory = directory.resolve()
    with cluster_state.locked(directory):
        spec = cluster_state.read(directory)
        outcomes: dict[str, str] = {}
        running: list[str] = []
        for region, entry in spec.regions.items():
            if entry.pid is None:
                outcomes[region] = "not running"
            elif not processes.is_ours(entry.pid, entry.config):
                outcomes[region] = f"not running (process {entry.pid} was already gone)"
                spec = spec.with_region(region, pid=None)
            else:
                running.append(region)
        cluster_state.write(spec)
        spec, stopped = _stop(spec, running, stop_timeout_s, report)
        cluster_network.stop_proxy(spec, report)
        outcomes.update(stopped)
        return {region: outcomes[region] for region in spec.regions}


def kill(directory: Path, region: str, *, report: Report = _silent) -> int:
    """SIGKILL the node of `region` (a crash drill); returns the pid that was killed."""
    directory = directory.resolve()
    with cluster_state.locked(directory):
        spec = cluster_state.read(directory)
        pid = _running_pid(spec, region, report)
        if pid is None:
            cluster_state.write(spec.with_region(region, pid=None))
            raise ClusterError(f"region {region} is not running in {directory}")
        processes.send_signal(pid, signal.SIGKILL)
        if processes.wait_gone({region: pid}, KILL_WAIT_S):
            raise ClusterError(
                f"region {region}'s node (pid {pid}) is still alive {KILL_WAIT_S:g} s after SIGKILL"
            )
        cluster_state.write(spec.with_region(region, pid=None))
        return pid


def start(
    directory: Path,
    region: str,
    *,
    ready_timeout_s: float = READY_TIMEOUT_S_DEFAULT,
    report: Report = _silent,
) -> ClusterSpec:
    """Start the node of `region` again on its data, config and port; wait until healthy."""
    directory = directory.resolve()
    with cluster_state.locked(directory):
        spec = cluster_state.read(directory)
        entry = cluster_state.region_entry(spec, region)
        pid = _running_pid(spec, region, report)
        if pid is not None:
            raise ClusterError(f"region {region} is already running (pid {pid})")
        spec = spec.with_region(region, pid=None)
        cluster_state.write(spec)
        if not entry.config.is_file():
            raise ClusterError(
                f"the config of region {region} ({entry.config}) is missing; run "
                f"`meridian cluster down --dir {directory}` and `up` again to rewrite it"
            )
        # The peers' configs name this port, so a restarted node must get the same one.
        if not ports.port_frees_up(entry.host, entry.port, PORT_GRACE_S):
            raise ClusterError(
                f"port {entry.direct_endpoint} of region {region} is in use by another process; "
                f"free it, or run `meridian cluster down --dir {directory}` and `up` again "
                "to pick new ports"
            )
        spec = cluster_network.ensure_proxy(spec, report)
        return _start_regions(spec, [region], ready_timeout_s, report)


def load(directory: Path) -> ClusterSpec:
    """Read `DIR/cluster.json`."""
    return cluster_state.read(directory.resolve())


# ---------------------------------------------------------------------------------------
# Creating and restarting


def _validate_regions(regions: Sequence[str]) -> list[str]:
    names = list(regions)
    if not names:
        raise ClusterError("name at least one region, e.g. --regions us-east-1,eu-west-1")
    if len(names) > REGIONS_MAX:
        raise ClusterError(f"at most {REGIONS_MAX} regions, not {len(names)}")
    for name in names:
        try:
            pki.validate_region(name)
        except pki.PkiError as error:
            raise ClusterError(str(error)) from error
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ClusterError(f"region named more than once: {', '.join(duplicates)}")
    return names


def _create(
    directory: Path, regions: list[str], base_address: str, account_id: str, report: Report
) -> ClusterSpec:
    if not (len(account_id) == 12 and account_id.isascii() and account_id.isdigit()):
        raise ClusterError(f"invalid account id {account_id!r}: expected 12 digits")
    try:
        base = ipaddress.IPv4Address(base_address)
    except ValueError as error:
        raise ClusterError(f"invalid base address {base_address!r}: {error}") from error
    hosts = [base + index for index in range(len(regions))]
    if not all(host.is_loopback for host in hosts):
        raise ClusterError(
            f"{len(regions)} regions from {base_address} leave 127.0.0.0/8; "
            "choose a lower --base-address"
        )
    pki_dir = directory / "pki"
    entries: dict[str, RegionEntry] = {}
    try:
        if pki.ca_paths(pki_dir)[0].exists():
            report(f"reusing the CA in {pki_dir}")
        else:
            pki.init_ca(pki_dir)
        for region, host in zip(regions, hosts, strict=True):
            pki.issue_node(pki_dir, region, ips=[str(host)])
        client_cert, client_key = pki.issue_client(pki_dir, ADMIN_PRINCIPAL)
    except pki.PkiError as error:
        raise ClusterError(str(error)) from error
    for region, host in zip(regions, hosts, strict=True):
        region_dir = directory / "regions" / region
        entries[region] = RegionEntry(
            endpoint=f"{host}:{ports.pick_port(str(host))}",
            server_name=pki.node_server_name(region),
            pid=None,
            config=region_dir / "node.toml",
            data_dir=region_dir / "data",
            log=region_dir / "node.log",
        )
    return ClusterSpec(
        directory=directory,
        account_id=account_id,
        ca_cert=pki.ca_paths(pki_dir)[0],
        client_cert=client_cert,
        client_key=client_key,
        principal=ADMIN_PRINCIPAL,
        regions=entries,
    )


def _prepare_restart(spec: ClusterSpec, regions: list[str], report: Report) -> ClusterSpec:
    """Check that a stopped cluster may restart; keep addresses, re-pick ports in use."""
    directory = spec.directory
    if set(regions) != set(spec.regions):
        raise ClusterError(
            f"the cluster in {directory} has regions {', '.join(spec.regions)}, not "
            f"{', '.join(regions)}; `up` restarts it with its own regions only "
            "(use another --dir for another cluster)"
        )
    running: list[str] = []
    for region, entry in spec.regions.items():
        if entry.pid is None:
            continue
        if processes.is_ours(entry.pid, entry.config):
            running.append(region)
        else:
            report(f"region {region}: process {entry.pid} is gone; treating it as stopped")
            spec = spec.with_region(region, pid=None)
    if running:
        stopped = [region for region in spec.regions if region not in running]
        hint = (
            f" (stopped: {', '.join(stopped)}; `meridian cluster start` starts one)"
            if stopped
            else ""
        )
        raise ClusterError(
            f"cluster in {directory} is already running (regions {', '.join(running)}){hint}; "
            f"run `meridian cluster down --dir {directory}` first"
        )
    pki_dir = directory / "pki"
    for path in (spec.ca_cert, spec.client_cert, spec.client_key):
        if not path.is_file():
            raise ClusterError(f"{path} is missing; the cluster's PKI in {pki_dir} is incomplete")
    for region, entry in spec.regions.items():
        try:
            if not all(path.is_file() for path in pki.node_paths(pki_dir, region)):
                report(f"region {region}: re-issuing its missing node certificate")
                pki.issue_node(pki_dir, region, ips=[entry.host])
        except pki.PkiError as error:
            raise ClusterError(str(error)) from error
        if not ports.port_is_free(entry.host, entry.port):
            endpoint = f"{entry.host}:{ports.pick_port(entry.host)}"
            report(f"region {region}: port {entry.direct_endpoint} is taken; moving to {endpoint}")
            # Behind a proxy, clients keep their address; only the proxy's upstream moves.
            client_endpoint = entry.endpoint if entry.proxied else endpoint
            spec = spec.with_region(region, direct_endpoint=endpoint, endpoint=client_endpoint)
    report(f"restarting the stopped cluster in {directory} on its existing data")
    return spec


def _write_node_config(spec: ClusterSpec, region: str) -> None:
    entry = spec.regions[region]
    region_dir = entry.config.parent
    region_dir.mkdir(parents=True, exist_ok=True)
    node_cert, node_key = pki.node_paths(spec.directory / "pki", region)

    def relative(path: Path) -> str:
        # Relative paths keep the folder movable; the node resolves them against region_dir.
        return os.path.relpath(path, region_dir)

    document: dict[str, Any] = {
        "region": region,
        "account_id": spec.account_id,
        "listen": entry.direct_endpoint,
        "data_dir": relative(entry.data_dir),
        "tls": {
            "ca_cert": relative(spec.ca_cert),
            "cert": relative(node_cert),
            "key": relative(node_key),
        },
        "root_key": cluster_hsm.root_key_table(spec.directory, region, entry.data_dir),
        "log": {"level": "info"},
    }
    peers = [
        # Through the link's proxy when the cluster emulates its network.
        {"region": peer, "endpoint": spec.peer_endpoint(region, peer)}
        for peer in spec.regions
        if peer != region
    ]
    if peers:
        document["peers"] = peers
    document.update(cluster_aws.node_config_tables(entry))
    pki.write_atomic(entry.config, tomli_w.dumps(document).encode(), mode=0o644, overwrite=True)


# ---------------------------------------------------------------------------------------
# Processes


def _start_regions(
    spec: ClusterSpec, regions: list[str], ready_timeout_s: float, report: Report
) -> ClusterSpec:
    """Spawn the nodes of `regions` and wait until all are SERVING; all or nothing."""
    started: list[str] = []
    # Where each log stood before this start: a failure quotes only this start's output.
    log_offsets: dict[str, int] = {}
    try:
        for region in regions:
            log_offsets[region] = processes.file_size(spec.regions[region].log)
            pid = _spawn_node(region, spec.regions[region])
            started.append(region)
            spec = spec.with_region(region, pid=pid)
            # Written per node, so a crash of this command leaves a file that `down` can use.
            cluster_state.write(spec)
            report(f"region {region}: started pid {pid} on {spec.regions[region].direct_endpoint}")
        report(f"waiting up to {ready_timeout_s:g} s for {len(started)} node(s) to be SERVING")
        _wait_ready(spec, log_offsets, ready_timeout_s)
    except BaseException:
        # Also on KeyboardInterrupt: a half-started cluster would only confuse the next `up`.
        _stop(spec, started, STOP_TIMEOUT_S_DEFAULT, report)
        raise
    return spec


def _spawn_node(region: str, entry: RegionEntry) -> int:
    entry.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return processes.spawn(
            node_command(entry.config),
            entry.log,
            f"starting {region} on {entry.direct_endpoint}",
        )
    except OSError as error:
        raise ClusterError(f"region {region}: cannot start its node: {error}") from error


def _running_pid(spec: ClusterSpec, region: str, report: Report) -> int | None:
    """The pid of the region's running node; None if stopped. Unknown regions raise."""
    entry = cluster_state.region_entry(spec, region)
    if entry.pid is None:
        return None
    if processes.is_ours(entry.pid, entry.config):
        return entry.pid
    report(f"region {region}: process {entry.pid} is gone; treating it as stopped")
    return None


def _stop(
    spec: ClusterSpec, regions: Sequence[str], stop_timeout_s: float, report: Report
) -> tuple[ClusterSpec, dict[str, str]]:
    """SIGTERM the nodes of `regions`, SIGKILL those alive at the deadline, record pids."""
    pids: dict[str, int] = {}
    for region in regions:
        entry = spec.regions[region]
        if entry.pid is not None and processes.is_ours(entry.pid, entry.config):
            pids[region] = entry.pid
    for pid in pids.values():
        processes.send_signal(pid, signal.SIGTERM)
    outcomes = {region: "stopped" for region in regions}
    leftovers = processes.wait_gone(pids, stop_timeout_s)
    for region in leftovers:
        report(f"region {region}: no exit within {stop_timeout_s:g} s of SIGTERM; sending SIGKILL")
        processes.send_signal(pids[region], signal.SIGKILL)
        outcomes[region] = f"killed (still running {stop_timeout_s:g} s after SIGTERM)"
    survivors = processes.wait_gone({region: pids[region] for region in leftovers}, KILL_WAIT_S)
    for region in regions:
        if region in survivors:
            outcomes[region] = f"still running after SIGKILL (pid {pids[region]})"
        else:
            spec = spec.with_region(region, pid=None)
    cluster_state.write(spec)
    return spec, outcomes


# ---------------------------------------------------------------------------------------
# Health


class _Probe(NamedTuple):
    health: str  # a grpc.health.v1 serving status name, or "unreachable"
    detail: str


def _client_credentials(spec: ClusterSpec) -> grpc.ChannelCredentials:
    try:
        return grpc.ssl_channel_credentials(
            root_certificates=spec.ca_cert.read_bytes(),
            private_key=spec.client_key.read_bytes(),
            certificate_chain=spec.client_cert.read_bytes(),
        )
    except OSError as error:
        raise ClusterError(f"cannot read the cluster's client credentials: {error}") from error


def _channel(
    credentials: grpc.ChannelCredentials,
    entry: RegionEntry,
    extra_options: Sequence[tuple[str, int]] = (),
) -> grpc.Channel:
    # The node's certificate names its region's DNS name, not the loopback address.
    options: list[tuple[str, str | int]] = [("grpc.ssl_target_name_override", entry.server_name)]
    options.extend(extra_options)
    # Straight to the node: its health is the node's, whatever the client links suffer.
    return grpc.secure_channel(entry.direct_endpoint, credentials, options=options)


def region_channel(spec: ClusterSpec, entry: RegionEntry) -> grpc.Channel:
    """An mTLS channel (admin certificate) straight to a region's node, for operator calls."""
    return _channel(_client_credentials(spec), entry)


def _check(channel: grpc.Channel, timeout_s: float) -> _Probe:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.RpcError as error:
        return _Probe("unreachable", f"{error.code().name}: {error.details()}")
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return _Probe(name, name)


def _probe(credentials: grpc.ChannelCredentials, entry: RegionEntry, timeout_s: float) -> _Probe:
    with _channel(credentials, entry) as channel:
        return _check(channel, timeout_s)


def _wait_ready(spec: ClusterSpec, log_offsets: Mapping[str, int], ready_timeout_s: float) -> None:
    """Poll every started node until all answer SERVING; fail fast if one exits."""
    regions = list(log_offsets)
    deadline = time.monotonic() + ready_timeout_s
    credentials = _client_credentials(spec)
    channels = {
        region: _channel(credentials, spec.regions[region], _READY_CHANNEL_OPTIONS)
        for region in regions
    }
    last_probe = {region: "no answer yet" for region in regions}
    try:
        pending = list(regions)
        while pending:
            for region in list(pending):
                entry = spec.regions[region]
                assert entry.pid is not None
                # Reaped here, before `is_ours` would reap it and drop how it ended.
                exit_code = processes.reap(entry.pid)
                if exit_code is not None or not processes.is_ours(entry.pid, entry.config):
                    if exit_code is None:
                        exit_code = processes.exit_code(entry.pid, _EXIT_CODE_WAIT_S)
                    reason = f"{processes.describe_exit(exit_code)} during startup"
                    raise ClusterError(_node_failure(region, entry, reason, log_offsets[region]))
                remaining_s = deadline - time.monotonic()
                timeout_s = max(processes.POLL_INTERVAL_S, min(_READY_PROBE_TIMEOUT_S, remaining_s))
                probe = _check(channels[region], timeout_s)
                if probe.health == "SERVING":
                    pending.remove(region)
                else:
                    last_probe[region] = probe.detail
            if pending and time.monotonic() >= deadline:
                region = pending[0]
                reason = (
                    f"did not become SERVING within {ready_timeout_s:g} s "
                    f"(last health check: {last_probe[region]})"
                )
                entry = spec.regions[region]
                raise ClusterError(_node_failure(region, entry, reason, log_offsets[region]))
            if pending:
                time.sleep(_READY_POLL_INTERVAL_S)
    finally:
        for channel in channels.values():
            channel.close()


def _node_failure(region: str, entry: RegionEntry, reason: str, log_offset: int) -> str:
    return processes.failure(f"region {region}", reason, entry.log, log_offset, LOG_TAIL_LINES)
