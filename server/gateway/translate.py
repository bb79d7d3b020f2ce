"""AWS JSON 1.1 documents <-> the gRPC API's protobuf messages, derived from descriptors.

Nothing here knows an operation: the proto's field names are the snake_case of AWS's
member names (a contract test holds them to botocore's model), so each AWS member name
is computed from its field, and the JSON types follow from the field types:

    proto field                 AWS JSON 1.1
    string / bool / integers    string / boolean / number
    bytes                       base64 string (blob)
    google.protobuf.Timestamp   number, seconds since the epoch
    repeated T / map<string,T>  array / object
    message                     object, recursively

An RPC that another engineer adds to the proto is therefore served by the gateway
without a line here. Members a request may not carry are refused, never ignored: a
silently dropped ``DryRun`` or ``CustomKeyStoreId`` would do something else than asked.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from meridian.server.domain.errors import UnsupportedOperationException
from meridian.server.gateway.errors import SerializationException

# Where snake_case -> PascalCase is not the inverse of AWS's own naming (an acronym).
# tests/contract/test_gateway_translation.py checks every member of AWS's KMS model.
AWS_NAME_EXCEPTIONS: dict[str, str] = {"aws_account_id": "AWSAccountId"}

# Response fields numbered from here are Meridian's additions (DESIGN.md §2): they are
# not members of AWS's shapes, so the gateway sends them as x-meridian-* headers.
EXTENSION_FIELD_NUMBER_MIN = 1000

# How much of a caller's map key an error message quotes.
PATH_KEY_CHARS_MAX = 64

# Members AWS always returns, even when empty, that proto3 cannot tell from "unset".
ALWAYS_PRESENT_FIELDS = frozenset({"meridian.kms.v1.KeyMetadata.description"})

_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_TIMESTAMP_SECONDS_MIN = -62_135_596_800  # 0001-01-01T00:00:00Z
_TIMESTAMP_SECONDS_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
_INTEGER_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def fields_of(descriptor: Any) -> list[FieldDescriptor]:
    """A message descriptor's fields (typed: the C and Python descriptors differ in stubs)."""
    return list(descriptor.fields)


def message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None
    return field.message_type


def aws_member_name(field_name: str) -> str:
    """``ciphertext_blob`` -> ``CiphertextBlob``; ``aws_account_id`` -> ``AWSAccountId``."""
    exceptional = AWS_NAME_EXCEPTIONS.get(field_name)
    if exceptional is not None:
        return exceptional
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_"))


def is_extension_field(field: FieldDescriptor) -> bool:
    return field.number >= EXTENSION_FIELD_NUMBER_MIN


# ---- AWS JSON -> proto --------------------------------------------------------------


def fill_request(message: Message, document: object, operation: str) -> None:
    """Set ``message``'s fields from a decoded AWS JSON request body.

    Raises SerializationException when a member has the wrong JSON type (as AWS does)
    and UnsupportedOperationException for a member that Meridian does not implement.
    """
    if not isinstance(document, dict):
        raise SerializationException("The request body must be a JSON object")
    _fill(message, document, operation)


def _fill(message: Message, document: dict[Any, Any], path: str) -> None:
    fields = {aws_member_name(field.name): field for field in fields_of(message.DESCRIPTOR)}
    for name, value in document.items():
        field = fields.get(name)
        if field is None or is_extension_field(field):
            if _is_empty(value):
                continue
            raise UnsupportedOperationException(
                f"Meridian does not support the member {str(name)[:PATH_KEY_CHARS_MAX]!r} in {path}"
            )
        if value is not None:
            _set(message, field, value, f"{path}.{name}")


def _is_empty(value: object) -> bool:
    """A member that asks for nothing: null, false, "", [] or {} (e.g. ``DryRun: false``)."""
    return value is None or value is False or value in ("", [], {})


def _set(message: Message, field: FieldDescriptor, value: object, path: str) -> None:
    if _is_map(field):
        if not isinstance(value, dict):
            raise _wrong_type(path, "an object")
        entries = getattr(message, field.name)
        value_field = message_type(field).fields_by_name["value"]
        for key, item in value.items():
            # Keys are the caller's text: errors quote only their start.
            item_path = f"{path}.{str(key)[:PATH_KEY_CHARS_MAX]}"
            key_value = _scalar(message_type(field).fields_by_name["key"], key, f"{path} key")
            if item is None:
                raise _wrong_type(item_path, "a value")
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                _message(entries[key_value], value_field, item, item_path)
            else:
                entries[key_value] = _scalar(value_field, item, item_path)
    elif field.is_repeated:
        if not isinstance(value, list):
            raise _wrong_type(path, "an array")
        items = getattr(message, field.name)
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if item is None:
                raise _wrong_type(item_path, "a value")
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                _message(items.add(), field, item, item_path)
            else:
                items.append(_scalar(field, item, item_path))
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _message(getattr(message, field.name), field, value, path)
    else:
        setattr(message, field.name, _scalar(field, value, path))


