"""`meridian kms <operation>`: every KMS operation with the AWS CLI's flags and output.

A user of ``aws kms`` should need no new manual: operations are kebab-case,
flags are the AWS CLI's (``--key-id``, ``--plaintext fileb://FILE``,
``--encryption-context k=v``, ``--tags TagKey=a,TagValue=b``), blobs are base64
text or ``fileb://PATH``, and output is AWS's JSON (PascalCase members, blobs in
base64, ISO-8601 dates) plus Meridian's ``Region``. List operations without
``--limit``/``--marker`` follow every page, as the AWS CLI does.

Exit codes follow AWS CLI v2: 0 success; 252 the command line or a parameter is
invalid (argparse's usual 2 is replaced everywhere under ``meridian kms``); 253
the cluster file or region configuration is invalid; 254 the service answered
with an error; 255 anything else.

Global options (``--cluster-file``, ``--region``, ``--output``, ``--query``) are
accepted before or after the operation name.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from meridian.cli import access_cmd, batch_items
from meridian.client import (
    ClientClosedError,
    ClientConfigError,
    ClusterFileError,
    ContextEntry,
    KmsClient,
    KmsError,
    ProtocolError,
    Tag,
)

EXIT_OK = 0
EXIT_USAGE = 252
EXIT_CONFIG = 253
EXIT_SERVICE = 254
EXIT_OTHER = 255

CLUSTER_FILE_ENV = "MERIDIAN_CLUSTER_FILE"
CLUSTER_FILE_DEFAULT = Path("demo-cluster") / "cluster.json"

# Paging a list operation to the end is bounded: no real listing needs more pages,
# and a server that keeps inventing markers must not keep the command running.
PAGES_MAX = 10_000

ClientFactory = Callable[[argparse.Namespace], KmsClient]


class _AwsCliParser(argparse.ArgumentParser):
    """An ArgumentParser that exits with AWS CLI v2's usage code, 252."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---- parameter values (AWS CLI syntax) ---------------------------------------------------


def _blob(text: str) -> bytes:
    """AWS CLI v2 blob syntax: ``fileb://PATH`` for raw bytes, else base64 text."""
    if text.startswith("fileb://"):
        path = text.removeprefix("fileb://")
        try:
            return Path(path).expanduser().read_bytes()
        except OSError as error:
            raise argparse.ArgumentTypeError(
                f"Unable to load paramfile {text}: {error.strerror}"
            ) from None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise argparse.ArgumentTypeError(
            "not valid base64; pass base64 text or fileb://PATH for raw bytes"
        ) from None


def _string_map(text: str) -> dict[str, str]:
    """``k=v[,k2=v2]`` shorthand or a JSON object of strings."""
    if text.lstrip().startswith("{"):
        document = _json(text)
        if not isinstance(document, dict) or not all(
            isinstance(value, str) for value in document.values()
        ):
            raise argparse.ArgumentTypeError("expected a JSON object of string values")
        return document
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], got {item!r}")
        pairs[key] = value
    return pairs


def _tags(text: str) -> list[Tag]:
    """One ``TagKey=k,TagValue=v`` item, or a JSON list of {"TagKey","TagValue"}."""
    if text.lstrip().startswith("["):
        document = _json(text)
        if not isinstance(document, list):
            raise argparse.ArgumentTypeError("expected a JSON list of tags")
        return [_tag(item) for item in document]
    return [_tag(_string_map(text))]


def _tag(item: object) -> Tag:
    if not isinstance(item, dict) or set(item) != {"TagKey", "TagValue"}:
        raise argparse.ArgumentTypeError("each tag needs exactly TagKey and TagValue")
    key, value = item["TagKey"], item["TagValue"]
    if not isinstance(key, str) or not isinstance(value, str):
        raise argparse.ArgumentTypeError("TagKey and TagValue must be strings")
    return Tag(key, value)


def _strings(text: str) -> list[str]:
    """One string, or a JSON list of strings."""
    if not text.lstrip().startswith("["):
        return [text]
    document = _json(text)
    if not isinstance(document, list) or not all(isinstance(item, str) for item in document):
        raise argparse.ArgumentTypeError("expected a JSON list of strings")
    return document


