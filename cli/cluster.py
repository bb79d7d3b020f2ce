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

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import ipaddress
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meridian.cli import pki

__all__ = [
    "ClusterError",
    "ClusterSpec",
    "RegionEntry",
    "RegionStatus",
    "down",
    "kill",
    "load",
    "node_command",
    "start",
    "status",
    "up",
]

CLUSTER_FILE_NAME = "cluster.json"
CLUSTER_FILE_FORMAT = 1
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
_LOG_TAIL_BYTES_MAX = 64 * 1024
_POLL_INTERVAL_S = 0.05
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

    @property
    def host(self) -> str:
        return self.endpoint.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.endpoint.rpartition(":")[2])


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

    @property
    def path(self) -> Path:
        return self.directory / CLUSTER_FILE_NAME

    def with_region(self, region: str, **changes: Any) -> ClusterSpec:
        regions = dict(self.regions)
        regions[region] = dataclasses.replace(regions[region], **changes)
        return dataclasses.replace(self, regions=regions)


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
    report: Report = _silent,
) -> ClusterSpec:
    """Create the cluster in `directory` (or restart a stopped one there) and wait for it.

    Returns once every node answers SERVING; otherwise stops the nodes it started and
    raises :class:`ClusterError` quoting the failing node's log.
    """
    regions = _validate_regions(regions)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        if (directory / CLUSTER_FILE_NAME).exists():
            spec = _prepare_restart(_read(directory), regions, report)
        else:
            spec = _create(directory, regions, base_address, account_id, report)
        for region in spec.regions:
            _write_node_config(spec, region)
        _write(spec)
        return _start_regions(spec, list(spec.regions), ready_timeout_s, report)


def status(
    directory: Path, *, probe_timeout_s: float = PROBE_TIMEOUT_S_DEFAULT
) -> list[RegionStatus]:
    """Each region's process and health, in the order of `up`. Changes nothing on disk."""
    spec = _read(directory.resolve())
    credentials = _client_credentials(spec)

    def region_status(region: str) -> RegionStatus:
        entry = spec.regions[region]
        if entry.pid is None:
            return RegionStatus(region, entry.endpoint, None, False, "unreachable")
        if not _is_our_node(entry.pid, entry.config):
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
    with _locked(directory):
        spec = _read(directory)
        outcomes: dict[str, str] = {}
        running: list[str] = []
        for region, entry in spec.regions.items():
            if entry.pid is None:
                outcomes[region] = "not running"
            elif not _is_our_node(entry.pid, entry.config):
                outcomes[region] = f"not running (process {entry.pid} was already gone)"
                spec = spec.with_region(region, pid=None)
            else:
                running.append(region)
        _write(spec)
        spec, stopped = _stop(spec, running, stop_timeout_s, report)
        outcomes.update(stopped)
        return {region: outcomes[region] for region in spec.regions}


def kill(directory: Path, region: str, *, report: Report = _silent) -> int:
    """SIGKILL the node of `region` (a crash drill); returns the pid that was killed."""
    directory = directory.resolve()
    with _locked(directory):
        spec = _read(directory)
        pid = _running_pid(spec, region, report)
        if pid is None:
            _write(spec.with_region(region, pid=None))
            raise ClusterError(f"region {region} is not running in {directory}")
        _signal(pid, signal.SIGKILL)
        if _wait_gone({region: pid}, KILL_WAIT_S):
            raise ClusterError(
                f"region {region}'s node (pid {pid}) is still alive {KILL_WAIT_S:g} s after SIGKILL"
            )
        _write(spec.with_region(region, pid=None))
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
    with _locked(directory):
        spec = _read(directory)
        entry = _region_entry(spec, region)
        pid = _running_pid(spec, region, report)
        if pid is not None:
            raise ClusterError(f"region {region} is already running (pid {pid})")
        spec = spec.with_region(region, pid=None)
        _write(spec)
        if not entry.config.is_file():
            raise ClusterError(
                f"the config of region {region} ({entry.config}) is missing; run "
                f"`meridian cluster down --dir {directory}` and `up` again to rewrite it"
            )
        # The peers' configs name this port, so a restarted node must get the same one.
        if not _port_frees_up(entry.host, entry.port, PORT_GRACE_S):
            raise ClusterError(
                f"port {entry.endpoint} of region {region} is in use by another process; "
                f"free it, or run `meridian cluster down --dir {directory}` and `up` again "
                "to pick new ports"
            )
        return _start_regions(spec, [region], ready_timeout_s, report)


