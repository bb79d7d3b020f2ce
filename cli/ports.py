"""Loopback ports for a local cluster: pick a free one, tell a taken one from a lingering one."""

from __future__ import annotations

import errno
import socket
import time

from meridian.cli.cluster_state import ClusterError

__all__ = ["pick_port", "port_frees_up", "port_is_free"]

_POLL_INTERVAL_S = 0.05


def pick_port(host: str) -> int:
    """A port that is free on `host` now; its user binds it a moment later."""
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


def port_frees_up(host: str, port: int, grace_s: float) -> bool:
    """Whether the port is free now or within `grace_s`.

    Right after a node is killed the kernel may hold its sockets briefly; waiting a
    moment tells that apart from a port that another process really holds.
    """
    deadline = time.monotonic() + grace_s
    while not port_is_free(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR, as the node's gRPC server and the link proxy use: connections of a
        # killed process linger in TIME_WAIT on this port, and they must not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise ClusterError(f"cannot bind to {host}:{port}: {error.strerror}") from error
    return True
