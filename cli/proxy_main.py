"""The link proxy's process: `python -m meridian.cli.proxy_main --dir DIR`.

`meridian cluster up` starts it (cli/cluster_network.py); `meridian cluster proxy --dir
DIR` runs it in the foreground. It imports only what the proxy needs, so it starts fast
and does not depend on the rest of the command line. It serves every route of the
cluster (cli/netem/proxy.py) with the shapes of DIR/network/links.json, and the control
API (cli/netem/control.py) on the address cluster.json names, until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from meridian.cli import cluster_network, cluster_state
from meridian.cli.cluster_state import ClusterError, ClusterSpec
from meridian.cli.netem import control
from meridian.cli.netem.proxy import Proxy, ProxyError
from meridian.cli.netem.shape import LinkId

log = structlog.get_logger("meridian.netem")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meridian cluster proxy", description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the cluster's folder")
    args = parser.parse_args(argv)
    return run(args.dir)


def run(directory: Path) -> int:
    from meridian.server.logging import configure_logging

    configure_logging("info", region="proxy")
    try:
        serve(directory)
    except (ClusterError, OSError) as error:
        print(f"meridian cluster proxy: {error}", file=sys.stderr)
        return 1
    return 0


def serve(directory: Path) -> None:
    """Run the proxy of the cluster in `directory` until SIGTERM or SIGINT."""
    directory = directory.resolve()
    spec = cluster_state.read(directory)
    if spec.proxy is None:
        raise ClusterError(f"the cluster in {directory} has no link proxy (network 'direct')")
    asyncio.run(_serve(spec, cluster_network.token(directory)))


async def _serve(spec: ClusterSpec, token: str) -> None:
    assert spec.proxy is not None
    directory = spec.directory
    current = cluster_network.read_links(directory)
    # Jitter and loss need dice, not secrets.
    rng = random.Random()  # noqa: S311
    proxy = Proxy(cluster_network.routes(spec), current.current, rng=rng)
    revision = current.revision

    async def handle(operation: str) -> dict[str, Any]:
        nonlocal revision
        if operation == "ping":
            return {"revision": revision, "pid": os.getpid()}
        if operation == "reload":
            try:
                fresh = cluster_network.read_links(directory)
            except ClusterError as error:
                raise control.ControlError(str(error)) from None
            proxy.set_shapes(fresh.current)
            revision = fresh.revision
            log.info("links reloaded", revision=revision, faults=_describe(fresh.faults()))
            return {"revision": revision}
        if operation == "stats":
            links = {str(link): stats.to_json() for link, stats in proxy.stats().items()}
            return {"revision": revision, "links": links}
        raise control.ControlError(f"unknown op {operation!r}")

    server = control.ControlServer(token, handle)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await proxy.start()
        await server.start(*cluster_network.address(spec.proxy.control))
    except (ProxyError, OSError) as error:
        await proxy.close()
        raise ClusterError(f"the link proxy cannot start: {error}") from None
    log.info("link proxy ready", routes=len(proxy.routes), revision=revision)
    try:
        await stop.wait()
    finally:
        await server.close()
        await proxy.close()
        log.info("link proxy stopped")


def _describe(faults: Mapping[LinkId, str]) -> dict[str, str]:
    return {str(link): shape for link, shape in faults.items()}


if __name__ == "__main__":
    sys.exit(main())
