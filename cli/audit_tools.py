"""The work behind `meridian audit` (cli/audit_cmd.py parses; this module runs).

Kept apart so that building the `meridian` parser does not import gRPC, the audit
verifier and the storage code for every other sub-command (the node among them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import grpc

from meridian.cli.audit_sources import (
    FileSource,
    Filters,
    NodeSource,
    SourceError,
    TrailSource,
    cluster_regions,
    open_cluster,
)
from meridian.server.audit.chain import StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.events import parse_document
from meridian.server.audit.verify import VerifyReport, compare_peer_copies, verify_trail
from meridian.server.domain.crypto import audit_signing

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2
CLUSTER_FILE_ENV = "MERIDIAN_CLUSTER_FILE"
CLUSTER_FILE_DEFAULT = Path("demo-cluster") / "cluster.json"
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


# ---- commands ---------------------------------------------------------------------------


def run_query(args: argparse.Namespace) -> int:
    return _with_source(args, lambda source: _print_records(args, source))


def _print_records(args: argparse.Namespace, source: TrailSource) -> int:
    records = source.records(_filters(args), limit=args.limit)
    if args.json:
        for record in records:
            print(json.dumps(export_document(record), ensure_ascii=False))
        return EXIT_OK
    print(_table_header())
    count = 0
    for record in records:
        print(_table_row(record))
        count += 1
    print(f"({count} record{'s' if count != 1 else ''} in {source.region})", file=sys.stderr)
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    def write(source: TrailSource) -> int:
        out: IO[str]
        with _output(args.out) as out:
            for record in source.records(_filters(args)):
                out.write(json.dumps(export_document(record), ensure_ascii=False) + "\n")
        return EXIT_OK

    return _with_source(args, write)


def run_verify(args: argparse.Namespace) -> int:
    pinned: dict[str, bytes] = {}
    for path in args.public_key or ():
        try:
            raw = audit_signing.load_public_key(path.read_bytes())
        except (OSError, audit_signing.AuditSignatureError) as error:
            print(f"meridian audit verify: cannot use {path}: {error}", file=sys.stderr)
            return EXIT_USAGE
        pinned[audit_signing.key_id_of(raw)] = raw

    def check(source: TrailSource) -> int:
        outcome = verify_source(
            source, pinned=pinned, peers=None if args.no_peers else _peer_sources(args, source)
        )
        print(outcome.render())
        return EXIT_OK if outcome.report.ok else EXIT_BROKEN

    return _with_source(args, check)


def run_seal(args: argparse.Namespace) -> int:
    from meridian.proto.audit.v1 import audit_pb2 as pb

    def seal(source: TrailSource) -> int:
        assert isinstance(source, NodeSource)
        response = source.stub.SealAuditDigest(pb.SealAuditDigestRequest(), timeout=30)
        if response.sealed:
            print(f"{source.region}: sealed digest {response.digest.number}")
        else:
            number = response.digest.number if response.HasField("digest") else 0
            print(f"{source.region}: nothing new to seal (last digest: {number})")
        return EXIT_OK

    return _with_source(args, seal)


def run_public_key(args: argparse.Namespace) -> int:
    def show(source: TrailSource) -> int:
        keys = source.public_keys()
        if not keys:
            print(f"{source.region} has not sealed a digest yet: no audit key", file=sys.stderr)
            return EXIT_USAGE
        pem = b"".join(audit_signing.public_key_pem(key) for key in keys.values())
        if args.out:
            args.out.write_bytes(pem)
            print(f"wrote {len(keys)} key(s) of {source.region} to {args.out}", file=sys.stderr)
        else:
            for key_id in keys:
                print(f"# {source.region} audit key {key_id} ({audit_signing.ALGORITHM})")
            sys.stdout.write(pem.decode("ascii"))
        return EXIT_OK

    return _with_source(args, show)


# ---- verification ------------------------------------------------------------------------


@dataclass
class VerifyOutcome:
    report: VerifyReport
    notes: list[str]

    def render(self) -> str:
        report = self.report
        lines = [
            f"region {report.region}: {report.records_checked} record(s) checked"
            + (f" ({report.first_seq}-{report.last_seq})" if report.first_seq else "")
            + f", {report.digests_checked} digest(s), sealed through record "
            f"{report.sealed_through_seq}",
            *self.notes,
        ]
        if report.ok:
            unsealed = (report.last_seq or 0) - report.sealed_through_seq
            tail = f"; {unsealed} newest record(s) not yet sealed" if unsealed > 0 else ""
            lines.append(f"OK: the trail is complete and unaltered{tail}")
            return "\n".join(lines)
        first = report.first_problem
        assert first is not None
        where = f"record {first.seq}" if first.seq is not None else f"digest {first.digest_number}"
        lines.append(f"BROKEN at {where}: {first.message}")
        lines += [f"  [{problem.kind}] {problem.message}" for problem in report.problems]
        return "\n".join(lines)


def verify_source(
    source: TrailSource,
    *,
    pinned: dict[str, bytes] | None = None,
    peers: dict[str, NodeSource] | None = None,
) -> VerifyOutcome:
    """Verify ``source``'s trail; with ``peers``, against the digests they hold for it."""
    notes: list[str] = []
    digests = source.digests()
    copies: dict[str, list[SignedDigest]] = {}
    witnessed_keys: dict[str, bytes] = {}
    for peer, peer_source in (peers or {}).items():
        try:
            held, keys = peer_source.digests_and_keys(source.region)
        except grpc.RpcError as error:
            notes.append(f"peer {peer}: not reachable ({error.code().name}); not compared")
            continue
        copies[peer] = held
        witnessed_keys.update(keys)
        notes.append(f"peer {peer}: holds {len(held)} digest(s) of {source.region}")
    if pinned:
        trusted = pinned
        notes.append(f"trusting only the {len(pinned)} key(s) given with --public-key")
    elif witnessed_keys:
        trusted = witnessed_keys
        notes.append("trusting the audit keys the other regions hold for this region")
    else:
        trusted = source.public_keys()
        notes.append(
            "trusting the keys the trail publishes itself (pin one with --public-key, "
            "or verify through a cluster so other regions vouch for it)"
        )
    report = verify_trail(source.facts(), source.records(), digests=digests, trusted_keys=trusted)
    report.problems += compare_peer_copies(digests, copies)
    return VerifyOutcome(report, notes)


