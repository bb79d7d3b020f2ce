"""Reading ``cluster.json``, the file ``meridian cluster up`` writes.

The format is a shared contract (docs/contributors/shared-contracts.md): the CA,
the client certificate and key, and per region its endpoint and TLS server name.
Regions keep the file's order, because the first one is the default home region.
Relative paths are resolved against the file's folder so that a cluster
directory can be moved or checked into a fixture.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from meridian.client.errors import ClusterFileError

__all__ = ["ClusterFile", "ClusterRegion", "TlsMaterial", "load_cluster_file"]

SUPPORTED_FORMAT = 1

# A cluster file is a few kilobytes; refusing anything much larger keeps a wrong
# path (a database, a log) from being read into memory.
CLUSTER_FILE_BYTES_MAX = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterRegion:
    name: str
    endpoint: str
    server_name: str | None
    pid: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsMaterial:
    """PEM bytes a client needs for mTLS."""

    ca_cert: bytes
    client_cert: bytes
    client_key: bytes

    def __repr__(self) -> str:
        # The private key must never end up in a log line.
        return "TlsMaterial(ca_cert=..., client_cert=..., client_key=<hidden>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterFile:
    path: Path
    account_id: str
    ca_cert: Path
    client_cert: Path
    client_key: Path
    principal: str | None
    regions: tuple[ClusterRegion, ...]

    @property
    def endpoints(self) -> dict[str, str]:
        """Region name -> "host:port", in file order."""
        return {region.name: region.endpoint for region in self.regions}

    @property
    def server_names(self) -> dict[str, str]:
        """Region name -> TLS server name, for the regions that name one."""
        return {region.name: region.server_name for region in self.regions if region.server_name}

    def read_tls_material(self) -> TlsMaterial:
        return TlsMaterial(
            ca_cert=_read_pem(self.ca_cert, "ca_cert"),
            client_cert=_read_pem(self.client_cert, "client_cert"),
            client_key=_read_pem(self.client_key, "client_key"),
        )


def load_cluster_file(path: str | os.PathLike[str]) -> ClusterFile:
    """Parse and check a cluster file; raise ClusterFileError with the reason."""
    file_path = Path(path)
    try:
        with file_path.open("rb") as stream:
            raw = stream.read(CLUSTER_FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        raise ClusterFileError(f"cluster file {file_path} does not exist") from None
    except OSError as error:
        raise ClusterFileError(f"cannot read cluster file {file_path}: {error.strerror}") from None
    if len(raw) > CLUSTER_FILE_BYTES_MAX:
        raise ClusterFileError(f"cluster file {file_path} is larger than 1 MiB")
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClusterFileError(f"cluster file {file_path} is not valid JSON: {error}") from None
    return _parse(document, file_path)


def _parse(document: object, file_path: Path) -> ClusterFile:
    top = _object(document, "the top level", file_path)
    if top.get("format") != SUPPORTED_FORMAT:
        raise ClusterFileError(
            f"cluster file {file_path} has format {top.get('format')!r}; "
            f"this client reads format {SUPPORTED_FORMAT}"
        )
    regions_document = _object(top.get("regions"), '"regions"', file_path)
    if not regions_document:
        raise ClusterFileError(f"cluster file {file_path} names no regions")
    folder = file_path.parent
    principal = top.get("principal")
    return ClusterFile(
        path=file_path,
        account_id=str(top.get("account_id", "")),
        ca_cert=folder / _string(top, "ca_cert", file_path),
        client_cert=folder / _string(top, "client_cert", file_path),
        client_key=folder / _string(top, "client_key", file_path),
        principal=principal if isinstance(principal, str) else None,
        # json.loads keeps the file's key order, which is the home-region order.
        regions=tuple(_region(name, entry, file_path) for name, entry in regions_document.items()),
    )


def _region(name: str, entry: object, file_path: Path) -> ClusterRegion:
    fields = _object(entry, f'region "{name}"', file_path)
    server_name = fields.get("server_name")
    pid = fields.get("pid")
    return ClusterRegion(
        name=name,
        endpoint=_string(fields, "endpoint", file_path, where=f'region "{name}"'),
        server_name=server_name if isinstance(server_name, str) and server_name else None,
        pid=pid if isinstance(pid, int) else None,
    )


def _object(value: object, where: str, file_path: Path) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ClusterFileError(f"cluster file {file_path}: {where} must be a JSON object")
    return value


def _string(
    fields: dict[str, object], key: str, file_path: Path, *, where: str = "the top level"
) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value:
        raise ClusterFileError(f'cluster file {file_path}: {where} needs a string "{key}"')
    return value


def _read_pem(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ClusterFileError(f"cannot read {key} {path}: {error.strerror}") from None
