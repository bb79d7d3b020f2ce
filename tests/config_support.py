"""A minimal node config, for tests of one setting of `meridian.server.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BASE = Path("/etc/meridian")


def config(**extra: Any) -> dict[str, Any]:
    """The smallest valid node config as parsed TOML, plus ``extra`` settings."""
    return {
        "region": "us-east-1",
        "listen": "127.0.0.1:7001",
        "data_dir": "data",
        "tls": {"ca_cert": "ca.pem", "cert": "node.pem", "key": "node.key"},
        **extra,
    }
