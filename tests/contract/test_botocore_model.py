"""The API cannot drift from AWS's: every RPC, field and enum value is held against
the KMS model that botocore ships (DESIGN.md §2).

Rules checked for each RPC of KeyManagementService:
- the RPC name is an AWS KMS operation;
- every request/response field is the snake_case of a member of the AWS input/output
  shape, recursively for nested messages (list and map members included);
- every AWS string enum value that Meridian's domain declares exists in AWS's enum.
Meridian's only additions are listed in MERIDIAN_EXTENSIONS and MERIDIAN_RPCS, with the
reason; the added RPCs are held against the AWS service whose operation they mirror.
The batch extensions (MERIDIAN_BATCH_RPCS, docs/batch-operations.md) mirror no AWS
operation: they are held to carrying exactly the single operation's messages, which are
themselves held against AWS's shapes.
"""

from __future__ import annotations

import re

import botocore.session
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from meridian.proto.kms.v1 import kms_pb2
from meridian.server.api.batch_servicer import BATCH_ITEM_OPERATIONS
from meridian.server.domain import model

# Fields Meridian adds on purpose; nothing else may differ from AWS.
MERIDIAN_EXTENSIONS = {
    # Every response says which region served it (DESIGN.md §2).
    "region": "the region that served the call",
    # IAM's simulator names a matched statement by its position in the policy text;
    # Meridian also names it by Sid (or the grant), which is what users write.
    "sid": "the Sid of a matched policy statement, or the grant's name or id",
}

# RPCs that are not AWS KMS operations: the AWS service whose operation each mirrors
# (name and shapes), and why Meridian serves it on the KMS endpoint.
MERIDIAN_RPCS = {
    name: ("iam", "identity policies are administered on the KMS endpoint: Meridian has no IAM")
    for name in (
        "PutUserPolicy",
        "GetUserPolicy",
        "ListUserPolicies",
        "DeleteUserPolicy",
        "SimulatePrincipalPolicy",
    )
}

# Meridian's batch extensions: no AWS operation; each one's items are this single operation.
MERIDIAN_BATCH_RPCS = BATCH_ITEM_OPERATIONS

SERVICE = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]
AWS_SHAPED_RPCS = [m.name for m in SERVICE.methods if m.name not in MERIDIAN_BATCH_RPCS]


@pytest.fixture(scope="module")
def aws_model():
    return botocore.session.get_session().get_service_model("kms")


@pytest.fixture(scope="module")
def aws_models(aws_model):
    return {"kms": aws_model, "iam": botocore.session.get_session().get_service_model("iam")}


def snake(name: str) -> str:
    # AWSAccountId -> aws_account_id; KeyId -> key_id; CiphertextBlob -> ciphertext_blob
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


def _check_message(descriptor: Descriptor, shape, path: str, *, top_level: bool) -> list[str]:
    problems: list[str] = []
    members = {snake(name): member for name, member in shape.members.items()}
    for field in descriptor.fields:
        if field.name in MERIDIAN_EXTENSIONS and field.number >= 1000:
            continue
        member = members.get(field.name)
        if member is None:
            problems.append(f"{path}.{field.name} is not a member of AWS shape {shape.name}")
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            if member.type_name != "map":
                problems.append(f"{path}.{field.name} is a map but AWS's is {member.type_name}")
            continue
        target = member.member if member.type_name == "list" else member
        if (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and field.message_type.full_name != "google.protobuf.Timestamp"
        ):
            if target.type_name != "structure":
                problems.append(f"{path}.{field.name} is a message but AWS's is {target.type_name}")
                continue
            problems += _check_message(
                field.message_type, target, f"{path}.{field.name}", top_level=False
            )
        elif (
            field.message_type is not None
            and field.message_type.full_name == "google.protobuf.Timestamp"
            and target.type_name != "timestamp"
        ):
            problems.append(f"{path}.{field.name} is a Timestamp but AWS's is {target.type_name}")
        if field.is_repeated != (member.type_name in ("list", "map")):
            problems.append(
                f"{path}.{field.name}: repeated-ness differs from AWS ({member.type_name})"
            )
    return problems


