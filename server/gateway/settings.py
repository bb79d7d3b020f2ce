"""The ``[aws_gateway]`` table of the node configuration: off unless it is present.

    [aws_gateway]
    listen = "127.0.0.11:7443"   # host:port of the HTTPS endpoint (required)
    cert = "..."                 # server certificate and key; default: the node's [tls]
    key = "..."
    clock_skew_s_max = 300       # how far a signature's time may be from the node's
    body_bytes_max = 1048576     # the largest request body accepted

The endpoint serves TLS without client certificates (AWS clients present none): callers
authenticate with SigV4 access keys instead (``meridian access-key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_SKEW_S_MAX_DEFAULT = 300
CLOCK_SKEW_S_MAX_RANGE = (1, 3600)
BODY_BYTES_MAX_DEFAULT = 1024 * 1024
BODY_BYTES_MAX_RANGE = (64 * 1024, 16 * 1024 * 1024)
_KEYS = frozenset({"listen", "cert", "key", "clock_skew_s_max", "body_bytes_max"})


class GatewayConfigError(ValueError):
    """The [aws_gateway] table is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class AwsGatewayConfig:
    listen: str
    cert: Path
    key: Path
    clock_skew_s_max: int = CLOCK_SKEW_S_MAX_DEFAULT
    body_bytes_max: int = BODY_BYTES_MAX_DEFAULT

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def parse_aws_gateway(
    raw: object, *, base: Path, default_cert: Path, default_key: Path
) -> AwsGatewayConfig | None:
    """The gateway's settings, or None when the table is absent (the gateway is off)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise GatewayConfigError("aws_gateway must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise GatewayConfigError(f"aws_gateway has unknown settings: {', '.join(unknown)}")
    listen = _string(raw, "listen")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise GatewayConfigError(f"aws_gateway.listen {listen!r} must be host:port")
    cert = _path(base, raw["cert"], "cert") if "cert" in raw else default_cert
    key = _path(base, raw["key"], "key") if "key" in raw else default_key
    if ("cert" in raw) != ("key" in raw):
        raise GatewayConfigError("aws_gateway.cert and aws_gateway.key go together")
    return AwsGatewayConfig(
        listen=listen,
        cert=cert,
        key=key,
        clock_skew_s_max=_integer(
            raw, "clock_skew_s_max", CLOCK_SKEW_S_MAX_DEFAULT, CLOCK_SKEW_S_MAX_RANGE
        ),
        body_bytes_max=_integer(
            raw, "body_bytes_max", BODY_BYTES_MAX_DEFAULT, BODY_BYTES_MAX_RANGE
        ),
    )


def _string(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise GatewayConfigError(f"aws_gateway.{name} must be a non-empty string")
    return value


def _path(base: Path, value: object, name: str) -> Path:
    if not isinstance(value, str) or not value:
        raise GatewayConfigError(f"aws_gateway.{name} must be a non-empty string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _integer(raw: dict[str, Any], name: str, default: int, bounds: tuple[int, int]) -> int:
    value = raw.get(name, default)
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise GatewayConfigError(f"aws_gateway.{name} must be an integer from {low} to {high}")
    return value
