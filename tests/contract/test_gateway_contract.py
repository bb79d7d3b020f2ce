"""Every RPC of KeyManagementService works through the AWS endpoint: held to botocore.

For each RPC, whoever added it: the servicer implements it (so the gateway routes it),
botocore's own JSON serializer encodes a request with every field the proto has and the
gateway's translation fills every one of them, and the gateway's encoding of a response
with every field set is parsed back by botocore's own parser with every value intact.
An RPC added to the proto later is checked here without a change to this file.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import botocore.parsers
import botocore.serialize
import botocore.session
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc
from meridian.server.api.batch_servicer import BATCH_ITEM_OPERATIONS
from meridian.server.api.errors import GRPC_CODE_BY_REASON
from meridian.server.api.servicer import KeyManagementServicer
from meridian.server.gateway.app import implemented_operations
from meridian.server.gateway.errors import http_status_for
from meridian.server.gateway.translate import (
    aws_member_name,
    fill_request,
    is_extension_field,
    response_document,
)

SERVICE = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]
# Meridian's batch extensions have no AWS model to hold them to (tests/contract/
# test_botocore_model.py holds them to the single operations' messages instead).
RPCS = [method.name for method in SERVICE.methods if method.name not in BATCH_ITEM_OPERATIONS]
SAMPLE_TIME = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(scope="module")
def aws_model():
    return botocore.session.get_session().get_service_model("kms")


@pytest.fixture(scope="module")
def operation_models(aws_model):
    """Each RPC's AWS operation: KMS's, or for the few RPCs that mirror another AWS
    service's operation (IAM's identity-policy calls), that service's."""
    iam = botocore.session.get_session().get_service_model("iam")
    return {
        rpc: (aws_model if rpc in aws_model.operation_names else iam).operation_model(rpc)
        for rpc in RPCS
    }


def _structure_members(shape: Any, seen: set[str]) -> set[str]:
    if shape is None or shape.name in seen:
        return set()
    seen.add(shape.name)
    if shape.type_name == "list":
        return _structure_members(shape.member, seen)
    if shape.type_name == "map":
        return _structure_members(shape.value, seen)
    if shape.type_name != "structure":
        return set()
    members = set(shape.members)
    for member in shape.members.values():
        members |= _structure_members(member, seen)
    return members


def snake(name: str) -> str:
    import re

    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


def test_member_names_round_trip_for_the_whole_aws_model(aws_model, operation_models) -> None:
    """Every member of every KMS shape (operations Meridian lacks today included), and of
    every shape of the other services' operations that an RPC mirrors."""
    members = {
        member
        for name in aws_model.shape_names
        if (shape := aws_model.shape_for(name)).type_name == "structure"
        for member in shape.members
        if member != "message"  # error shapes' own field, never a proto field
    }
    assert len(members) > 150
    for operation in operation_models.values():
        seen: set[str] = set()
        members |= _structure_members(operation.input_shape, seen)
        members |= _structure_members(operation.output_shape, seen)
    assert sorted(m for m in members if aws_member_name(snake(m)) != m) == []


def test_every_rpc_is_implemented_and_so_routed() -> None:
    served = implemented_operations(
        KeyManagementServicer,
        SERVICE,
        unimplemented_base=kms_pb2_grpc.KeyManagementServiceServicer,
    )
    assert served == [method.name for method in SERVICE.methods]


# ---- requests: botocore serializes, the gateway fills the proto message -----------------


def _sample_param(shape: Any, field: FieldDescriptor | None, descriptor: Any) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _sample_structure(shape, descriptor)
    if kind == "list":
        return [_sample_param(shape.member, field, descriptor)]
    if kind == "map":
        value_field = field.message_type.fields_by_name["value"] if field else None
        value_descriptor = value_field.message_type if value_field else None
        return {"k": _sample_param(shape.value, value_field, value_descriptor)}
    # Samples honour the shape's lower bound (RotationPeriodInDays >= 90, a KeyMaterialId
    # of 64 characters), which botocore's validator enforces before serializing.
    minimum = shape.metadata.get("min", 0)
    return {
        "string": "s" * max(1, minimum),
        "integer": max(7, minimum),
        "long": max(7, minimum),
        "boolean": True,
        "blob": b"\x00blob\xff",
        "timestamp": SAMPLE_TIME,
        "double": 1.5,
        "float": 1.5,
    }[kind]