def _timestamp(text: str) -> datetime:
    """AWS CLI timestamps: ISO 8601 (UTC when no offset is given) or epoch seconds."""
    try:
        moment = (
            datetime.fromtimestamp(float(text), tz=UTC)
            if text.replace(".", "", 1).isdigit()
            else datetime.fromisoformat(text.replace("Z", "+00:00"))
        )
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 timestamp or epoch seconds, got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"invalid JSON: {error}") from None


def _text_param(text: str) -> str:
    """AWS CLI text parameters: ``file://PATH`` for a file's text, else the text itself."""
    if not text.startswith("file://"):
        return text
    path = text.removeprefix("file://")
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise argparse.ArgumentTypeError(f"Unable to load paramfile {text}: {reason}") from None


def _constraints(text: str) -> dict[str, dict[str, str]]:
    """Grant constraints as AWS's JSON: ``{"EncryptionContextSubset": {"k": "v"}}``."""
    document = _json(_text_param(text))
    allowed = {"EncryptionContextSubset", "EncryptionContextEquals"}
    if not isinstance(document, dict) or not set(document) <= allowed:
        raise argparse.ArgumentTypeError(
            "expected a JSON object with EncryptionContextSubset or EncryptionContextEquals"
        )
    for value in document.values():
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise argparse.ArgumentTypeError("each constraint must be a JSON object of strings")
    return document


def _context_entries(text: str) -> list[ContextEntry]:
    """IAM's context entries: a JSON list of {ContextKeyName, ContextKeyValues,
    ContextKeyType}, or one ``ContextKeyName=k,ContextKeyValues=v,ContextKeyType=t``."""
    document = _json(_text_param(text)) if text.lstrip().startswith(("[", "file://")) else None
    items = document if document is not None else [_string_map(text)]
    if not isinstance(items, list):
        raise argparse.ArgumentTypeError("expected a JSON list of context entries")
    entries: list[ContextEntry] = []
    for item in items:
        name = item.get("ContextKeyName") if isinstance(item, dict) else None
        values = item.get("ContextKeyValues", []) if isinstance(item, dict) else None
        values = [values] if isinstance(values, str) else values
        if not isinstance(name, str) or not isinstance(values, list) or not values:
            raise argparse.ArgumentTypeError(
                "each context entry needs ContextKeyName and ContextKeyValues"
            )
        kind = item.get("ContextKeyType", "string")
        entries.append(
            ContextEntry(
                context_key_name=name,
                context_key_values=tuple(str(value) for value in values),
                context_key_type=str(kind),
            )
        )
    return entries


