"""The node's TOML configuration (docs/contributors/shared-contracts.md), validated on load.

A bad config stops the node before it opens anything, with a message naming the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meridian.server.domain.identifiers import is_valid_account, is_valid_region

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class RootKeyConfig:
    provider: str
    path: Path


@dataclass(frozen=True, slots=True)
class PeerConfig:
    region: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class NodeConfig:
    region: str
    account_id: str
    listen: str
    data_dir: Path
    tls: TlsConfig
    root_key: RootKeyConfig
    log_level: str = "info"
    peers: tuple[PeerConfig, ...] = field(default=())
    # How often the deletion sweeper looks for keys whose waiting period is over.
    sweep_interval_s: float = 60.0

    @property
    def database_path(self) -> Path:
        return self.data_dir / "meridian.sqlite3"


def load_config(path: Path) -> NodeConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read: {error}") from None
    return parse_config(raw, base=path.resolve().parent)


def parse_config(raw: dict[str, Any], *, base: Path) -> NodeConfig:
    region = _string(raw, "region")
    if not is_valid_region(region):
        raise ConfigError(f"region {region!r} is not a region name like 'us-east-1'")
    account_id = _string(raw, "account_id", "000000000000")
    if not is_valid_account(account_id):
        raise ConfigError("account_id must be 12 digits")
    listen = _string(raw, "listen")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen {listen!r} must be host:port")
    data_dir = _path(base, _string(raw, "data_dir"))

    tls_raw = _table(raw, "tls", required=True)
    tls = TlsConfig(
        ca_cert=_path(base, _string(tls_raw, "ca_cert", context="tls")),
        cert=_path(base, _string(tls_raw, "cert", context="tls")),
        key=_path(base, _string(tls_raw, "key", context="tls")),
    )
    root_raw = _table(raw, "root_key", required=False)
    provider = _string(root_raw, "provider", "file", context="root_key")
    if provider != "file":
        raise ConfigError(f"root_key.provider {provider!r} is not supported (use 'file')")
    root_key = RootKeyConfig(
        provider=provider,
        path=_path(data_dir, _string(root_raw, "path", "root.key", context="root_key")),
    )
    log_raw = _table(raw, "log", required=False)
    level = _string(log_raw, "level", "info", context="log")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log.level must be one of {', '.join(LOG_LEVELS)}")
    peers_raw = raw.get("peers", [])
    if not isinstance(peers_raw, list):
        raise ConfigError("peers must be an array of tables ([[peers]])")
    peers = tuple(
        PeerConfig(
            region=_string(peer, "region", context="peers"),
            endpoint=_string(peer, "endpoint", context="peers"),
        )
        for peer in peers_raw
    )
    sweep = raw.get("sweep_interval_s", 60.0)
    if not isinstance(sweep, int | float) or not 0.01 <= sweep <= 86_400:
        raise ConfigError("sweep_interval_s must be a number of seconds between 0.01 and 86400")
    return NodeConfig(
        region=region,
        account_id=account_id,
        listen=listen,
        data_dir=data_dir,
        tls=tls,
        root_key=root_key,
        log_level=level,
        peers=peers,
        sweep_interval_s=float(sweep),
    )


def _table(raw: dict[str, Any], name: str, *, required: bool) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        if required:
            raise ConfigError(f"[{name}] is required")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table")
    return value


def _string(raw: Any, name: str, default: str | None = None, *, context: str = "") -> str:
    label = f"{context}.{name}" if context else name
    if not isinstance(raw, dict):
        raise ConfigError(f"{context} entries must be tables")
    value = raw.get(name, default)
    if value is None:
        raise ConfigError(f"{label} is required")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{label} must be a non-empty string")
    return value


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)