def load(directory: Path) -> ClusterSpec:
    """Read `DIR/cluster.json`."""
    return _read(directory.resolve())


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
            endpoint=f"{host}:{_pick_port(str(host))}",
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
        if _is_our_node(entry.pid, entry.config):
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
        if not _port_is_free(entry.host, entry.port):
            endpoint = f"{entry.host}:{_pick_port(entry.host)}"
            report(f"region {region}: port {entry.endpoint} is taken; moving to {endpoint}")
            spec = spec.with_region(region, endpoint=endpoint)
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
        "listen": entry.endpoint,
        "data_dir": relative(entry.data_dir),
        "tls": {
            "ca_cert": relative(spec.ca_cert),
            "cert": relative(node_cert),
            "key": relative(node_key),
        },
        "root_key": {"provider": "file", "path": "root.key"},
        "log": {"level": "info"},
    }
    peers = [
        {"region": peer, "endpoint": peer_entry.endpoint}
        for peer, peer_entry in spec.regions.items()
        if peer != region
    ]
    if peers:
        document["peers"] = peers
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
            log_offsets[region] = _file_size(spec.regions[region].log)
            pid = _spawn(region, spec.regions[region])
            started.append(region)
            spec = spec.with_region(region, pid=pid)
            # Written per node, so a crash of this command leaves a file that `down` can use.
            _write(spec)
            report(f"region {region}: started pid {pid} on {spec.regions[region].endpoint}")
        report(f"waiting up to {ready_timeout_s:g} s for {len(started)} node(s) to be SERVING")
        _wait_ready(spec, log_offsets, ready_timeout_s)
    except BaseException:
        # Also on KeyboardInterrupt: a half-started cluster would only confuse the next `up`.
        _stop(spec, started, STOP_TIMEOUT_S_DEFAULT, report)
        raise
    return spec


