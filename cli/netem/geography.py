"""Default link shapes: the delays that real distances between regions would cause.

One-way delay = distance / (speed of light in fibre, about 200 km per ms) times a route
factor of 1.4 (cables do not follow great circles), plus 1 ms inside a region. That
gives, one way: us-east-1 <-> eu-west-1 about 39 ms, us-east-1 <-> ap-southeast-2 about
111 ms, eu-west-1 <-> ap-southeast-2 about 122 ms; round trips are twice that, close to
what the real regions measure. The client sits next to the first region, so on a laptop
"the nearest region" is the same answer it would be in the world.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from meridian.cli.netem.shape import CLIENT, LinkId, LinkShape

__all__ = ["GEOGRAPHY_DEFAULT", "default_shapes", "flat_shapes", "one_way_ms"]

GEOGRAPHY_DEFAULT = "geography"
FIBRE_KM_PER_MS = 200.0
ROUTE_FACTOR = 1.4
LOCAL_MS = 1.0
JITTER_FRACTION = 0.05
# Where a region whose name we do not know is taken to be: 50 ms from everything.
UNKNOWN_MS = 50.0

# Approximate (latitude, longitude) of the cities that host each region.
_PLACES: Mapping[str, tuple[float, float]] = {
    "us-east-1": (38.9, -77.4),
    "us-east-2": (40.0, -83.0),
    "us-west-1": (37.4, -122.0),
    "us-west-2": (45.6, -121.2),
    "ca-central-1": (45.5, -73.6),
    "ca-west-1": (51.0, -114.1),
    "mx-central-1": (20.6, -100.4),
    "sa-east-1": (-23.5, -46.6),
    "eu-west-1": (53.3, -6.3),
    "eu-west-2": (51.5, -0.1),
    "eu-west-3": (48.9, 2.35),
    "eu-central-1": (50.1, 8.7),
    "eu-central-2": (47.4, 8.5),
    "eu-north-1": (59.3, 18.1),
    "eu-south-1": (45.5, 9.2),
    "eu-south-2": (41.6, -0.9),
    "il-central-1": (32.1, 34.8),
    "me-south-1": (26.1, 50.6),
    "me-central-1": (25.2, 55.3),
    "af-south-1": (-33.9, 18.4),
    "ap-south-1": (19.1, 72.9),
    "ap-south-2": (17.4, 78.5),
    "ap-east-1": (22.3, 114.2),
    "ap-southeast-1": (1.35, 103.8),
    "ap-southeast-2": (-33.9, 151.2),
    "ap-southeast-3": (-6.2, 106.8),
    "ap-southeast-4": (-37.8, 145.0),
    "ap-northeast-1": (35.7, 139.7),
    "ap-northeast-2": (37.6, 127.0),
    "ap-northeast-3": (34.7, 135.5),
}
_EARTH_RADIUS_KM = 6371.0


def one_way_ms(one: str, other: str) -> float:
    """The one-way delay between two regions, rounded to whole milliseconds."""
    if one == other:
        return LOCAL_MS
    if one not in _PLACES or other not in _PLACES:
        return UNKNOWN_MS
    distance_km = _great_circle_km(_PLACES[one], _PLACES[other])
    return float(round(LOCAL_MS + distance_km / FIBRE_KM_PER_MS * ROUTE_FACTOR))


def default_shapes(regions: Sequence[str]) -> dict[LinkId, LinkShape]:
    """Every link of a cluster with `regions`, shaped by distance; the client is near the first."""
    shapes: dict[LinkId, LinkShape] = {}
    home = regions[0]
    for region in regions:
        shapes[LinkId.between(CLIENT, region)] = _shape(one_way_ms(home, region))
        for peer in regions:
            if peer != region:
                shapes[LinkId.between(region, peer)] = _shape(one_way_ms(region, peer))
    return shapes


def flat_shapes(regions: Sequence[str]) -> dict[LinkId, LinkShape]:
    """Every link of a cluster with `regions`, unshaped (faults can still be injected)."""
    return {link: LinkShape() for link in default_shapes(regions)}


def _shape(latency_ms: float) -> LinkShape:
    jitter_ms = round(latency_ms * JITTER_FRACTION, 1)
    return LinkShape(latency_ms=latency_ms, jitter_ms=jitter_ms)


def _great_circle_km(one: tuple[float, float], other: tuple[float, float]) -> float:
    latitude_1, longitude_1 = map(math.radians, one)
    latitude_2, longitude_2 = map(math.radians, other)
    across = math.sin((latitude_2 - latitude_1) / 2) ** 2
    along = math.sin((longitude_2 - longitude_1) / 2) ** 2
    haversine = across + math.cos(latitude_1) * math.cos(latitude_2) * along
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(haversine))