def _peer_sources(args: argparse.Namespace, source: TrailSource) -> dict[str, NodeSource] | None:
    if not isinstance(source, NodeSource):
        return None
    cluster = open_cluster(_cluster_path(args))
    return {
        region: NodeSource(cluster, region)
        for region in cluster_regions(cluster)
        if region != source.region
    }


# ---- output ------------------------------------------------------------------------------


def export_document(record: StoredRecord) -> dict[str, Any]:
    """One export line: the CloudTrail-like event plus its place in the chain."""
    document = parse_document(record.body)
    document["meridianChain"] = {
        "seq": record.seq,
        "prevHash": record.prev_hash.hex(),
        "hash": record.hash.hex(),
    }
    return document


def _table_header() -> str:
    return "\t".join(
        ("SEQ", "TIME", "EVENT", "PRINCIPAL", "KEY", "OUTCOME", "SOURCE", "REQUEST ID")
    )


def _table_row(record: StoredRecord) -> str:
    columns = record.columns
    document = parse_document(record.body)
    outcome = columns.outcome + (f" ({columns.error_code})" if columns.error_code else "")
    principal = columns.principal_arn.rsplit("/", 1)[-1] if columns.principal_arn else "-"
    key = columns.key_arn.rsplit("/", 1)[-1] if columns.key_arn else "-"
    return "\t".join(
        (
            str(record.seq),
            str(document.get("eventTime", "")),
            columns.event_name,
            principal,
            key,
            outcome,
            str(document.get("sourceIPAddress", "")),
            columns.request_id or "-",
        )
    )


class _output:
    """Standard output, or a file that is written completely or not at all."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._temporary = path.with_name(path.name + ".partial") if path else None
        self._stream: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self._temporary is None:
            return sys.stdout
        self._stream = self._temporary.open("w", encoding="utf-8")
        return self._stream

    def __exit__(self, kind: object, *rest: object) -> None:
        if self._stream is None or self._temporary is None or self._path is None:
            return
        self._stream.close()
        if kind is None:
            os.replace(self._temporary, self._path)
        else:
            self._temporary.unlink(missing_ok=True)


# ---- arguments ---------------------------------------------------------------------------


def parse_time(text: str, *, now: datetime) -> datetime:
    """ISO 8601 (UTC unless it says otherwise), ``now``, or ``7d``/``12h``/``30m``/``45s`` ago."""
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = relative.groups()
        return now - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time or an age like 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> Filters:
    now = datetime.now(UTC)
    return Filters(
        key_id=args.key_id,
        principal=args.principal,
        operation=args.operation,
        outcome=args.outcome,
        error_code=args.error_code,
        start=parse_time(args.start_time, now=now) if args.start_time else None,
        end=parse_time(args.end_time, now=now) if args.end_time else None,
    )


def _cluster_path(args: argparse.Namespace) -> Path:
    given: Path | None = args.cluster_file
    return given or Path(os.environ.get(CLUSTER_FILE_ENV) or CLUSTER_FILE_DEFAULT)


def open_source(args: argparse.Namespace) -> TrailSource:
    database: Path | None = getattr(args, "database", None)
    data_dir: Path | None = getattr(args, "data_dir", None)
    if database or data_dir:
        if args.cluster_file or args.region:
            raise SourceError("give either --data-dir/--database or --cluster-file/--region")
        if database is not None:
            return FileSource(database)
        assert data_dir is not None
        return FileSource.from_data_dir(data_dir)
    cluster = open_cluster(_cluster_path(args))
    region = args.region or cluster_regions(cluster)[0]
    return NodeSource(cluster, region)


def _with_source(args: argparse.Namespace, action: Any) -> int:
    command = f"meridian audit {args.audit_command}"
    try:
        source = open_source(args)
    except SourceError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = action(source)
        return code
    except ValueError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        print(f"{command}: {source.region}: {_rpc_message(error)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        source.close()


def _rpc_message(error: grpc.RpcError) -> str:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code else 'error'}: {details}"
