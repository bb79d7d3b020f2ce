"""Several worker processes per node: one listen address, one SQLite store (WAL).

``workers = N`` in the node's config makes ``meridian node`` a *supervisor* that runs N
worker processes, each a complete node (server/node.py) on the same ``listen`` address
with ``SO_REUSEPORT``: the kernel spreads connections across them, so CPU-bound calls
(TLS, protobuf, crypto) use more than one core. What makes sharing one database safe:

- **Caches**: every commit of the key store bumps a counter all workers map
  (storage/commit_counter.py) before it is acknowledged; each worker compares it at
  the start of every call and before it trusts its key cache, and clears its key,
  material, grant and identity-policy caches when it moved.
- **Audit**: one hash chain. Each worker's group-commit writer chains its batch onto
  the head stored in the database, read inside its ``BEGIN IMMEDIATE`` transaction
  (SQLite's write lock serialises the workers), so records form one sequence in
  commit order and ``meridian audit verify`` is unchanged. Worker 0 seals and prunes.
- **Background work** (deletion sweeper, rotation and import expiry, audit sealing,
  metrics, the AWS endpoint) runs in worker 0 only.
- **Start**: worker 0 starts first and alone (migrations, recovery of orphaned audit
  intents, which is only safe while no other worker serves), then the others.
- **A worker that dies** stops the whole node (the others are drained with SIGTERM,
  the supervisor exits non-zero) instead of being restarted alone: its orphaned audit
  intents may only be recovered while no worker runs, and its commit might not have
  reached the shared counter. The service manager restarts the node.
- Workers die with the supervisor (``PR_SET_PDEATHSIG``), so a SIGKILLed node leaves
  no worker serving its port.

Not supported with ``workers > 1``: ``[[peers]]`` (replication keeps per-peer state in
the process that runs it; config.py refuses the combination).
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from meridian.server import event_loop
from meridian.server.config import NodeConfig
from meridian.server.worker_role import WorkerRole

log = structlog.get_logger("meridian.workers")

# Worker 0 runs the migrations and recovery before it is ready; a large store or a
# slow HSM can take a while, but a worker that never answers is a failed start.
WORKER_READY_TIMEOUT_S = 120.0
# SIGTERM drains a worker's calls (node.SHUTDOWN_GRACE_S) and seals the audit trail.
WORKER_STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


class WorkersFailed(Exception):
    """A worker could not start; the message says why."""


def run_workers(config: NodeConfig) -> int:
    """Run ``config.workers`` worker processes until SIGTERM/SIGINT; the exit status."""
    from meridian.server.data_dir_lock import DataDirBusy, DataDirLock

    try:
        # Shared, as each worker's: offline tools (seed-keys) are refused while any runs.
        lock = DataDirLock.acquire(config.data_dir, role="node", shared=True)
    except (DataDirBusy, OSError) as error:
        print(f"meridian node: {error}", file=sys.stderr)
        return 1
    stopping = _StopFlag()
    previous = {
        signum: signal.signal(signum, stopping.set) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    supervisor = _Supervisor(config, stopping)
    try:
        supervisor.start_all()
        return supervisor.watch()
    except WorkersFailed as error:
        if stopping.requested:
            return 0  # told to stop while starting: not a failure
        print(f"meridian node: {error}", file=sys.stderr)
        return 1
    finally:
        supervisor.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        lock.release()


class _StopFlag:
    def __init__(self) -> None:
        self.requested = False

    def set(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


class _Supervisor:
    def __init__(self, config: NodeConfig, stopping: _StopFlag) -> None:
        self._config = config
        self._stopping = stopping
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess] = []

    def start_all(self) -> None:
        count = self._config.workers
        # Worker 0 alone first: it migrates the store and recovers the audit trail.
        port = self._start(0, self._config)
        host = self._config.listen.rpartition(":")[0]
        # Port 0 (tests) binds a free port in worker 0; the others join that one. Only
        # worker 0 serves metrics and the AWS endpoint.
        others = replace(self._config, listen=f"{host}:{port}")
        for index in range(1, count):
            self._start(index, others)
        log.info("node ready", listen=f"{host}:{port}", port=port, workers=count)

    def _start(self, index: int, config: NodeConfig) -> int:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(config, WorkerRole(index, config.workers), sender, os.getpid()),
            name=f"meridian-worker-{index}",
        )
        process.start()
        sender.close()
        self._processes.append(process)
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while True:
            if self._stopping.requested:
                raise WorkersFailed("stopped while the workers were starting")
            ready = wait([receiver, process.sentinel], timeout=0.2)
            if receiver in ready:
                try:
                    message = receiver.recv()
                except EOFError:
                    message = ("error", f"worker {index} exited while starting")
                break
            if process.sentinel in ready:
                message = ("error", f"worker {index} exited while starting")
                break
            if time.monotonic() > deadline:
                raise WorkersFailed(f"worker {index} did not start in {WORKER_READY_TIMEOUT_S} s")
        receiver.close()
        kind, value = message
        if kind != "ready":
            raise WorkersFailed(str(value))
        return int(value)

    def watch(self) -> int:
        """Wait for a stop signal (exit 0) or a worker's death (exit 1)."""
        sentinels = [process.sentinel for process in self._processes]
        while not self._stopping.requested:
            if wait(sentinels, timeout=0.2):
                dead = [p for p in self._processes if not p.is_alive()]
                for process in dead:
                    log.error(
                        "worker exited; stopping the node",
                        worker=process.name,
                        exitcode=process.exitcode,
                    )
                return 1
        log.info("shutting down", workers=len(self._processes))
        return 0

    def stop_all(self) -> None:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker did not stop; killing it", worker=process.name)
                process.kill()
                process.join()
        self._processes.clear()


def worker_main(
    config: NodeConfig, role: WorkerRole, ready: Connection, supervisor_pid: int
) -> None:
    """A worker process's entry point (multiprocessing, spawn)."""
    _die_with_parent()
    if os.getppid() != supervisor_pid:
        # The supervisor died before the death signal was armed.
        return
    from meridian.server.logging import configure_logging

    configure_logging(config.log_level, region=config.region)
    structlog.contextvars.bind_contextvars(worker=role.index)
    try:
        event_loop.run(_serve_worker(config, role, ready), config.event_loop)
    except KeyboardInterrupt:
        pass
    finally:
        ready.close()


async def _serve_worker(config: NodeConfig, role: WorkerRole, ready: Connection) -> None:
    from meridian.server.domain.clock import SystemClock
    from meridian.server.node import Node, NodeStartError

    node = Node(config=config, clock=SystemClock(), worker=role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        port = await node.start()
    except NodeStartError as error:
        ready.send(("error", str(error)))
        return
    ready.send(("ready", port))
    try:
        await stop.wait()
    finally:
        await node.stop()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the supervisor dies (no orphan keeps
    serving the port). Elsewhere the worker outlives a SIGKILLed supervisor."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