# ---- the command table ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    option: str
    help: str
    required: bool = False
    parse: Callable[[str], object] = str
    many: bool = False  # nargs="+"; every parse() returns a list and they are joined
    switch: bool = False  # --name / --no-name

    @property
    def dest(self) -> str:
        # The AWS flag name is the SDK keyword: --key-id -> key_id.
        return self.option.removeprefix("--").replace("-", "_")


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    flags: tuple[Flag, ...]
    list_field: str | None = None  # paged results: the member that collects items

    @property
    def operation(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-"))

    @property
    def method(self) -> str:
        return self.name.replace("-", "_")


_KEY_ID = Flag("--key-id", "key id, key ARN, alias name or alias ARN", required=True)
_KEY_ID_OPTIONAL = replace(_KEY_ID, required=False)
_GRANT_TOKENS = Flag("--grant-tokens", "grant tokens", parse=_strings, many=True)
_CONTEXT = Flag("--encryption-context", "k=v[,k2=v2] or a JSON object", parse=_string_map)
_LIMIT = Flag("--limit", "page size; with --limit or --marker only one page", parse=int)
_MARKER = Flag("--marker", "NextMarker of the previous page")
_NUMBER_OF_BYTES = Flag("--number-of-bytes", "length in bytes", parse=int)
_BLOB = Flag("--ciphertext-blob", "base64 or fileb://PATH", required=True, parse=_blob)
_ALGORITHM = Flag("--encryption-algorithm", "default SYMMETRIC_DEFAULT")
_ALIAS = Flag("--alias-name", "alias/NAME", required=True)
_TARGET = Flag("--target-key-id", "key id or key ARN", required=True)
_SIGN_FLAGS = (
    _KEY_ID,
    Flag("--message", "base64 or fileb://PATH (at most 4096 bytes)", required=True, parse=_blob),
    Flag("--message-type", "RAW (default), DIGEST or EXTERNAL_MU"),
    Flag("--signing-algorithm", "e.g. ECDSA_SHA_256", required=True),
    _GRANT_TOKENS,
)
_MAC_FLAGS = (
    _KEY_ID,
    Flag("--message", "base64 or fileb://PATH (at most 4096 bytes)", required=True, parse=_blob),
    Flag("--mac-algorithm", "e.g. HMAC_SHA_256", required=True),
    _GRANT_TOKENS,
)
_ENCAPSULATION_ALGORITHM = Flag("--encapsulation-algorithm", "ML_KEM", required=True)
_DATA_KEY_PAIR_FLAGS = (
    _KEY_ID,
    Flag("--key-pair-spec", "e.g. ECC_NIST_P256, RSA_2048, ML_KEM_768", required=True),
    _CONTEXT,
    _GRANT_TOKENS,
)


def _batch_items_flag(members: frozenset[str], example: str) -> Flag:
    return Flag(
        "--items",
        f"JSON list (or file://PATH) of the single operation's parameters: {example}",
        required=True,
        parse=batch_items.items_parser(members),
    )


_DATA_KEY_FLAGS = (
    _KEY_ID,
    _CONTEXT,
    _NUMBER_OF_BYTES,
    Flag("--key-spec", "AES_256 or AES_128"),
    _GRANT_TOKENS,
)

COMMANDS: tuple[Command, ...] = (
    Command(
        "create-key",
        "create a key",
        (
            Flag("--policy", "key policy (JSON text or file://PATH)", parse=_text_param),
            Flag("--description", "description"),
            Flag("--key-usage", "e.g. ENCRYPT_DECRYPT"),
            Flag("--key-spec", "e.g. SYMMETRIC_DEFAULT"),
            Flag("--customer-master-key-spec", "deprecated name of --key-spec"),
            Flag("--origin", "e.g. AWS_KMS"),
            Flag("--bypass-policy-lockout-safety-check", "skip the check", switch=True),
            Flag("--tags", "TagKey=k,TagValue=v ... or a JSON list", parse=_tags, many=True),
            Flag("--multi-region", "create a multi-region primary key", switch=True),
        ),
    ),
    Command("describe-key", "show a key's metadata", (_KEY_ID, _GRANT_TOKENS)),
    Command("list-keys", "list keys", (_LIMIT, _MARKER), list_field="keys"),
    Command(
        "update-key-description",
        "change a key's description",
        (_KEY_ID, Flag("--description", "new description", required=True)),
    ),
    Command("enable-key", "enable a key", (_KEY_ID,)),
    Command("disable-key", "disable a key", (_KEY_ID,)),
    Command(
        "schedule-key-deletion",
        "schedule a key's deletion",
        (_KEY_ID, Flag("--pending-window-in-days", "7..30, default 30", parse=int)),
    ),
    Command("cancel-key-deletion", "cancel a scheduled deletion", (_KEY_ID,)),
    Command(
        "encrypt",
        "encrypt up to 4096 bytes",
        (
            _KEY_ID,
            Flag("--plaintext", "base64 or fileb://PATH", required=True, parse=_blob),
            _CONTEXT,
            _GRANT_TOKENS,
            _ALGORITHM,
        ),
    ),
    Command(
        "decrypt",
        "decrypt a ciphertext blob",
        (_BLOB, _CONTEXT, _GRANT_TOKENS, _KEY_ID_OPTIONAL, _ALGORITHM),
    ),
    Command(
        "re-encrypt",
        "decrypt and encrypt again under another key",
        (
            _BLOB,
            replace(_CONTEXT, option="--source-encryption-context"),
            replace(_KEY_ID_OPTIONAL, option="--source-key-id"),
            replace(_KEY_ID, option="--destination-key-id"),
            replace(_CONTEXT, option="--destination-encryption-context"),
            replace(_ALGORITHM, option="--source-encryption-algorithm"),
            replace(_ALGORITHM, option="--destination-encryption-algorithm"),
            _GRANT_TOKENS,
        ),
    ),
    Command("generate-data-key", "make a data key", _DATA_KEY_FLAGS),
    Command("generate-data-key-without-plaintext", "make a data key, sealed only", _DATA_KEY_FLAGS),
    Command("generate-random", "random bytes", (_NUMBER_OF_BYTES,)),
    Command("create-alias", "create an alias", (_ALIAS, _TARGET)),
    Command("update-alias", "point an alias at another key", (_ALIAS, _TARGET)),
    Command("delete-alias", "delete an alias", (_ALIAS,)),
    Command(
        "list-aliases", "list aliases", (_KEY_ID_OPTIONAL, _LIMIT, _MARKER), list_field="aliases"
    ),
    Command(
        "tag-resource",
        "add or change tags",
        (
            _KEY_ID,
            Flag("--tags", "TagKey=k,TagValue=v ...", required=True, parse=_tags, many=True),
        ),
    ),
    Command(
        "untag-resource",
        "remove tags",
        (_KEY_ID, Flag("--tag-keys", "tag keys", required=True, parse=_strings, many=True)),
    ),
    Command(
        "list-resource-tags", "list a key's tags", (_KEY_ID, _LIMIT, _MARKER), list_field="tags"
    ),
    # ---- access control (docs/access-control.md) ----
    Command(
        "put-key-policy",
        "replace a key's policy",
        (
            _KEY_ID,
            Flag("--policy", "key policy: JSON or file://PATH", required=True, parse=_text_param),
            Flag("--policy-name", "default (the only key policy)"),
            Flag("--bypass-policy-lockout-safety-check", "skip the lockout check", switch=True),
        ),
    ),
    Command("get-key-policy", "show a key's policy", (_KEY_ID, Flag("--policy-name", "default"))),
    Command(
        "list-key-policies",
        "list a key's policy names",
        (_KEY_ID, _LIMIT, _MARKER),
        list_field="policy_names",
    ),
    Command(
        "create-grant",
        "allow a principal some operations on a key",
        (
            _KEY_ID,
            Flag("--grantee-principal", "principal ARN", required=True),
            Flag("--retiring-principal", "principal ARN that may retire the grant"),
            Flag("--operations", "grant operations", required=True, parse=_strings, many=True),
            Flag("--constraints", "JSON: EncryptionContextSubset/Equals", parse=_constraints),
            _GRANT_TOKENS,
            Flag("--name", "a name; the same name and terms return the same grant"),
        ),
    ),
    Command(
        "list-grants",
        "list a key's grants",
        (
            _KEY_ID,
            _LIMIT,
            _MARKER,
            Flag("--grant-id", "only this grant"),
            Flag("--grantee-principal", "only grants to this principal"),
        ),
        list_field="grants",
    ),
    Command(
        "list-retirable-grants",
        "list the grants a principal may retire",
        (Flag("--retiring-principal", "principal ARN", required=True), _LIMIT, _MARKER),
        list_field="grants",
    ),
    Command(
        "retire-grant",
        "retire a grant (as its retiring principal or grantee)",
        (
            Flag("--grant-token", "the grant's token"),
            _KEY_ID_OPTIONAL,
            Flag("--grant-id", "the grant's id (with --key-id)"),
        ),
    ),
    Command(
        "revoke-grant",
        "revoke a grant",
        (_KEY_ID, Flag("--grant-id", "the grant's id", required=True)),
    ),
    Command(
        "put-user-policy",
        "attach an identity policy to a principal (in this region)",
        (
            Flag("--user-name", "principal name (its certificate's)", required=True),
            Flag("--policy-name", "policy name", required=True),
            Flag("--policy-document", "JSON text or file://PATH", required=True, parse=_text_param),
        ),
    ),
    Command(
        "get-user-policy",
        "show an identity policy",
        (
            Flag("--user-name", "principal name", required=True),
            Flag("--policy-name", "policy name", required=True),
        ),
    ),
    Command(
        "list-user-policies",
        "list a principal's identity policies",
        (
            Flag("--user-name", "principal name", required=True),
            _MARKER,
            Flag("--max-items", "page size", parse=int),
        ),
    ),
    Command(
        "delete-user-policy",
        "delete an identity policy",
        (
            Flag("--user-name", "principal name", required=True),
            Flag("--policy-name", "policy name", required=True),
        ),
    ),
    Command(
        "simulate-principal-policy",
        "evaluate a principal's access without calling the operations",
        (
            Flag("--policy-source-arn", "principal ARN", required=True),
            Flag("--action-names", "e.g. kms:Decrypt", required=True, parse=_strings, many=True),
            Flag("--resource-arns", "keys (id, ARN, alias) or *", parse=_strings, many=True),
            Flag(
                "--context-entries",
                "ContextKeyName=k,ContextKeyValues=v or a JSON list",
                parse=_context_entries,
                many=True,
            ),
        ),
    ),
    # ---- asymmetric, HMAC and post-quantum keys (docs/key-types.md) ----
    Command("sign", "sign a message or digest", _SIGN_FLAGS),
    Command(
        "verify",
        "verify a signature (fails with KMSInvalidSignatureException)",
        (*_SIGN_FLAGS, Flag("--signature", "base64 or fileb://PATH", required=True, parse=_blob)),
    ),
    Command("get-public-key", "the DER public key of an asymmetric key", (_KEY_ID, _GRANT_TOKENS)),
    Command("generate-mac", "HMAC a message", _MAC_FLAGS),
    Command(
        "verify-mac",
        "verify an HMAC (fails with KMSInvalidMacException)",
        (*_MAC_FLAGS, Flag("--mac", "base64 or fileb://PATH", required=True, parse=_blob)),
    ),
    Command(
        "derive-shared-secret",
        "ECDH with a KEY_AGREEMENT key and a peer's public key",
        (
            _KEY_ID,
            Flag("--key-agreement-algorithm", "ECDH", required=True),
            Flag(
                "--public-key",
                "peer's DER public key: base64 or fileb://PATH",
                required=True,
                parse=_blob,
            ),
            _GRANT_TOKENS,
        ),
    ),
    Command(
        "encapsulate",
        "a new ML-KEM shared secret and its ciphertext",
        (_KEY_ID, _ENCAPSULATION_ALGORITHM, _GRANT_TOKENS),
    ),
    Command(
        "decapsulate",
        "recover an ML-KEM shared secret",
        (
            _KEY_ID,
            Flag(
                "--shared-secret-ciphertext-blob",
                "base64 or fileb://PATH",
                required=True,
                parse=_blob,
            ),
            _ENCAPSULATION_ALGORITHM,
            _GRANT_TOKENS,
        ),
    ),
    Command("generate-data-key-pair", "make a data key pair", _DATA_KEY_PAIR_FLAGS),
    Command(
        "generate-data-key-pair-without-plaintext",
        "make a data key pair; the private key sealed only",
        _DATA_KEY_PAIR_FLAGS,
    ),
    # ---- rotation ----
    Command(
        "enable-key-rotation",
        "rotate automatically",
        (_KEY_ID, Flag("--rotation-period-in-days", "90..2560, default 365", parse=int)),
    ),
    Command("disable-key-rotation", "stop rotating automatically", (_KEY_ID,)),
    Command("get-key-rotation-status", "rotation settings of a key", (_KEY_ID,)),
    Command("rotate-key-on-demand", "rotate now (at most 25 times per key)", (_KEY_ID,)),
    Command(
        "list-key-rotations",
        "a key's rotations (or all its key material)",
        (
            _KEY_ID,
            Flag("--include-key-material", "ALL_KEY_MATERIAL or ROTATIONS_ONLY (default)"),
            _LIMIT,
            _MARKER,
        ),
        list_field="rotations",
    ),
    # ---- imported key material ----
    Command(
        "get-parameters-for-import",
        "a wrapping public key and import token",
        (
            _KEY_ID,
            Flag("--wrapping-algorithm", "e.g. RSA_AES_KEY_WRAP_SHA_256", required=True),
            Flag("--wrapping-key-spec", "RSA_2048, RSA_3072 or RSA_4096", required=True),
        ),
    ),
    Command(
        "import-key-material",
        "import wrapped key material",
        (
            _KEY_ID,
            Flag("--import-token", "base64 or fileb://PATH", required=True, parse=_blob),
            Flag("--encrypted-key-material", "base64 or fileb://PATH", required=True, parse=_blob),
            Flag("--valid-to", "ISO 8601 or epoch seconds", parse=_timestamp),
            Flag("--expiration-model", "KEY_MATERIAL_EXPIRES (default) or ..._DOES_NOT_EXPIRE"),
            Flag("--import-type", "NEW_KEY_MATERIAL or EXISTING_KEY_MATERIAL"),
            Flag("--key-material-description", "description of the material"),
            Flag("--key-material-id", "64 hex digits (re-imports)"),
        ),
    ),
    Command(
        "delete-imported-key-material",
        "delete imported key material",
        (_KEY_ID, Flag("--key-material-id", "default: the current material")),
    ),
    Command("get-key-last-usage", "the key's last successful cryptographic use", (_KEY_ID,)),
    # Multi-Region keys (replication/DESIGN.md).
    Command(
        "replicate-key",
        "replicate a multi-Region primary key into another region",
        (
            replace(_KEY_ID, help="the primary key's id or ARN"),
            Flag("--replica-region", "the region of the new replica", required=True),
            Flag("--policy", "the replica's key policy (JSON)"),
            Flag("--bypass-policy-lockout-safety-check", "skip the check", switch=True),
            Flag("--description", "the replica's description"),
            Flag("--tags", "TagKey=k,TagValue=v ... or a JSON list", parse=_tags, many=True),
        ),
    ),
    Command(
        "update-primary-region",
        "make the replica in another region the primary key",
        (
            replace(_KEY_ID, help="the current primary key's id or ARN"),
            Flag("--primary-region", "the region whose replica becomes primary", required=True),
            Flag(
                "--force",
                "Meridian: promote the replica in --primary-region while the primary's "
                "region is lost (sent to --primary-region; see replication/DESIGN.md)",
                switch=True,
            ),
        ),
    ),
    # Meridian's batch extensions (docs/batch-operations.md): --items is a JSON list of
    # the single operation's parameters; each item's result or error is in ``Items``.
    Command(
        "batch-encrypt",
        "Meridian: up to 100 Encrypt calls in one",
        (_batch_items_flag(batch_items.ENCRYPT_MEMBERS, "KeyId, Plaintext (base64), ..."),),
    ),
    Command(
        "batch-decrypt",
        "Meridian: up to 100 Decrypt calls in one",
        (_batch_items_flag(batch_items.DECRYPT_MEMBERS, "CiphertextBlob (base64), ..."),),
    ),
    Command(
        "batch-generate-data-key",
        "Meridian: up to 100 GenerateDataKey calls in one",
        (_batch_items_flag(batch_items.GENERATE_DATA_KEY_MEMBERS, "KeyId, KeySpec, ..."),),
    ),
)


# ---- parser ---------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``kms`` group to the ``meridian`` command."""
    parser = subparsers.add_parser(
        "kms", help="AWS KMS operations", description="AWS KMS operations on a Meridian cluster."
    )
    # add_parser always builds the parent's parser class; switching the class keeps
    # every usage error under `meridian kms` on AWS's exit code instead of 2.
    parser.__class__ = _AwsCliParser
    _configure(parser)


def build_parser() -> argparse.ArgumentParser:
    """A standalone ``meridian kms`` parser (for tests and embedding)."""
    parser = _AwsCliParser(prog="meridian kms", description="AWS KMS operations.")
    _configure(parser)
    return parser


def _configure(parser: argparse.ArgumentParser) -> None:
    _add_global_options(parser, suppress=False)
    operations = parser.add_subparsers(
        dest="kms_operation", metavar="OPERATION", parser_class=_AwsCliParser
    )
    operations.required = True
    for command in COMMANDS:
        sub = operations.add_parser(command.name, help=command.help, description=command.help)
        for flag in command.flags:
            _add_flag(sub, flag)
        # Accepted after the operation too; SUPPRESS keeps a value given before it.
        _add_global_options(sub, suppress=True)
        sub.set_defaults(func=handle, kms_command=command)
    # `simulate-policy`: simulation of one principal on one key in every region that
    # holds it (cli/access_cmd.py).
    access_cmd.register(
        operations, add_global_options=_add_global_options, handle=handle, parse_map=_string_map
    )


def _add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    if flag.switch:
        parser.add_argument(
            flag.option, action=argparse.BooleanOptionalAction, default=None, help=flag.help
        )
    else:
        parser.add_argument(
            flag.option,
            required=flag.required,
            type=flag.parse,
            nargs="+" if flag.many else None,
            help=flag.help,
        )


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--cluster-file",
        type=Path,
        default=default(None),
        help=f"cluster.json (default: ${CLUSTER_FILE_ENV}, else {CLUSTER_FILE_DEFAULT})",
    )
    parser.add_argument("--region", default=default(None), help="send every call to REGION")
    parser.add_argument(
        "--output", choices=("json", "text"), default=default("json"), help="output format"
    )
    parser.add_argument(
        "--query", default=default(None), help="a member path, e.g. KeyMetadata.KeyId"
    )