def _message(target: Message, field: FieldDescriptor, value: object, path: str) -> None:
    if message_type(field).full_name == _TIMESTAMP:
        target.CopyFrom(_timestamp(value, path))
        return
    if not isinstance(value, dict):
        raise _wrong_type(path, "an object")
    target.SetInParent()
    _fill(target, value, path)


def _scalar(field: FieldDescriptor, value: object, path: str) -> object:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise _wrong_type(path, "a string")
        if not _is_encodable(value):
            raise SerializationException(f"{path} is not valid Unicode text")
        return value
    if kind == FieldDescriptor.TYPE_BYTES:
        if not isinstance(value, str):
            raise _wrong_type(path, "a base64-encoded string")
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise SerializationException(f"{path} is not valid base64") from None
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _wrong_type(path, "a boolean")
        return value
    if kind in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[kind]
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(path, "an integer")
        if not low <= value <= high:
            raise SerializationException(f"{path} is out of range for its type")
        return value
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _wrong_type(path, "a number")
        return float(value)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        if not isinstance(value, str) or value not in field.enum_type.values_by_name:
            raise SerializationException(f"{path} is not one of its enumeration's values")
        return field.enum_type.values_by_name[value].number
    raise SerializationException(f"{path} has a type the gateway cannot translate")


def _timestamp(value: object, path: str) -> Timestamp:
    # AWS JSON 1.1 sends timestamps as (possibly fractional) seconds since the epoch.
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _wrong_type(path, "a number of seconds since the epoch")
    seconds = math.floor(value)
    if not _TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX:
        raise SerializationException(f"{path} is out of range for a timestamp")
    nanos = min(round((value - seconds) * 1e9), 999_999_999)
    return Timestamp(seconds=seconds, nanos=nanos)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and message_type(field).GetOptions().map_entry


def _is_encodable(text: str) -> bool:
    # JSON may carry lone surrogates ("\ud800"), which no UTF-8 protobuf string can hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _wrong_type(path: str, expected: str) -> SerializationException:
    return SerializationException(f"{path} must be {expected}")


# ---- proto -> AWS JSON --------------------------------------------------------------


def response_document(message: Message) -> dict[str, Any]:
    """The AWS JSON 1.1 body of a response: its members, without Meridian's extensions."""
    return _document(message, top_level=True)


def extension_headers(message: Message) -> dict[str, str]:
    """Meridian's response additions (e.g. ``region``) as ``x-meridian-*`` headers."""
    headers: dict[str, str] = {}
    for field in fields_of(message.DESCRIPTOR):
        if is_extension_field(field) and field.type == FieldDescriptor.TYPE_STRING:
            value = getattr(message, field.name)
            if value:
                headers[f"x-meridian-{field.name.replace('_', '-')}"] = value
    return headers


def _document(message: Message, *, top_level: bool) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for field in fields_of(message.DESCRIPTOR):
        if top_level and is_extension_field(field):
            continue
        name = aws_member_name(field.name)
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = message_type(field).fields_by_name["value"]
            if value:
                document[name] = {key: _out(value_field, item) for key, item in value.items()}
        elif field.is_repeated:
            # AWS returns a response's own lists (Keys, Aliases, Tags...) even when empty,
            # and leaves empty nested ones (SigningAlgorithms of a symmetric key) out.
            if value or top_level:
                document[name] = [_out(field, item) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE or field.has_presence:
            if message.HasField(field.name):
                document[name] = _out(field, value)
        elif (
            value
            or field.type == FieldDescriptor.TYPE_BOOL
            or field.full_name in ALWAYS_PRESENT_FIELDS
        ):
            document[name] = _out(field, value)
    return document


def _out(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if message_type(field).full_name == _TIMESTAMP:
            seconds: int = value.seconds
            nanos: int = value.nanos
            return seconds if nanos == 0 else seconds + nanos / 1e9
        return _document(value, top_level=False)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values_by_number[value].name
    return value
