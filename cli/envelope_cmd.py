"""`meridian envelope encrypt|decrypt`: envelope encryption of files of any size.

    meridian envelope encrypt --in backup.tar --out backup.tar.menv \\
        --key-id mrk-… --key-id arn:meridian:kms:eu-west-1:…:key/… \\
        --encryption-context purpose=backup
    meridian envelope decrypt --in backup.tar.menv --out backup.tar \\
        --key-id mrk-… --encryption-context purpose=backup

The message format is docs/envelope-format.md. Decrypting needs ``--key-id`` (the keys
it may use; an MRK matches its replica in any region) or ``--discovery`` (any key the
message names); ``--encryption-context`` on decrypt lists pairs the message must carry.
``-`` reads stdin or writes stdout; a file output appears only once complete (decrypt:
only once the whole message authenticated). A progress bar goes to stderr when it is a
terminal, or with ``--progress``. On success a JSON summary is printed.

Exit codes are `meridian kms`'s: 0 success, 252 usage, 253 configuration (cluster file,
key ids), 254 KMS answered with an error, 255 anything else (e.g. an invalid message).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NoReturn

from meridian.cli.kms_cmd import (
    CLUSTER_FILE_DEFAULT,
    CLUSTER_FILE_ENV,
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_OTHER,
    EXIT_SERVICE,
    EXIT_USAGE,
)
from meridian.client import ClientConfigError, KmsClient, KmsError
from meridian.client.envelope import Envelope, EnvelopeError, MessageInfo
from meridian.client.envelope.format import FRAME_LENGTH_DEFAULT
from meridian.client.options import RoutingOptions

__all__ = ["register", "run"]

ClientFactory = Callable[[argparse.Namespace], KmsClient]
# A redraw of the progress bar at most this often: a terminal is not a log.
PROGRESS_INTERVAL_S = 0.1
PROGRESS_BAR_CHARS = 30


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "envelope",
        help="envelope encryption of files",
        description="Encrypt and decrypt files of any size under data keys from Meridian.",
    )
    parser.__class__ = _Parser
    _configure(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meridian envelope", description="Envelope encryption of files.")
    _configure(parser)
    return parser


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="envelope_action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    for name, help_text in (
        ("encrypt", "seal a file under one or more keys"),
        ("decrypt", "open a sealed file"),
    ):
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--in", dest="source", required=True, help="input file, or - for stdin")
        sub.add_argument("--out", dest="destination", required=True, help="output file, or -")
        sub.add_argument(
            "--key-id",
            dest="key_ids",
            action="append",
            default=[],
            help="a wrapping key (repeat for several); on decrypt, a key that may be used",
        )
        sub.add_argument(
            "--encryption-context",
            type=_context,
            default={},
            help="k=v[,k2=v2]; on decrypt, pairs the message must carry",
        )
        sub.add_argument(
            "--cluster-file", type=Path, help=f"cluster.json (default ${CLUSTER_FILE_ENV})"
        )
        sub.add_argument("--region", help="send every KMS call to REGION (no failover)")
        sub.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="show a progress bar on stderr (default: when stderr is a terminal)",
        )
        if name == "encrypt":
            sub.add_argument(
                "--frame-length",
                type=int,
                default=FRAME_LENGTH_DEFAULT,
                help=f"plaintext bytes per frame (default {FRAME_LENGTH_DEFAULT})",
            )
        else:
            sub.add_argument(
                "--discovery", action="store_true", help="use any key the message names"
            )
        sub.set_defaults(func=handle)


def _context(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], got {item!r}")
        pairs[key] = value
    return pairs


def client_from_args(args: argparse.Namespace) -> KmsClient:
    path = args.cluster_file or Path(os.environ.get(CLUSTER_FILE_ENV) or CLUSTER_FILE_DEFAULT)
    # One command, a few calls: failover without background health checks.
    return KmsClient.from_cluster_file(
        path, region=args.region, routing=RoutingOptions(health_check_interval_s=None)
    )


def run(
    argv: list[str],
    *,
    client_factory: ClientFactory = client_from_args,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    return handle(args, client_factory=client_factory, stdout=stdout, stderr=stderr)


def handle(
    args: argparse.Namespace,
    *,
    client_factory: ClientFactory = client_from_args,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    show_progress = args.progress if args.progress is not None else err.isatty()
    try:
        with client_factory(args) as kms:
            info = _run(args, kms, _ProgressBar(err, args.source) if show_progress else None)
    except KmsError as error:
        print(f"meridian envelope: {error.error_name}: {error.message}", file=err)
        return EXIT_SERVICE
    except ClientConfigError as error:
        print(f"meridian envelope: {error}", file=err)
        return EXIT_CONFIG
    except (EnvelopeError, OSError, ValueError) as error:
        print(f"meridian envelope: {type(error).__name__}: {error}", file=err)
        return EXIT_OTHER
    if args.destination != "-":
        out.write(json.dumps(_summary(info), indent=4, ensure_ascii=False) + "\n")
    return EXIT_OK


def _run(args: argparse.Namespace, kms: KmsClient, progress: _ProgressBar | None) -> MessageInfo:
    encrypting = args.envelope_action == "encrypt"
    envelope = Envelope(
        kms,
        args.key_ids,
        discovery=not encrypting and args.discovery,
        frame_length=args.frame_length if encrypting else FRAME_LENGTH_DEFAULT,
    )
    report = progress.update if progress is not None else None
    try:
        if args.source != "-" and args.destination != "-":
            if encrypting:
                return envelope.encrypt_file(
                    args.source,
                    args.destination,
                    encryption_context=args.encryption_context,
                    progress=report,
                )
            return envelope.decrypt_file(
                args.source,
                args.destination,
                expected_context=args.encryption_context,
                progress=report,
            )
        with _open_in(args.source) as reader, _open_out(args.destination) as writer:
            if encrypting:
                return envelope.encrypt_stream(
                    reader, writer, encryption_context=args.encryption_context, progress=report
                )
            return envelope.decrypt_stream(
                reader, writer, expected_context=args.encryption_context, progress=report
            )
    finally:
        if progress is not None:
            progress.close()


def _open_in(source: str) -> IO[bytes]:
    return os.fdopen(os.dup(sys.stdin.fileno()), "rb") if source == "-" else open(source, "rb")


def _open_out(destination: str) -> IO[bytes]:
    if destination == "-":
        return os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    return open(destination, "wb")


def _summary(info: MessageInfo) -> dict[str, Any]:
    return {
        "KeyId": info.key_arn,
        "Region": info.region,
        "WrappedKeyIds": list(info.wrapped_key_arns),
        "EncryptionContext": info.encryption_context,
        "PlaintextBytes": info.plaintext_bytes,
        "MessageBytes": info.message_bytes,
    }


class _ProgressBar:
    """``[#####.....]  42%  1.2 GiB / 2.9 GiB  310 MB/s`` redrawn in place on stderr."""

    def __init__(self, stream: IO[str], source: str) -> None:
        self._stream = stream
        self._total = os.path.getsize(source) if source != "-" else None
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._done = 0

    def update(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if now - self._drawn_at >= PROGRESS_INTERVAL_S:
            self._drawn_at = now
            self._draw(now)

    def close(self) -> None:
        self._draw(time.monotonic())
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self, now: float) -> None:
        rate = self._done / max(now - self._started, 1e-9) / 1e6
        if self._total:
            fraction = min(self._done / self._total, 1.0)
            filled = int(fraction * PROGRESS_BAR_CHARS)
            bar = "#" * filled + "." * (PROGRESS_BAR_CHARS - filled)
            text = f"[{bar}] {fraction:4.0%}  {_size(self._done)} / {_size(self._total)}"
        else:
            text = _size(self._done)
        self._stream.write(f"\r{text}  {rate:.0f} MB/s ")
        self._stream.flush()


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"
