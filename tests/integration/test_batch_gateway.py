"""The batch extensions through the AWS-compatible endpoint (docs/batch-operations.md):
served as ``TrentService.Batch*`` like every RPC of the service, with the same JSON
member names, and each item authorized and answered as over gRPC."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_support import GatewayNode, gateway_node


@pytest.fixture(scope="module")
def gateway(test_pki, tmp_path_factory) -> Iterator[GatewayNode]:
    with gateway_node(test_pki, tmp_path_factory.mktemp("batch-gateway") / "data") as node:
        yield node


def _post(gateway: GatewayNode, operation: str, document: dict[str, Any]) -> tuple[int, Any]:
    body = json.dumps(document).encode()
    headers = gateway.signed_headers(body, f"TrentService.{operation}")
    context = ssl.create_default_context(cafile=str(gateway.ca_bundle))
    connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_batch_round_trip_through_the_aws_endpoint(gateway: GatewayNode) -> None:
    kms = gateway.client()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    plaintexts = [b"one", b"two"]
    status, sealed = _post(
        gateway,
        "BatchEncrypt",
        {
            "Items": [
                {"KeyId": key_id, "Plaintext": base64.b64encode(p).decode()} for p in plaintexts
            ]
            + [{"KeyId": "alias/missing", "Plaintext": "eA=="}]
        },
    )
    assert status == 200, sealed
    results = sealed["Results"]
    assert [sorted(r) for r in results] == [["RequestId", "Response"]] * 2 + [
        ["Error", "RequestId"]
    ]
    assert results[2]["Error"]["Reason"] == "NotFoundException"
    status, opened = _post(
        gateway,
        "BatchDecrypt",
        {"Items": [{"CiphertextBlob": r["Response"]["CiphertextBlob"]} for r in results[:2]]},
    )
    assert status == 200, opened
    assert [base64.b64decode(r["Response"]["Plaintext"]) for r in opened["Results"]] == plaintexts
    status, refused = _post(gateway, "BatchGenerateDataKey", {"Items": []})
    assert (status, refused["__type"]) == (400, "ValidationException")
