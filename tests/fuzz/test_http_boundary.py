"""Property-based fuzzing of the AWS endpoint's HTTP boundary (DESIGN.md §7.6).

Arbitrary targets, bodies (binary, malformed or deeply nested JSON, documents built from
the operations' own member names with values of every JSON type), signatures (valid,
absent, garbled, over a different body) and extra headers are sent to a real node over
TLS. Whatever arrives, the node answers in AWS's JSON error format with a 4xx status or
succeeds; it never answers 500 and keeps serving.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_support import GatewayNode, gateway_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meridian.proto.kms.v1 import kms_pb2
from meridian.server.gateway.errors import http_status_for
from meridian.server.gateway.translate import aws_member_name, fields_of

SERVICE = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]
RPCS = [method.name for method in SERVICE.methods]
MEMBER_NAMES = sorted(
    {
        aws_member_name(field.name)
        for method in SERVICE.methods
        for field in fields_of(method.input_type)
    }
)

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["alias/fuzz", "AQID", "SYMMETRIC_DEFAULT", "arn:meridian:kms:x"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.one_of(st.sampled_from(MEMBER_NAMES), st.text(max_size=8)), children)
    ),
    max_leaves=25,
)
documents = st.dictionaries(
    st.one_of(st.sampled_from(MEMBER_NAMES), st.text(max_size=10)), json_values, max_size=8
)
bodies = st.one_of(
    documents.map(lambda document: json.dumps(document).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=2000),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=1, max_value=100_000).map(lambda depth: b'{"a":' * depth),
    st.just(b'{"NumberOfBytes": 1' + b"0" * 5000 + b"}"),
    st.just(b'{"KeyId": NaN}'),
    st.just(b'{"KeyId": "\\ud800"}'),
)
targets = st.one_of(
    st.sampled_from(RPCS).map(lambda name: f"TrentService.{name}"),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
    st.just(""),
)
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20).filter(
    lambda name: name.strip("-") and name not in ("host", "content-length", "transfer-encoding")
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@pytest.fixture(scope="module")
def gateway(test_pki, tmp_path_factory) -> Iterator[GatewayNode]:
    with gateway_node(test_pki, tmp_path_factory.mktemp("fuzz-http") / "data") as node:
        yield node


def _post(
    gateway: GatewayNode, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes, dict[str, str]]:
    context = ssl.create_default_context(cafile=str(gateway.ca_bundle))
    connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context, timeout=60)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def _check(status: int, payload: bytes, headers: dict[str, str]) -> dict[str, Any]:
    assert status < 500, (status, payload[:300])
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    document = json.loads(payload)
    assert isinstance(document, dict)
    if status != 200:
        assert set(document) == {"__type", "message"}, document
        # Messages may quote the request, but never echo it whole.
        assert len(document["message"]) <= 1024, document["message"][:200]
        assert status == http_status_for(document["__type"]), document
    return document


@FUZZ_SETTINGS
@given(
    target=targets,
    body=bodies,
    signing=st.sampled_from(["signed", "unsigned", "garbled", "other-body"]),
    extra=st.dictionaries(header_names, header_values, max_size=4),
)
def test_fuzz_http_boundary(gateway, target: str, body: bytes, signing: str, extra) -> None:
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    if signing != "unsigned":
        signed_body = body if signing != "other-body" else body + b" "
        headers = {**extra, **gateway.signed_headers(signed_body, target)}
        if signing == "garbled":
            headers["Authorization"] = headers["Authorization"][::-1]
    else:
        headers = {**extra, **headers}
    status, payload, response_headers = _post(gateway, body, headers)
    document = _check(status, payload, response_headers)
    if signing != "signed":
        assert status != 200
        assert document["__type"] in (
            "MissingAuthenticationTokenException",
            "IncompleteSignatureException",
            "InvalidSignatureException",
            "UnknownOperationException",
            "UnrecognizedClientException",
        ), document


def test_the_node_still_serves_after_the_fuzzing(gateway) -> None:
    kms = gateway.client()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"ok")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"ok"