# ---- running ----------------------------------------------------------------------------


def client_from_args(args: argparse.Namespace) -> KmsClient:
    """The default client: the cluster file's regions, pinned to --region if given."""
    path = args.cluster_file or Path(os.environ.get(CLUSTER_FILE_ENV) or CLUSTER_FILE_DEFAULT)
    return KmsClient.from_cluster_file(path, region=args.region)


def run(
    argv: Sequence[str],
    *,
    client_factory: ClientFactory = client_from_args,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Parse ``argv`` (the words after ``meridian kms``) and run the operation."""
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
    """Run the parsed operation; print its output; return the exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    special = getattr(args, "kms_handler", None)
    if special is not None:
        code: int = special(args, client_factory=client_factory, stdout=out, stderr=err)
        return code
    command: Command = args.kms_command
    arguments = sdk_arguments(args)
    try:
        with client_factory(args) as client:
            document = _call(client, command, arguments)
    except KmsError as error:
        print(
            f"An error occurred ({error.error_name}) when calling the {command.operation} "
            f"operation: {error.message}",
            file=err,
        )
        return EXIT_SERVICE
    except ClientConfigError as error:
        hint = ""
        using_default_file = args.cluster_file is None and not os.environ.get(CLUSTER_FILE_ENV)
        if isinstance(error, ClusterFileError) and using_default_file:
            hint = f" (pass --cluster-file or set {CLUSTER_FILE_ENV})"
        print(f"meridian kms: {error}{hint}", file=err)
        return EXIT_CONFIG
    except (ProtocolError, ClientClosedError) as error:
        print(f"meridian kms: {error}", file=err)
        return EXIT_OTHER
    value = _query(document, args.query) if args.query else document
    out.write(_format_json(value) if args.output == "json" else _format_text(value))
    return EXIT_OK


def sdk_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The SDK keyword arguments for the parsed operation (flags left out are absent)."""
    command: Command = args.kms_command
    arguments: dict[str, object] = {}
    for flag in command.flags:
        value = getattr(args, flag.dest)
        if value is None:
            continue
        arguments[flag.dest] = [item for part in value for item in part] if flag.many else value
    return arguments


def _call(client: KmsClient, command: Command, arguments: dict[str, object]) -> dict[str, Any]:
    method = getattr(client, command.method)
    paging_asked = "limit" in arguments or "marker" in arguments
    if command.list_field is None or paging_asked:
        return _aws_document(method(**arguments))
    # Like the AWS CLI: follow every page and show one merged list.
    items: list[Any] = []
    markers_seen: set[str] = set()
    marker = None
    for _ in range(PAGES_MAX):
        page = method(**arguments, marker=marker)
        items.extend(getattr(page, command.list_field))
        if not page.truncated or page.next_marker is None:
            break
        if page.next_marker in markers_seen:
            raise ProtocolError(f"{command.operation} sent marker {page.next_marker!r} twice")
        markers_seen.add(page.next_marker)
        marker = page.next_marker
    else:
        raise ProtocolError(f"{command.operation} returned more than {PAGES_MAX} pages")
    merged = replace(page, **{command.list_field: tuple(items)})
    document = _aws_document(merged)
    document.pop("NextMarker", None)
    document.pop("Truncated", None)
    return document


# ---- output -------------------------------------------------------------------------------

# AWS member names that are not the plain PascalCase of the SDK's snake_case names.
_AWS_NAMES = {"aws_account_id": "AWSAccountId"}


def _aws_document(result: object) -> dict[str, Any]:
    document = _aws_value(result, top_level=True)
    assert isinstance(document, dict), "every result is a dataclass"
    return document


def _aws_value(value: object, *, top_level: bool = False) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        members = ((member.name, getattr(value, member.name)) for member in fields(value))
        return {
            _aws_name(name): _aws_value(item)
            for name, item in members
            if not _absent(item, top_level=top_level)
        }
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, KmsError):
        # A batch item that failed: what the single call would have printed, as a member.
        return {"Error": {"Code": value.error_name, "Message": value.message}}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_aws_value(item) for item in value]
    if isinstance(value, Mapping):
        # Maps (encryption contexts) keep their own keys; only values are converted.
        return {key: _aws_value(item) for key, item in value.items()}
    return value


def _absent(value: object, *, top_level: bool) -> bool:
    """Members AWS leaves out: unset ones, and empty lists inside nested shapes.

    An empty list at the top (``"Keys": []``) is the answer itself and is shown;
    deeper down (a symmetric key's ``SigningAlgorithms``) AWS omits the member.
    """
    return value is None or (value == () and not top_level)


def _aws_name(name: str) -> str:
    return _AWS_NAMES.get(name) or "".join(part.capitalize() for part in name.split("_"))


def _query(document: Any, path: str) -> Any:
    """A small JMESPath subset: ``A.B.C`` and projections ``List[].Member``."""
    head, _, rest = path.partition(".")
    project = head.endswith("[]")
    name = head.removesuffix("[]")
    value = document.get(name) if isinstance(document, dict) else None
    if project:
        if not isinstance(value, list):
            return None
        selected = [_query(item, rest) if rest else item for item in value]
        return [item for item in selected if item is not None]
    return _query(value, rest) if rest else value


def _format_json(value: Any) -> str:
    return json.dumps(value, indent=4, ensure_ascii=False) + "\n"


def _format_text(value: Any) -> str:
    """The AWS CLI's text output: tab-separated values, sorted members, one record a line."""
    lines: list[str] = []
    _text(value, None, lines)
    return "".join(line + "\n" for line in lines)


def _text(value: Any, identifier: str | None, lines: list[str]) -> None:
    if isinstance(value, dict):
        scalars = [_scalar(item) for _, item in sorted(value.items()) if not _nested(item)]
        if scalars:
            lines.append("\t".join([identifier.upper(), *scalars] if identifier else scalars))
        for key, item in sorted(value.items()):
            if _nested(item):
                _text(item, key, lines)
    elif isinstance(value, list):
        if any(_nested(item) for item in value):
            for item in value:
                _text(item, identifier, lines)
        elif value and identifier:
            lines.extend(f"{identifier.upper()}\t{_scalar(item)}" for item in value)
        elif value:
            lines.append("\t".join(_scalar(item) for item in value))
    else:
        lines.append(_scalar(value))


def _nested(value: Any) -> bool:
    return isinstance(value, dict | list)


def _scalar(value: Any) -> str:
    return "None" if value is None else str(value)
