"""The node's TOML configuration (docs/contributors/shared-contracts.md), validated on load.

A bad config stops the node before it opens anything, with a message naming the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from meridian.server.access_settings import AccessConfig, AccessConfigError, parse_access
from meridian.server.audit.settings import (
    AuditSettings,
    MetricsSettings,
    parse_audit_settings,
    parse_metrics_settings,
)
from meridian.server.cache_settings import CacheSettings, parse_cache_settings
from meridian.server.domain.identifiers import is_valid_account, is_valid_region
from meridian.server.event_loop import EVENT_LOOPS
from meridian.server.event_loop import resolve as resolve_event_loop
from meridian.server.gateway.settings import (
    AwsGatewayConfig,
    GatewayConfigError,
    parse_aws_gateway,
)

LOG_LEVELS = ("debug", "info", "warning", "error")
# More processes than this only contend for SQLite's one write lock.
WORKERS_MAX = 64


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    """Where a PKCS#11 root key lives (docs/hsm.md). The PIN itself is never in the file."""

    module: str
    token_label: str
    key_label: str
    pin_env: str | None = None
    pin_file: Path | None = None
    mechanism: str = "auto"  # auto | aes-gcm | aes-key-wrap-pad
    timeout_ms: int = 5000
    # Environment the module reads when it loads, e.g. SOFTHSM2_CONF.
    module_env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RootKeyConfig:
    provider: str
    path: Path
    pkcs11: Pkcs11Config | None = None
    # The provider material was wrapped with before a migration (unwrap only).
    previous: RootKeyConfig | None = None


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
    # The AWS-compatible HTTPS endpoint, [aws_gateway] (server/gateway/settings.py); None: off.
    aws_gateway: AwsGatewayConfig | None = None
    # Who administers the cluster, [access] (server/access_settings.py).
    access: AccessConfig = field(default_factory=AccessConfig)
    # The audit trail, [audit], and the Prometheus endpoint, [metrics]
    # (server/audit/settings.py).
    audit: AuditSettings = field(default_factory=AuditSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # Worker processes serving `listen` together (server/workers.py); 1 = this process.
    workers: int = 1
    # The asyncio event loop (server/event_loop.py): "auto" (uvloop if installed),
    # "uvloop" or "asyncio".
    event_loop: str = "auto"
    # How many keys and key materials stay in memory, [caches] (server/cache_settings.py).
    caches: CacheSettings = field(default_factory=CacheSettings)

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
    root_key = _root_key(root_raw, base=base, data_dir=data_dir, context="root_key")
    previous_raw = _table(root_raw, "previous", required=False)
    if previous_raw:
        previous = _root_key(
            previous_raw, base=base, data_dir=data_dir, context="root_key.previous"
        )
        if previous.provider == root_key.provider:
            raise ConfigError("root_key.previous must name the other provider than root_key")
        root_key = replace(root_key, previous=previous)
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
    try:
        aws_gateway = parse_aws_gateway(
            raw.get("aws_gateway"), base=base, default_cert=tls.cert, default_key=tls.key
        )
    except GatewayConfigError as error:
        raise ConfigError(str(error)) from None
    try:
        access = parse_access(raw.get("access"))
    except AccessConfigError as error:
        raise ConfigError(str(error)) from None
    workers = raw.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= WORKERS_MAX:
        raise ConfigError(f"workers must be an integer between 1 and {WORKERS_MAX}")
    if workers > 1 and peers:
        # Replication keeps per-peer state (shippers, link health, acknowledgement waits)
        # in the process that runs it; calls reaching another worker would see none of it.
        raise ConfigError("workers > 1 is not supported on a node with [[peers]] (replication)")
    event_loop = raw.get("event_loop", "auto")
    if not isinstance(event_loop, str):
        raise ConfigError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}")
    try:
        resolve_event_loop(event_loop)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    try:
        audit = parse_audit_settings(_table(raw, "audit", required=False))
        metrics = parse_metrics_settings(_table(raw, "metrics", required=False))
        caches = parse_cache_settings(_table(raw, "caches", required=False))
    except ValueError as error:
        raise ConfigError(str(error)) from None
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
        aws_gateway=aws_gateway,
        access=access,
        audit=audit,
        metrics=metrics,
        workers=workers,
        event_loop=event_loop,
        caches=caches,
    )


ROOT_KEY_PROVIDERS = ("file", "pkcs11")
PKCS11_MECHANISMS = ("auto", "aes-gcm", "aes-key-wrap-pad")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _root_key(raw: dict[str, Any], *, base: Path, data_dir: Path, context: str) -> RootKeyConfig:
    provider = _string(raw, "provider", "file", context=context)
    if provider not in ROOT_KEY_PROVIDERS:
        raise ConfigError(f"{context}.provider {provider!r} is not supported (file or pkcs11)")
    path = _path(data_dir, _string(raw, "path", "root.key", context=context))
    if provider == "file":
        return RootKeyConfig(provider=provider, path=path)
    pin_env, pin_file = raw.get("pin_env"), raw.get("pin_file")
    if (pin_env is None) == (pin_file is None):
        raise ConfigError(f"{context} needs exactly one of pin_env and pin_file")
    if pin_env is not None and not _ENV_NAME.match(_string(raw, "pin_env", context=context)):
        raise ConfigError(f"{context}.pin_env must be an environment variable name")
    token_label = _string(raw, "token_label", context=context)
    if len(token_label.encode()) > 32:
        raise ConfigError(f"{context}.token_label must be at most 32 bytes (PKCS#11 limit)")
    mechanism = _string(raw, "mechanism", "auto", context=context)
    if mechanism not in PKCS11_MECHANISMS:
        raise ConfigError(f"{context}.mechanism must be one of {', '.join(PKCS11_MECHANISMS)}")
    timeout_ms = raw.get("timeout_ms", 5000)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise ConfigError(f"{context}.timeout_ms must be an integer")
    if not 100 <= timeout_ms <= 600_000:
        raise ConfigError(f"{context}.timeout_ms must be between 100 and 600000")
    module_env = _table(raw, "module_env", required=False)
    for name, value in module_env.items():
        if not _ENV_NAME.match(name) or not isinstance(value, str):
            raise ConfigError(f"{context}.module_env must map variable names to strings")
    module = _string(raw, "module", context=context)
    return RootKeyConfig(
        provider=provider,
        path=path,
        pkcs11=Pkcs11Config(
            # A bare file name is left to the dynamic loader's search path.
            module=str(_path(base, module)) if "/" in module else module,
            token_label=token_label,
            key_label=_string(raw, "key_label", context=context),
            pin_env=pin_env,
            pin_file=(
                None if pin_file is None else _path(base, _string(raw, "pin_file", context=context))
            ),
            mechanism=mechanism,
            timeout_ms=timeout_ms,
            module_env=tuple(sorted(module_env.items())),
        ),
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
