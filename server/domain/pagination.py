"""Opaque pagination markers (AWS's Marker/NextMarker).

A marker names the last item of the previous page. It is base64 so callers treat it
as opaque, and it carries its list's name so a marker of one list is refused by another.
"""

from __future__ import annotations

import base64
import binascii

from meridian.server.domain.errors import InvalidMarkerException

MARKER_CHARS_MAX = 1024


def make_marker(list_name: str, last_item: str) -> str:
    return base64.urlsafe_b64encode(f"{list_name}\n{last_item}".encode()).decode("ascii")


def parse_marker(list_name: str, marker: str) -> str | None:
    """The last item named by ``marker``, or None for an empty marker (first page)."""
    if not marker:
        return None
    if len(marker) > MARKER_CHARS_MAX:
        raise InvalidMarkerException("The marker is not valid")
    try:
        decoded = base64.urlsafe_b64decode(marker.encode("ascii")).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError) as error:
        raise InvalidMarkerException("The marker is not valid") from error
    name, separator, last_item = decoded.partition("\n")
    if name != list_name or not separator or not last_item:
        raise InvalidMarkerException("The marker is not valid")
    return last_item