def test_every_rpc_is_an_aws_operation(aws_models) -> None:
    unknown = [
        m.name
        for m in SERVICE.methods
        if m.name not in MERIDIAN_BATCH_RPCS
        and m.name not in aws_models[MERIDIAN_RPCS.get(m.name, ("kms",))[0]].operation_names
    ]
    assert unknown == []


@pytest.mark.parametrize("method", sorted(MERIDIAN_BATCH_RPCS))
def test_batch_extensions_carry_the_single_operations_messages(aws_model, method) -> None:
    single = SERVICE.methods_by_name[MERIDIAN_BATCH_RPCS[method]]
    batch = SERVICE.methods_by_name[method]
    # Not an AWS operation, so nobody can mistake it for one of AWS's.
    assert method not in aws_model.operation_names
    request_fields = {f.name: f for f in batch.input_type.fields}
    assert set(request_fields) == {"items"}
    assert request_fields["items"].is_repeated
    assert request_fields["items"].message_type is single.input_type
    response_fields = {f.name: f for f in batch.output_type.fields}
    assert set(response_fields) == {"results", "region"}
    assert response_fields["region"].number >= 1000
    result = response_fields["results"].message_type
    assert response_fields["results"].is_repeated
    outcome = result.oneofs_by_name["outcome"]
    assert {f.name: f.message_type.name for f in outcome.fields} == {
        "response": single.output_type.name,
        "error": "BatchItemError",
    }
    assert result.fields_by_name["response"].message_type is single.output_type
    assert {f.name for f in result.fields} == {"response", "error", "request_id"}
    error = result.fields_by_name["error"].message_type
    assert {f.name for f in error.fields} == {"reason", "message"}


@pytest.mark.parametrize("method", AWS_SHAPED_RPCS)
def test_fields_match_aws_shapes(aws_models, method) -> None:
    descriptor = SERVICE.methods_by_name[method]
    operation = aws_models[MERIDIAN_RPCS.get(method, ("kms",))[0]].operation_model(method)
    problems = _check_message(
        descriptor.input_type, operation.input_shape, f"{method}Request", top_level=True
    )
    if operation.output_shape is not None:
        problems += _check_message(
            descriptor.output_type, operation.output_shape, f"{method}Response", top_level=True
        )
    else:
        extra = [f.name for f in descriptor.output_type.fields if f.name not in MERIDIAN_EXTENSIONS]
        problems += [f"{method}Response.{name} has no AWS counterpart" for name in extra]
    assert problems == []


@pytest.mark.parametrize(
    ("enum", "shape"),
    [
        (model.KeyState, "KeyState"),
        (model.KeySpec, "KeySpec"),
        (model.KeyUsage, "KeyUsageType"),
        (model.Origin, "OriginType"),
        (model.EncryptionAlgorithm, "EncryptionAlgorithmSpec"),
        (model.DataKeySpec, "DataKeySpec"),
    ],
)
def test_domain_enums_exist_in_aws(aws_model, enum, shape) -> None:
    allowed = set(aws_model.shape_for(shape).enum)
    assert {member.value for member in enum} <= allowed


def test_contract_checker_catches_a_foreign_field(aws_model) -> None:
    """The checker itself must be able to fail: a made-up field is reported."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    file_proto = descriptor_pb2.FileDescriptorProto(
        name="probe.proto", package="probe", syntax="proto3"
    )
    message = file_proto.message_type.add(name="EncryptRequest")
    message.field.add(
        name="key_id",
        number=1,
        type=FieldDescriptor.TYPE_STRING,
        label=FieldDescriptor.LABEL_OPTIONAL,
    )
    message.field.add(
        name="secret_sauce",
        number=2,
        type=FieldDescriptor.TYPE_STRING,
        label=FieldDescriptor.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    probe = pool.FindMessageTypeByName("probe.EncryptRequest")
    problems = _check_message(
        probe, aws_model.operation_model("Encrypt").input_shape, "probe", top_level=True
    )
    assert problems == ["probe.secret_sauce is not a member of AWS shape EncryptRequest"]
