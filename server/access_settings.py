"""The node configuration's ``[access]`` table: who administers a fresh cluster.

    [access]
    administrators = ["admin"]   # principal names (client certificates); default shown

An administrator has a built-in identity policy allowing every action on every
resource ("meridian:bootstrap-administrator"). Like any identity policy it counts for
a key only where the key's policy delegates to the account (the default key policy
does), and an explicit Deny in a key policy still refuses it, so a key can be closed
even to administrators (that is what the lockout safety check guards against). An
empty list leaves the cluster with no administrator: only policies and grants give
access. See docs/access-control.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT_ADMINISTRATORS = ("admin",)
ADMINISTRATORS_MAX = 100
# The principal names a client certificate can carry (cli/pki.py).
_PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")


class AccessConfigError(ValueError):
    """The [access] table is invalid; the message names the problem."""


@dataclass(frozen=True, slots=True)
class AccessConfig:
    administrators: tuple[str, ...] = DEFAULT_ADMINISTRATORS


def parse_access(raw: Any) -> AccessConfig:
    if raw is None:
        return AccessConfig()
    if not isinstance(raw, dict):
        raise AccessConfigError("access must be a table")
    unknown = sorted(set(raw) - {"administrators"})
    if unknown:
        raise AccessConfigError(f"access has unknown settings: {', '.join(unknown)}")
    names = raw.get("administrators", list(DEFAULT_ADMINISTRATORS))
    if not isinstance(names, list) or len(names) > ADMINISTRATORS_MAX:
        raise AccessConfigError(
            f"access.administrators must be a list of at most {ADMINISTRATORS_MAX} principal names"
        )
    for name in names:
        if not isinstance(name, str) or not _PRINCIPAL_NAME.fullmatch(name):
            raise AccessConfigError(
                f"access.administrators: {name!r} is not a principal name "
                "(1-64 characters from A-Z, a-z, 0-9 and +=,.@_-)"
            )
    return AccessConfig(administrators=tuple(names))