def _sample_structure(shape: Any, descriptor: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for field in descriptor.fields:
        name = aws_member_name(field.name)
        assert name in shape.members, f"{descriptor.full_name}.{field.name} is not {shape.name}.*"
        nested = field.message_type
        if nested is not None and (
            nested.GetOptions().map_entry or nested.full_name.startswith("google.")
        ):
            nested = None
        params[name] = _sample_param(shape.members[name], field, nested)
    return params


@pytest.mark.parametrize("rpc", RPCS)
def test_request_translation(aws_model, operation_models, rpc: str) -> None:
    method = SERVICE.methods_by_name[rpc]
    operation = operation_models[rpc]
    params = _sample_structure(operation.input_shape, method.input_type)
    if rpc in aws_model.operation_names:
        serialized = botocore.serialize.create_serializer("json").serialize_to_request(
            params, operation
        )
        assert serialized["headers"]["X-Amz-Target"] == f"TrentService.{rpc}"
        document = json.loads(serialized["body"] or b"{}")
    else:
        # Another service's operation served on the KMS endpoint: AWS JSON 1.1 as the
        # gateway speaks it (botocore would use that service's own protocol).
        document = _json_value(params)
    message = GetMessageClass(method.input_type)()
    fill_request(message, document, rpc)
    # Every field made it: re-encoding the message gives back what botocore sent.
    assert response_document(message) == document


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


# ---- responses: the gateway encodes, botocore parses ----------------------------------


def _fill_message(message: Message) -> None:
    for field in message.DESCRIPTOR.fields:
        if is_extension_field(field):
            setattr(message, field.name, "meridian-only")
            continue
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            value_field = nested.fields_by_name["value"]
            target = getattr(message, field.name)
            if value_field.message_type is not None:
                _fill_message(target["k"])
            else:
                target["k"] = _scalar_sample(value_field)
        elif field.is_repeated:
            items = getattr(message, field.name)
            if nested is not None:
                _fill_message(items.add())
            else:
                items.append(_scalar_sample(field))
        elif nested is not None and nested.full_name == "google.protobuf.Timestamp":
            getattr(message, field.name).FromDatetime(SAMPLE_TIME)
        elif nested is not None:
            _fill_message(getattr(message, field.name))
        else:
            setattr(message, field.name, _scalar_sample(field))


def _scalar_sample(field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return "s"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b"\x00blob\xff"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.5
    return 7


def _expected(message: Message) -> dict[str, Any]:
    """The dict botocore should parse from the response: every non-extension field."""
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if is_extension_field(field):
            continue
        name = aws_member_name(field.name)
        value = getattr(message, field.name)
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            value_field = nested.fields_by_name["value"]
            result[name] = {
                key: _expected(item) if value_field.message_type is not None else item
                for key, item in value.items()
            }
        elif field.is_repeated:
            result[name] = [_expected(item) if nested is not None else item for item in value]
        elif nested is not None and nested.full_name == "google.protobuf.Timestamp":
            result[name] = SAMPLE_TIME.timestamp()
        elif nested is not None:
            result[name] = _expected(value)
        else:
            result[name] = value
    return result


def _normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _normalize(item) for key, item in value.items() if key != "ResponseMetadata"}
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    if isinstance(value, datetime):
        return value.timestamp()
    return value


@pytest.mark.parametrize("rpc", RPCS)
def test_response_translation(operation_models, rpc: str) -> None:
    method = SERVICE.methods_by_name[rpc]
    operation = operation_models[rpc]
    response = GetMessageClass(method.output_type)()
    _fill_message(response)
    body = json.dumps(response_document(response)).encode()
    parsed = botocore.parsers.create_parser("json").parse(
        {"body": body, "headers": {}, "status_code": 200}, operation.output_shape
    )
    assert _normalize(parsed) == _expected(response)


# ---- errors ---------------------------------------------------------------------------


def test_http_statuses_agree_with_the_aws_model(aws_model) -> None:
    """Server faults in AWS's model are 5xx, everything else a caller can fix is 4xx."""
    reasons = set(GRPC_CODE_BY_REASON) | {
        name
        for name in aws_model.shape_names
        if aws_model.shape_for(name).metadata.get("exception")
    }
    raw_shapes = (
        botocore.session.get_session()
        .get_component("data_loader")
        .load_service_model("kms", "service-2")["shapes"]
    )
    for reason in reasons:
        fault = raw_shapes.get(reason, {}).get("fault", False)
        status = http_status_for(reason)
        if fault or reason == "KMSInternalException":
            assert 500 <= status < 600, reason
        else:
            assert 400 <= status < 500, reason
    assert http_status_for("DisabledException") == 409
    assert http_status_for("KMSInvalidStateException") == 409
    assert http_status_for("NotFoundException") == 400
