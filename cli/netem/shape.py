"""Links and their condition: which link a connection crosses, and how that link behaves.

A link joins two sides: two regions (the node of one dials the node of the other), or
the client and one region. Links are undirected: `a<->b` carries the connections that a
opens to b and those b opens to a, and its shape applies to both directions of each.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CLIENT",
    "LinkId",
    "LinkShape",
    "ShapeChange",
    "ShapeError",
]

CLIENT = "client"
LATENCY_MS_MAX = 60_000.0
BANDWIDTH_KBPS_MIN = 1.0
BANDWIDTH_KBPS_MAX = 100_000_000.0
LOSS_PERCENT_MAX = 99.0


class ShapeError(ValueError):
    """A link name or a shape value that makes no sense; the message says which."""


@dataclasses.dataclass(frozen=True, order=True)
class LinkId:
    """An undirected link; `a` sorts first, and the client side is always `a`."""

    a: str
    b: str

    @classmethod
    def between(cls, one: str, other: str) -> LinkId:
        if one == other:
            raise ShapeError(f"a link joins two different sides, not {one} and itself")
        if CLIENT in (one, other):
            region = other if one == CLIENT else one
            return cls(CLIENT, region)
        first, second = sorted((one, other))
        return cls(first, second)

    @classmethod
    def parse(cls, text: str) -> LinkId:
        one, separator, other = text.partition("<->")
        if not separator or not one or not other:
            raise ShapeError(f"{text!r} is not a link name like 'us-east-1<->eu-west-1'")
        return cls.between(one, other)

    @property
    def is_client(self) -> bool:
        return self.a == CLIENT

    def touches(self, side: str) -> bool:
        return side in (self.a, self.b)

    def __str__(self) -> str:
        return f"{self.a}<->{self.b}"


@dataclasses.dataclass(frozen=True)
class LinkShape:
    """How a link behaves, in each direction.

    latency_ms      one-way delay added to every byte (a round trip pays it twice)
    jitter_ms       each chunk's delay varies uniformly within +/- this, never below 0;
                    bytes still arrive in order, as TCP delivers them
    loss_percent    chance that a 1460-byte segment is lost; TCP hides loss as delay,
                    so a lost segment arrives after retransmission timeouts instead
    bandwidth_kbps  kilobits per second per direction, shared by the link's
                    connections; None means unlimited
    partitioned     nothing crosses: data waits (TCP would retransmit), new connections
                    hang; all of it flows again once healed, unless the caller gave up
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_percent: float = 0.0
    bandwidth_kbps: float | None = None
    partitioned: bool = False

    def __post_init__(self) -> None:
        _check_range("latency_ms", self.latency_ms, 0.0, LATENCY_MS_MAX)
        _check_range("jitter_ms", self.jitter_ms, 0.0, LATENCY_MS_MAX)
        _check_range("loss_percent", self.loss_percent, 0.0, LOSS_PERCENT_MAX)
        if self.bandwidth_kbps is not None:
            _check_range(
                "bandwidth_kbps", self.bandwidth_kbps, BANDWIDTH_KBPS_MIN, BANDWIDTH_KBPS_MAX
            )
        if not isinstance(self.partitioned, bool):
            raise ShapeError(f"partitioned must be true or false, not {self.partitioned!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> LinkShape:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ShapeError(f"unknown link setting(s) {', '.join(unknown)}")
        try:
            return cls(**document)
        except TypeError as error:
            raise ShapeError(str(error)) from None

    def describe(self) -> str:
        """One line for people: '38 ms +/- 2 ms, 1% loss, 512 kbit/s, PARTITIONED'."""
        parts = [f"{self.latency_ms:g} ms"]
        if self.jitter_ms:
            parts[0] += f" +/- {self.jitter_ms:g} ms"
        if self.loss_percent:
            parts.append(f"{self.loss_percent:g}% loss")
        if self.bandwidth_kbps is not None:
            parts.append(f"{self.bandwidth_kbps:g} kbit/s")
        if self.partitioned:
            parts.append("PARTITIONED")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class ShapeChange:
    """A partial update from `meridian cluster link`: None leaves a setting as it is.

    `bandwidth_kbps=0` lifts a bandwidth limit (the flag cannot say None).
    """

    latency_ms: float | None = None
    jitter_ms: float | None = None
    loss_percent: float | None = None
    bandwidth_kbps: float | None = None
    partitioned: bool | None = None

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, field.name) is None for field in dataclasses.fields(self))

    def apply(self, shape: LinkShape) -> LinkShape:
        changes: dict[str, Any] = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) is not None
        }
        if changes.get("bandwidth_kbps") == 0:
            changes["bandwidth_kbps"] = None
        return dataclasses.replace(shape, **changes)


def _check_range(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ShapeError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ShapeError(f"{name} must be between {low:g} and {high:g}, not {value:g}")
