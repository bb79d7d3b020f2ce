"""`meridian kms batch-*`: the ``--items`` parameter of Meridian's batch extensions.

``--items`` is a JSON list (inline or ``file://PATH``) of the single operation's
parameters under their AWS member names, as ``aws kms encrypt --cli-input-json`` takes
them: ``[{"KeyId": "alias/app", "Plaintext": "aGk=", "EncryptionContext": {"a": "b"}}]``.
Blob members (``Plaintext``, ``CiphertextBlob``) are base64 text. Each item becomes the
SDK keyword arguments of the single method (docs/batch-operations.md).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

_BLOB_MEMBERS = frozenset({"plaintext", "ciphertext_blob"})
_MAP_MEMBERS = frozenset({"encryption_context"})
_LIST_MEMBERS = frozenset({"grant_tokens"})
_INT_MEMBERS = frozenset({"number_of_bytes"})

ENCRYPT_MEMBERS = frozenset(
    {"key_id", "plaintext", "encryption_context", "grant_tokens", "encryption_algorithm"}
)
DECRYPT_MEMBERS = frozenset(
    {"ciphertext_blob", "encryption_context", "grant_tokens", "key_id", "encryption_algorithm"}
)
GENERATE_DATA_KEY_MEMBERS = frozenset(
    {"key_id", "encryption_context", "number_of_bytes", "key_spec", "grant_tokens"}
)


def _snake(name: str) -> str:
    # KeyId -> key_id; CiphertextBlob -> ciphertext_blob (the SDK's keyword names).
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def items_parser(members: frozenset[str]) -> Callable[[str], list[dict[str, Any]]]:
    """An argparse ``type`` reading ``--items`` for an operation taking ``members``."""

    def parse(text: str) -> list[dict[str, Any]]:
        document = _load(text)
        if not isinstance(document, list):
            raise argparse.ArgumentTypeError("--items must be a JSON list of objects")
        return [_item(index, item, members) for index, item in enumerate(document)]

    return parse


def _load(text: str) -> Any:
    if text.startswith("file://"):
        path = text.removeprefix("file://")
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise argparse.ArgumentTypeError(
                f"Unable to load paramfile file://{path}: {reason}"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"invalid JSON: {error}") from None


def _item(index: int, item: object, members: frozenset[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise argparse.ArgumentTypeError(f"item {index} is not a JSON object")
    arguments: dict[str, Any] = {}
    for member, value in item.items():
        name = _snake(str(member))
        if name not in members:
            raise argparse.ArgumentTypeError(f"item {index}: unknown member {member!r}")
        arguments[name] = _value(index, member, name, value)
    return arguments


def _value(index: int, member: str, name: str, value: object) -> object:
    problem = f"item {index}: {member}"
    if name in _BLOB_MEMBERS:
        if not isinstance(value, str):
            raise argparse.ArgumentTypeError(f"{problem} must be base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise argparse.ArgumentTypeError(f"{problem} is not valid base64") from None
    if name in _MAP_MEMBERS:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise argparse.ArgumentTypeError(f"{problem} must be a JSON object of strings")
        return value
    if name in _LIST_MEMBERS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise argparse.ArgumentTypeError(f"{problem} must be a JSON list of strings")
        return value
    if name in _INT_MEMBERS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"{problem} must be an integer")
        return value
    if not isinstance(value, str):
        raise argparse.ArgumentTypeError(f"{problem} must be a string")
    return value
