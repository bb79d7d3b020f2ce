"""The ``[audit]`` table of the node configuration.

```toml
[audit]
enabled = true            # false: no trail at all (benchmarks only; breaks DESIGN.md §7.5)
digest_interval_s = 300   # seal a digest this often when there are new records
digest_records_max = 10000  # ... or as soon as this many records are unsealed
retention_days = 0        # 0: keep every record; else prune older ones at digest boundaries
batch_records_max = 512   # records per SQLite transaction (group commit)
queue_records_max = 20000 # records waiting for a commit; beyond it calls fail fast
write_timeout_ms = 5000   # a record not durable by then fails its call
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditSettings:
    enabled: bool = True
    digest_interval_s: float = 300.0
    digest_records_max: int = 10_000
    retention_days: int = 0
    batch_records_max: int = 512
    queue_records_max: int = 20_000
    write_timeout_ms: int = 5_000


_BOUNDS: dict[str, tuple[float, float]] = {
    "digest_interval_s": (0.01, 86_400.0),
    "digest_records_max": (1, 10_000_000),
    "retention_days": (0, 36_500),
    "batch_records_max": (1, 10_000),
    "queue_records_max": (1, 1_000_000),
    "write_timeout_ms": (1, 600_000),
}


def parse_audit_settings(raw: dict[str, Any]) -> AuditSettings:
    """Read the ``[audit]`` table; raises ValueError naming the bad field."""
    unknown = set(raw) - {"enabled", *_BOUNDS}
    if unknown:
        raise ValueError(f"audit.{sorted(unknown)[0]} is not a known setting")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError("audit.enabled must be true or false")
    values: dict[str, Any] = {"enabled": enabled}
    defaults = AuditSettings()
    for name, (low, high) in _BOUNDS.items():
        value = raw.get(name, getattr(defaults, name))
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if name != "digest_interval_s" and not isinstance(value, int):
            is_number = False
        if not is_number or not low <= value <= high:
            kind = "a number of seconds" if name.endswith("_s") else "an integer"
            raise ValueError(f"audit.{name} must be {kind} between {low:g} and {high:g}")
        values[name] = float(value) if name == "digest_interval_s" else int(value)
    return AuditSettings(**values)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics] listen = "127.0.0.1:9464"``: serve Prometheus metrics there ("" = off)."""

    listen: str = ""


def parse_metrics_settings(raw: dict[str, Any]) -> MetricsSettings:
    unknown = set(raw) - {"listen"}
    if unknown:
        raise ValueError(f"metrics.{sorted(unknown)[0]} is not a known setting")
    listen = raw.get("listen", "")
    if not isinstance(listen, str):
        raise ValueError("metrics.listen must be a string host:port")
    if listen:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"metrics.listen {listen!r} must be host:port")
    return MetricsSettings(listen=listen)