def _spawn(region: str, entry: RegionEntry) -> int:
    """Start a region's node in its own session with stdout and stderr appended to its log.

    posix_spawn rather than subprocess.Popen: the node must outlive this command, and a
    Popen object dropped while its child runs warns (ResourceWarning) on collection.
    setsid puts the node in its own session, so Ctrl-C on the command does not reach it.
    """
    entry.log.parent.mkdir(parents=True, exist_ok=True)
    entry.data_dir.mkdir(parents=True, exist_ok=True)
    moment = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with entry.log.open("a", encoding="utf-8") as log:
        log.write(f"--- meridian cluster: starting {region} on {entry.endpoint} at {moment} ---\n")
    environment = dict(os.environ)
    environment["PYTHONUNBUFFERED"] = "1"
    try:
        return os.posix_spawn(
            sys.executable,
            node_command(entry.config),
            environment,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (
                    os.POSIX_SPAWN_OPEN,
                    1,
                    str(entry.log),
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                    0o644,
                ),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
    except OSError as error:
        raise ClusterError(f"region {region}: cannot start its node: {error}") from error


def _is_our_node(pid: int, config: Path) -> bool:
    """Whether `pid` is alive and is the node we started for `config`.

    Pids are reused: after a reboot or enough churn, a recorded pid may name an unrelated
    process, which must never be signalled. The node's command line carries its config
    path, which no unrelated process is likely to have.
    """
    _reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
        # Without /proc (not Linux) existence is all that can be checked.
        return _exists(pid)
    except OSError:
        return False
    # A zombie has an empty command line: it has exited and only waits to be reaped.
    return os.fsencode(str(config)) in cmdline.split(b"\0")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> int | None:
    """Collect `pid`'s exit status if it is our exited child; its exit code, else None."""
    try:
        reaped, wait_status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if reaped == 0:
        return None
    return os.waitstatus_to_exitcode(wait_status)


def _signal(pid: int, signal_number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal_number)


def _running_pid(spec: ClusterSpec, region: str, report: Report) -> int | None:
    """The pid of the region's running node; None if stopped. Unknown regions raise."""
    entry = _region_entry(spec, region)
    if entry.pid is None:
        return None
    if _is_our_node(entry.pid, entry.config):
        return entry.pid
    report(f"region {region}: process {entry.pid} is gone; treating it as stopped")
    return None


def _has_exited(pid: int) -> bool:
    """Whether `pid` has finished exiting: reaped, or a zombie that holds nothing any more.

    A process being killed loses its command line (its memory) before it closes its
    files and sockets, so `_is_our_node` turns False too early to mean "its port is free".
    """
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Without /proc (not Linux) existence is all that can be checked.
        return Path("/proc/self").exists() or not _exists(pid)
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold anything.
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _wait_gone(pids: Mapping[str, int], timeout_s: float) -> list[str]:
    """Wait until every process has exited; returns the regions alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    alive = [region for region, pid in pids.items() if not _has_exited(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL_S)
        alive = [region for region in alive if not _has_exited(pids[region])]
    return alive


def _exit_code(pid: int, timeout_s: float) -> int | None:
    """Wait a moment for an exiting child's status, to say how it ended; None if unknown."""
    deadline = time.monotonic() + timeout_s
    while True:
        exit_code = _reap(pid)
        if exit_code is not None or time.monotonic() >= deadline:
            return exit_code
        time.sleep(_POLL_INTERVAL_S)


def _stop(
    spec: ClusterSpec, regions: Sequence[str], stop_timeout_s: float, report: Report
) -> tuple[ClusterSpec, dict[str, str]]:
    """SIGTERM the nodes of `regions`, SIGKILL those alive at the deadline, record pids."""
    processes: dict[str, int] = {}
    for region in regions:
        entry = spec.regions[region]
        if entry.pid is not None and _is_our_node(entry.pid, entry.config):
            processes[region] = entry.pid
    for pid in processes.values():
        _signal(pid, signal.SIGTERM)
    outcomes = {region: "stopped" for region in regions}
    leftovers = _wait_gone(processes, stop_timeout_s)
    for region in leftovers:
        report(f"region {region}: no exit within {stop_timeout_s:g} s of SIGTERM; sending SIGKILL")
        _signal(processes[region], signal.SIGKILL)
        outcomes[region] = f"killed (still running {stop_timeout_s:g} s after SIGTERM)"
    survivors = _wait_gone({region: processes[region] for region in leftovers}, KILL_WAIT_S)
    for region in regions:
        if region in survivors:
            outcomes[region] = f"still running after SIGKILL (pid {processes[region]})"
        else:
            spec = spec.with_region(region, pid=None)
    _write(spec)
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
    return grpc.secure_channel(entry.endpoint, credentials, options=options)


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
                if not _is_our_node(entry.pid, entry.config):
                    exit_code = _exit_code(entry.pid, _EXIT_CODE_WAIT_S)
                    reason = f"{_describe_exit(exit_code)} during startup"
                    raise ClusterError(_node_failure(region, entry, reason, log_offsets[region]))
                remaining_s = deadline - time.monotonic()
                timeout_s = max(_POLL_INTERVAL_S, min(_READY_PROBE_TIMEOUT_S, remaining_s))
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


def _describe_exit(exit_code: int | None) -> str:
    if exit_code is None:
        return "its node exited"
    if exit_code < 0:
        return f"its node was killed by signal {-exit_code}"
    return f"its node exited with code {exit_code}"


def _node_failure(region: str, entry: RegionEntry, reason: str, log_offset: int) -> str:
    lines = _log_tail(entry.log, log_offset, LOG_TAIL_LINES)
    quoted = "\n".join(f"    {line}" for line in lines) if lines else "    (the log is empty)"
    return f"region {region}: {reason}; last lines of {entry.log}:\n{quoted}"


def _log_tail(path: Path, offset: int, lines_max: int) -> list[str]:
    """The last `lines_max` lines written to `path` after `offset`."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - _LOG_TAIL_BYTES_MAX))
            data = log.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines_max:]


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------------------
# Ports


def _pick_port(host: str) -> int:
    """A port that is free on `host` now; the node binds it a moment later."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
            return port
    except OSError as error:
        raise ClusterError(
            f"cannot bind to {host}: {error.strerror} (every region needs its own loopback "
            "address; Linux routes all of 127.0.0.0/8 to loopback, other systems may need "
            "an alias per address)"
        ) from error


def _port_frees_up(host: str, port: int, grace_s: float) -> bool:
    """Whether the port is free now or within `grace_s`.

    Right after a node is killed the kernel may hold its sockets briefly; waiting a
    moment tells that apart from a port that another process really holds.
    """
    deadline = time.monotonic() + grace_s
    while not _port_is_free(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR, as the node's gRPC server uses: connections of a killed node
        # linger in TIME_WAIT on this port, and they must not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise ClusterError(f"cannot bind to {host}:{port}: {error.strerror}") from error
    return True


# ---------------------------------------------------------------------------------------
# Files


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold DIR/cluster.lock so two commands never start or stop the same nodes at once."""
    _require_directory(directory)
    with (directory / "cluster.lock").open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ClusterError(
                f"another `meridian cluster` command is working on {directory}; "
                "try again when it has finished"
            ) from error
        yield


def _require_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise ClusterError(
            f"{directory} does not exist; create a cluster there with "
            f"`meridian cluster up --regions REGION,... --dir {directory}`"
        )


def _read(directory: Path) -> ClusterSpec:
    _require_directory(directory)
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


def _from_json(directory: Path, document: Any) -> ClusterSpec:
    def field(obj: Any, name: str, kind: type[Any]) -> Any:
        if not isinstance(obj, dict):
            raise TypeError(f"expected an object around {name!r}")
        value = obj[name]
        # bool is an int in Python, but never a valid pid or format.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"{name!r} should be {kind.__name__}, not {value!r}")
        return value

    if field(document, "format", int) != CLUSTER_FILE_FORMAT:
        raise ValueError(f"format {document['format']} is not {CLUSTER_FILE_FORMAT}")
    regions: dict[str, RegionEntry] = {}
    for region, raw in field(document, "regions", dict).items():
        pid = raw.get("pid") if isinstance(raw, dict) else None
        regions[pki.validate_region(region)] = RegionEntry(
            endpoint=field(raw, "endpoint", str),
            server_name=field(raw, "server_name", str),
            pid=None if pid is None else field(raw, "pid", int),
            config=Path(field(raw, "config", str)),
            data_dir=Path(field(raw, "data_dir", str)),
            log=Path(field(raw, "log", str)),
        )
    if not regions:
        raise ValueError("it names no region")
    return ClusterSpec(
        directory=directory,
        account_id=field(document, "account_id", str),
        ca_cert=Path(field(document, "ca_cert", str)),
        client_cert=Path(field(document, "client_cert", str)),
        client_key=Path(field(document, "client_key", str)),
        principal=field(document, "principal", str),
        regions=regions,
    )


def _to_json(spec: ClusterSpec) -> dict[str, Any]:
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
                "server_name": entry.server_name,
                "pid": entry.pid,
                "config": str(entry.config),
                "data_dir": str(entry.data_dir),
                "log": str(entry.log),
            }
            for region, entry in spec.regions.items()
        },
    }


def _write(spec: ClusterSpec) -> None:
    text = json.dumps(_to_json(spec), indent=2) + "\n"
    # Readers (clients, other commands) see the old file or the new one, never a mix.
    pki.write_atomic(spec.path, text.encode(), mode=0o644, overwrite=True)


def _region_entry(spec: ClusterSpec, region: str) -> RegionEntry:
    try:
        return spec.regions[region]
    except KeyError:
        raise ClusterError(
            f"unknown region {region!r}; the cluster in {spec.directory} has "
            f"{', '.join(spec.regions)}"
        ) from None
