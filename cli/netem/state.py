"""The network's state on disk (`links.json`) and the network file people write (TOML).

`links.json` holds, per link, the shape it was configured with (by `cluster up`) and its
current shape (after `meridian cluster link` changes), plus a revision number that
grows with every change. The proxy reads it at start and on every `reload`, so a
restarted proxy keeps a partition that was in force: the file is the single truth.

A network file (`meridian cluster up --network FILE`) starts from a base and overrides
some links:

    base = "geography"              # or "flat": every link unshaped
    [[links]]
    between = ["us-east-1", "eu-west-1"]
    latency_ms = 80
    jitter_ms = 5
    [[links]]
    between = ["client", "ap-southeast-2"]
    bandwidth_kbps = 2000
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meridian.cli import pki
from meridian.cli.netem import geography
from meridian.cli.netem.shape import CLIENT, LinkId, LinkShape, ShapeChange, ShapeError

__all__ = [
    "BASES",
    "NetworkState",
    "load_network_file",
    "read_state",
    "shapes_for",
    "write_state",
]

STATE_FORMAT = 1
BASES = ("geography", "flat")
_STATE_BYTES_MAX = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class NetworkState:
    configured: Mapping[LinkId, LinkShape]
    current: Mapping[LinkId, LinkShape]
    revision: int = 1

    @classmethod
    def fresh(cls, shapes: Mapping[LinkId, LinkShape]) -> NetworkState:
        return cls(configured=dict(shapes), current=dict(shapes))

    def changed(self, links: Iterable[LinkId], change: ShapeChange) -> NetworkState:
        current = dict(self.current)
        for link in links:
            current[link] = change.apply(current[link])
        return dataclasses.replace(self, current=current, revision=self.revision + 1)

    def restored(self, links: Iterable[LinkId]) -> NetworkState:
        """Back to the configured shapes (undoes every run-time change on these links)."""
        current = dict(self.current)
        for link in links:
            current[link] = self.configured[link]
        return dataclasses.replace(self, current=current, revision=self.revision + 1)

    def faults(self) -> dict[LinkId, str]:
        """The links that differ from their configured shape, with their current shape."""
        return {
            link: shape.describe()
            for link, shape in self.current.items()
            if shape != self.configured.get(link)
        }


def shapes_for(regions: Sequence[str], base: str) -> dict[LinkId, LinkShape]:
    if base == "geography":
        return geography.default_shapes(regions)
    if base == "flat":
        return geography.flat_shapes(regions)
    raise ShapeError(f"unknown network base {base!r}; choose one of {', '.join(BASES)}")


def load_network_file(path: Path, regions: Sequence[str]) -> dict[LinkId, LinkShape]:
    """The shapes a network file describes for a cluster of `regions`."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShapeError(f"network file {path} does not exist") from None
    except (OSError, UnicodeError, tomllib.TOMLDecodeError) as error:
        raise ShapeError(f"network file {path} cannot be read: {error}") from None
    unknown = sorted(set(document) - {"base", "links"})
    if unknown:
        raise ShapeError(f"network file {path}: unknown key(s) {', '.join(unknown)}")
    base = document.get("base", "geography")
    shapes = shapes_for(regions, base if isinstance(base, str) else repr(base))
    entries = document.get("links", [])
    if not isinstance(entries, list):
        raise ShapeError(f"network file {path}: links must be an array of tables ([[links]])")
    for index, entry in enumerate(entries, start=1):
        where = f"network file {path}, link {index}"
        if not isinstance(entry, dict):
            raise ShapeError(f"{where}: expected a table")
        settings = dict(entry)
        between = settings.pop("between", None)
        if (
            not isinstance(between, list)
            or len(between) != 2
            or not all(isinstance(side, str) for side in between)
        ):
            raise ShapeError(f'{where}: between must name two sides, e.g. ["a-b-1", "client"]')
        for side in between:
            if side != CLIENT and side not in regions:
                raise ShapeError(f"{where}: {side!r} is not a region of this cluster")
        try:
            link = LinkId.between(between[0], between[1])
            shapes[link] = LinkShape.from_json(settings)
        except ShapeError as error:
            raise ShapeError(f"{where}: {error}") from None
    return shapes


def read_state(path: Path) -> NetworkState:
    try:
        with path.open("rb") as stream:
            raw = stream.read(_STATE_BYTES_MAX + 1)
        if len(raw) > _STATE_BYTES_MAX:
            raise ShapeError(f"{path} is larger than 1 MiB")
        document = json.loads(raw)
        if document.get("format") != STATE_FORMAT:
            raise ShapeError(f"{path} has format {document.get('format')!r}, not {STATE_FORMAT}")
        return NetworkState(
            configured=_shapes_from_json(document["configured"]),
            current=_shapes_from_json(document["current"]),
            revision=int(document["revision"]),
        )
    except FileNotFoundError:
        raise ShapeError(f"{path} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ShapeError(f"{path} cannot be read: {error}") from None


def write_state(path: Path, state: NetworkState) -> None:
    document = {
        "format": STATE_FORMAT,
        "revision": state.revision,
        "configured": _shapes_to_json(state.configured),
        "current": _shapes_to_json(state.current),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    pki.write_atomic(path, text.encode(), mode=0o644, overwrite=True)


def _shapes_to_json(shapes: Mapping[LinkId, LinkShape]) -> dict[str, Any]:
    return {str(link): shape.to_json() for link, shape in sorted(shapes.items())}


def _shapes_from_json(document: Any) -> dict[LinkId, LinkShape]:
    if not isinstance(document, dict):
        raise TypeError("shapes must be an object")
    return {LinkId.parse(name): LinkShape.from_json(shape) for name, shape in document.items()}
