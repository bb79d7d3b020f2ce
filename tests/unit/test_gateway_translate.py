"""AWS JSON <-> proto translation: types, refusals, and AWS's presence rules."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.domain.errors import KmsError
from meridian.server.gateway.translate import (
    aws_member_name,
    extension_headers,
    fields_of,
    fill_request,
    response_document,
)

SERVICE = pb.DESCRIPTOR.services_by_name["KeyManagementService"]


def reason_of(message: Any, document: object, operation: str = "Test") -> tuple[str, str]:
    with pytest.raises(KmsError) as caught:
        fill_request(message, document, operation)
    return caught.value.reason, caught.value.message


def test_member_names() -> None:
    assert aws_member_name("ciphertext_blob") == "CiphertextBlob"
    assert aws_member_name("aws_account_id") == "AWSAccountId"
    assert aws_member_name("key_id") == "KeyId"


def test_fills_every_kind_of_field() -> None:
    request = pb.EncryptRequest()
    fill_request(
        request,
        {
            "KeyId": "alias/x",
            "Plaintext": "AP8=",
            "EncryptionContext": {"a": "b", "c": ""},
            "GrantTokens": ["t1", "t2"],
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        },
        "Encrypt",
    )
    assert request.key_id == "alias/x"
    assert request.plaintext == b"\x00\xff"
    assert dict(request.encryption_context) == {"a": "b", "c": ""}
    assert list(request.grant_tokens) == ["t1", "t2"]

    create = pb.CreateKeyRequest()
    fill_request(
        create,
        {"Tags": [{"TagKey": "k", "TagValue": "v"}], "MultiRegion": False, "Policy": None},
        "CreateKey",
    )
    assert [(tag.tag_key, tag.tag_value) for tag in create.tags] == [("k", "v")]
    # An explicit false is a value for a field with presence, not "absent".
    assert create.HasField("multi_region")
    assert create.multi_region is False

    data_key = pb.GenerateDataKeyRequest()
    fill_request(data_key, {"KeyId": "k", "NumberOfBytes": 0}, "GenerateDataKey")
    assert data_key.HasField("number_of_bytes")
    assert data_key.number_of_bytes == 0


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"KeyId": 5}, "Encrypt.KeyId must be a string"),
        ({"KeyId": ["a"]}, "must be a string"),
        ({"Plaintext": 12}, "base64"),
        ({"Plaintext": "not base64!"}, "not valid base64"),
        ({"Plaintext": "é"}, "not valid base64"),
        ({"EncryptionContext": ["a"]}, "must be an object"),
        ({"EncryptionContext": {"a": 1}}, "must be a string"),
        ({"EncryptionContext": {"a": None}}, "must be a value"),
        ({"GrantTokens": "t"}, "must be an array"),
        ({"GrantTokens": [None]}, "must be a value"),
        ({"GrantTokens": [1]}, "must be a string"),
        ({"KeyId": "\ud800"}, "not valid Unicode"),
    ],
)
def test_wrong_json_types_are_serialization_exceptions(document: object, fragment: str) -> None:
    reason, message = reason_of(pb.EncryptRequest(), document, "Encrypt")
    assert reason == "SerializationException"
    assert fragment in message


@pytest.mark.parametrize(
    "value", [True, 1.5, "7", 2**31, -(2**31) - 1, 10**400, float("nan"), {"n": 1}]
)
def test_integers_are_checked(value: object) -> None:
    reason, _ = reason_of(pb.GenerateRandomRequest(), {"NumberOfBytes": value})
    assert reason == "SerializationException"


def test_booleans_are_checked() -> None:
    for value in (1, "true", 0):
        assert reason_of(pb.CreateKeyRequest(), {"MultiRegion": value})[0] == (
            "SerializationException"
        )


def test_body_must_be_an_object() -> None:
    for document in ([], "x", 1, None, True):
        assert reason_of(pb.ListKeysRequest(), document)[0] == "SerializationException"


def test_unknown_members_are_refused_unless_they_ask_for_nothing() -> None:
    reason, message = reason_of(pb.EncryptRequest(), {"KeyId": "k", "DryRun": True}, "Encrypt")
    assert reason == "UnsupportedOperationException"
    assert "'DryRun'" in message
    nested = reason_of(pb.CreateKeyRequest(), {"Tags": [{"TagKey": "k", "Colour": "red"}]})
    assert nested[0] == "UnsupportedOperationException"
    # snake_case is not AWS's spelling: refused, not silently ignored.
    assert reason_of(pb.EncryptRequest(), {"key_id": "k"})[0] == "UnsupportedOperationException"
    request = pb.EncryptRequest()
    fill_request(
        request, {"KeyId": "k", "DryRun": False, "X": None, "Y": "", "Z": [], "W": {}}, "Encrypt"
    )
    assert request.key_id == "k"


def test_meridian_extension_fields_are_not_request_members() -> None:
    # Response extensions (field numbers >= 1000) never arrive from an AWS client.
    response = pb.EncryptResponse()
    assert reason_of(response, {"Region": "eu-west-1"})[0] == "UnsupportedOperationException"


def test_timestamps_are_epoch_seconds() -> None:
    metadata = pb.KeyMetadata()
    fill_request(metadata, {"CreationDate": 1767225600.25}, "Test")
    assert metadata.creation_date.seconds == 1767225600
    assert metadata.creation_date.nanos == 250_000_000
    for value in ("2026-01-01T00:00:00Z", 1e300, -1e300, True, float("inf")):
        assert reason_of(pb.KeyMetadata(), {"CreationDate": value})[0] == "SerializationException"


def test_response_presence_follows_aws() -> None:
    metadata = pb.KeyMetadata(
        key_id="k", enabled=False, multi_region=False, encryption_algorithms=["SYMMETRIC_DEFAULT"]
    )
    metadata.creation_date.FromSeconds(1767225600)
    document = response_document(pb.DescribeKeyResponse(key_metadata=metadata, region="r-a-1"))
    body = document["KeyMetadata"]
    assert body["KeyId"] == "k"
    assert body["Enabled"] is False  # booleans always
    assert body["MultiRegion"] is False
    assert body["Description"] == ""  # AWS always returns it
    assert body["CreationDate"] == 1767225600
    assert "Origin" not in body  # empty strings are absent members
    assert "SigningAlgorithms" not in body  # empty nested lists are absent
    assert "PendingDeletionWindowInDays" not in body  # unset optional
    assert "Region" not in document  # Meridian's extension...

    listed = response_document(pb.ListKeysResponse(region="r-a-1"))
    assert listed == {"Keys": [], "Truncated": False}  # a response's own list: always


def test_extension_fields_become_headers() -> None:
    response = pb.EncryptResponse(ciphertext_blob=b"\x01\x02", region="eu-west-1")
    assert response_document(response) == {"CiphertextBlob": "AQI="}
    assert extension_headers(response) == {"x-meridian-region": "eu-west-1"}
    assert extension_headers(pb.EncryptResponse()) == {}


# ---- whatever the JSON, only the documented errors -----------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _member_documents(descriptor: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Objects whose keys are mostly real member names, so values reach every field."""
    names = [aws_member_name(field.name) for field in fields_of(descriptor)]
    nested = [
        _member_documents(field.message_type, depth + 1)
        for field in fields_of(descriptor)
        if field.message_type is not None
        and not field.message_type.GetOptions().map_entry
        and not field.message_type.full_name.startswith("google.")
        and depth < 2
    ]
    values = st.one_of(json_values, *nested, st.lists(st.one_of(json_values, *nested), max_size=3))
    keys = st.sampled_from(names) if names else st.text(max_size=5)
    return st.dictionaries(st.one_of(keys, st.text(max_size=8)), values, max_size=6)


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda method: method.name)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_any_json_gives_a_message_or_a_documented_error(method: Any, data: st.DataObject) -> None:
    document = data.draw(st.one_of(_member_documents(method.input_type), json_values))
    message = GetMessageClass(method.input_type)()
    try:
        fill_request(message, document, method.name)
    except KmsError as error:
        assert error.reason in ("SerializationException", "UnsupportedOperationException")
