"""boto3 against a real node's AWS endpoint: every operation, errors, pagination, hooks.

The client is botocore itself, unmodified except for ``endpoint_url`` and the CA bundle,
so these tests hold the gateway to what an AWS SDK sends and expects.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from gateway_support import ACCOUNT, PRINCIPAL, REGION, GatewayNode, gateway_node

from meridian.proto.kms.v1 import kms_pb2
from meridian.server.api.interceptor import CallInfo
from meridian.server.domain.errors import AccessDeniedException, KmsError
from meridian.server.gateway.app import CONTENT_TYPE
from meridian.server.gateway.errors import http_status_for

SERVICE = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]


@pytest.fixture(scope="module")
def gateway(test_pki, tmp_path_factory) -> Iterator[GatewayNode]:
    with gateway_node(test_pki, tmp_path_factory.mktemp("gateway") / "data") as node:
        yield node


@pytest.fixture(scope="module")
def kms(gateway) -> Any:
    return gateway.client()


def error_of(call: Any, *args: Any, **kwargs: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(*args, **kwargs)
    return caught.value


def code_and_status(error: botocore.exceptions.ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


# ---- key management ------------------------------------------------------------------


def test_create_describe_update_and_list_keys(kms) -> None:
    created = kms.create_key(
        Description="payments",
        KeyUsage="ENCRYPT_DECRYPT",
        Tags=[{"TagKey": "team", "TagValue": "p"}],
    )
    metadata = created["KeyMetadata"]
    assert metadata["AWSAccountId"] == ACCOUNT
    assert metadata["Arn"] == f"arn:meridian:kms:{REGION}:{ACCOUNT}:key/{metadata['KeyId']}"
    assert metadata["KeyState"] == "Enabled"
    assert metadata["Enabled"] is True
    assert metadata["MultiRegion"] is False
    assert metadata["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert metadata["CreationDate"].year >= 2026
    assert "SigningAlgorithms" not in metadata, "empty nested lists are left out, as AWS does"
    # Meridian's region travels as a header, never as an unknown member of the body.
    assert created["ResponseMetadata"]["HTTPHeaders"]["x-meridian-region"] == REGION
    assert "Region" not in created

    key_id = metadata["KeyId"]
    described = kms.describe_key(KeyId=metadata["Arn"])["KeyMetadata"]
    assert described["KeyId"] == key_id
    kms.update_key_description(KeyId=key_id, Description="")
    # AWS returns Description even when it is empty; code indexing it must keep working.
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == ""
    listed = kms.list_keys()
    assert {"KeyId": key_id, "KeyArn": metadata["Arn"]} in listed["Keys"]
    assert listed["Truncated"] is False


def test_enable_disable_and_deletion_lifecycle(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key_id)
    disabled = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (disabled["KeyState"], disabled["Enabled"]) == ("Disabled", False)
    kms.enable_key(KeyId=key_id)
    scheduled = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7
    assert scheduled["KeyId"].endswith(key_id)
    assert scheduled["DeletionDate"] > disabled["CreationDate"]
    pending = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert pending["PendingDeletionWindowInDays"] == 7
    assert kms.cancel_key_deletion(KeyId=key_id)["KeyId"].endswith(key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


# ---- cryptographic operations ---------------------------------------------------------


def test_encrypt_decrypt_reencrypt_with_context(kms) -> None:
    source = kms.create_key()["KeyMetadata"]
    destination = kms.create_key()["KeyMetadata"]
    context = {"tenant": "42", "purpose": "test"}
    encrypted = kms.encrypt(
        KeyId=source["KeyId"], Plaintext=b"\x00binary\xff", EncryptionContext=context
    )
    assert encrypted["KeyId"] == source["Arn"]
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext=context)
    assert decrypted["Plaintext"] == b"\x00binary\xff"
    assert decrypted["KeyId"] == source["Arn"]

    re_encrypted = kms.re_encrypt(
        CiphertextBlob=encrypted["CiphertextBlob"],
        SourceEncryptionContext=context,
        DestinationKeyId=destination["KeyId"],
        DestinationEncryptionContext={"moved": "yes"},
    )
    assert re_encrypted["SourceKeyId"] == source["Arn"]
    assert re_encrypted["KeyId"] == destination["Arn"]
    final = kms.decrypt(
        CiphertextBlob=re_encrypted["CiphertextBlob"], EncryptionContext={"moved": "yes"}
    )
    assert final["Plaintext"] == b"\x00binary\xff"


def test_data_keys_and_random(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(data_key["Plaintext"]) == 32
    opened = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])
    assert opened["Plaintext"] == data_key["Plaintext"]
    sized = kms.generate_data_key(KeyId=key_id, NumberOfBytes=17)
    assert len(sized["Plaintext"]) == 17
    blind = kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_128")
    assert "Plaintext" not in blind
    assert len(kms.decrypt(CiphertextBlob=blind["CiphertextBlob"])["Plaintext"]) == 16
    assert len(kms.generate_random(NumberOfBytes=64)["Plaintext"]) == 64


# ---- aliases and tags -----------------------------------------------------------------


def test_aliases(kms) -> None:
    first = kms.create_key()["KeyMetadata"]["KeyId"]
    second = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/boto3-orders", TargetKeyId=first)
    blob = kms.encrypt(KeyId="alias/boto3-orders", Plaintext=b"x")["CiphertextBlob"]
    alias_arn = f"arn:meridian:kms:{REGION}:{ACCOUNT}:alias/boto3-orders"
    assert kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["KeyId"] == first
    kms.update_alias(AliasName="alias/boto3-orders", TargetKeyId=second)
    listed = kms.list_aliases(KeyId=second)["Aliases"]
    assert [entry["AliasName"] for entry in listed] == ["alias/boto3-orders"]
    assert listed[0]["AliasArn"] == alias_arn
    assert listed[0]["TargetKeyId"] == second
    assert listed[0]["LastUpdatedDate"] >= listed[0]["CreationDate"]
    kms.delete_alias(AliasName="alias/boto3-orders")
    assert kms.list_aliases(KeyId=second)["Aliases"] == []
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_tags(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.tag_resource(
        KeyId=key_id,
        Tags=[{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "owner", "TagValue": "ops"}],
    )
    kms.untag_resource(KeyId=key_id, TagKeys=["owner"])
    tags = kms.list_resource_tags(KeyId=key_id)
    assert tags["Tags"] == [{"TagKey": "env", "TagValue": "prod"}]
    assert tags["Truncated"] is False


# ---- pagination -----------------------------------------------------------------------


def test_paginators_walk_every_page(gateway) -> None:
    # A node of its own: the module's node holds keys of other tests.
    kms = gateway.client()
    before = {entry["KeyId"] for entry in kms.list_keys(Limit=1000)["Keys"]}
    created = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(7)}
    pages = list(kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) >= 4
    assert all(page["Truncated"] for page in pages[:-1])
    assert pages[-1]["Truncated"] is False
    seen = [entry["KeyId"] for page in pages for entry in page["Keys"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == before | created

    key_id = sorted(created)[0]
    for index in range(5):
        kms.create_alias(AliasName=f"alias/page-{index}", TargetKeyId=key_id)
    aliases = [
        entry["AliasName"]
        for page in kms.get_paginator("list_aliases").paginate(
            KeyId=key_id, PaginationConfig={"PageSize": 2}
        )
        for entry in page["Aliases"]
    ]
    assert aliases == [f"alias/page-{index}" for index in range(5)]

    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": f"t{i}", "TagValue": "v"} for i in range(5)])
    manual = kms.list_resource_tags(KeyId=key_id, Limit=3)
    assert manual["Truncated"] is True
    rest = kms.list_resource_tags(KeyId=key_id, Limit=3, Marker=manual["NextMarker"])
    assert [tag["TagKey"] for tag in manual["Tags"] + rest["Tags"]] == [f"t{i}" for i in range(5)]


# ---- errors: botocore ClientError with AWS's codes and statuses ------------------------


def test_errors_have_aws_codes_and_statuses(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    missing = error_of(kms.describe_key, KeyId="alias/does-not-exist")
    assert code_and_status(missing) == ("NotFoundException", 400)
    assert isinstance(missing, kms.exceptions.NotFoundException)
    assert "alias/does-not-exist" in missing.response["Error"]["Message"]

    kms.disable_key(KeyId=key_id)
    disabled = error_of(kms.encrypt, KeyId=key_id, Plaintext=b"x")
    assert code_and_status(disabled) == ("DisabledException", 409)
    assert isinstance(disabled, kms.exceptions.DisabledException)
    kms.enable_key(KeyId=key_id)

    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=30)
    pending = error_of(kms.encrypt, KeyId=key_id, Plaintext=b"x")
    assert code_and_status(pending) == ("KMSInvalidStateException", 409)
    kms.cancel_key_deletion(KeyId=key_id)
    kms.enable_key(KeyId=key_id)

    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"a": "b"})
    wrong_context = error_of(
        kms.decrypt, CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"a": "c"}
    )
    assert code_and_status(wrong_context) == ("InvalidCiphertextException", 400)
    garbage = error_of(kms.decrypt, CiphertextBlob=b"\x01" * 80)
    assert code_and_status(garbage) == ("InvalidCiphertextException", 400)

    too_big = error_of(kms.encrypt, KeyId=key_id, Plaintext=b"x" * 4097)
    assert code_and_status(too_big) == ("ValidationException", 400)
    window = error_of(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=3)
    assert code_and_status(window)[0] == "ValidationException"

    kms.create_alias(AliasName="alias/taken", TargetKeyId=key_id)
    taken = error_of(kms.create_alias, AliasName="alias/taken", TargetKeyId=key_id)
    assert code_and_status(taken) == ("AlreadyExistsException", 400)
    bad_alias = error_of(kms.create_alias, AliasName="alias/aws/reserved", TargetKeyId=key_id)
    assert code_and_status(bad_alias)[0] in ("InvalidAliasNameException", "NotFoundException")

    marker = error_of(kms.list_keys, Marker="not-a-marker")
    assert code_and_status(marker) == ("InvalidMarkerException", 400)

    # Meridian's partition is "meridian"; AWS's is not an alias of it (docs say why).
    aws_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"
    assert code_and_status(error_of(kms.describe_key, KeyId=aws_arn)) == (
        "InvalidArnException",
        400,
    )


def test_unimplemented_aws_operations_and_members_are_refused_clearly(kms) -> None:
    store = error_of(kms.describe_custom_key_stores)
    assert code_and_status(store) == ("UnknownOperationException", 400)
    assert "DescribeCustomKeyStores" in store.response["Error"]["Message"]
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    dry_run = error_of(kms.encrypt, KeyId=key_id, Plaintext=b"x", DryRun=True)
    assert code_and_status(dry_run) == ("UnsupportedOperationException", 400)
    assert "DryRun" in dry_run.response["Error"]["Message"]
    # Asking for nothing (DryRun=False) is not an unsupported request.
    assert kms.encrypt(KeyId=key_id, Plaintext=b"x", DryRun=False)["KeyId"].endswith(key_id)


# ---- authentication ------------------------------------------------------------------


def test_revoked_key_stops_working_at_once(gateway) -> None:
    key = gateway.create_access_key(PRINCIPAL)
    kms = gateway.client(key=key)
    kms.list_keys()
    gateway.revoke_access_key(key.access_key_id)
    refused = error_of(kms.list_keys)
    assert code_and_status(refused) == ("UnrecognizedClientException", 400)


def test_the_node_authorization_applies_to_the_sigv4_principal(gateway) -> None:
    # The node's own authorization hook (default deny) sees user/bob, who has no policy.
    bob = gateway.client(key=gateway.create_access_key("bob"))
    refused = error_of(bob.list_keys)
    assert code_and_status(refused) == ("AccessDeniedException", 400)
    assert "bob" in refused.response["Error"]["Message"]


def test_unsigned_requests_are_refused(gateway) -> None:
    unsigned = gateway.client(signature_version=botocore.UNSIGNED)
    refused = error_of(unsigned.list_keys)
    assert code_and_status(refused) == ("MissingAuthenticationTokenException", 400)


def test_wrong_secret_wrong_region_and_unknown_key(gateway) -> None:
    wrong_secret = error_of(gateway.client(secret="A" * 40).list_keys)
    assert code_and_status(wrong_secret) == ("InvalidSignatureException", 400)
    assert "does not match" in wrong_secret.response["Error"]["Message"]
    wrong_region = error_of(gateway.client(region="eu-west-1").list_keys)
    assert code_and_status(wrong_region) == ("InvalidSignatureException", 400)
    assert "eu-west-1" in wrong_region.response["Error"]["Message"]
    stranger = gateway.key.__class__(
        access_key_id="MKIAAAAAAAAAAAAAAAAA",
        secret_access_key=gateway.key.secret_access_key,
        principal="nobody",
        description="",
        created_at=gateway.key.created_at,
    )
    unknown = error_of(gateway.client(key=stranger).list_keys)
    assert code_and_status(unknown) == ("UnrecognizedClientException", 400)


def test_tampered_body_is_refused(gateway) -> None:
    kms = gateway.client()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]

    def tamper(request: Any, **_: Any) -> None:
        # After signing: the body now asks for another plaintext than the one signed.
        request.body = request.body.replace(
            base64.b64encode(b"signed").decode().encode(),
            base64.b64encode(b"forged").decode().encode(),
        )

    kms.meta.events.register_first("before-send.kms.Encrypt", tamper)
    refused = error_of(kms.encrypt, KeyId=key_id, Plaintext=b"signed")
    assert code_and_status(refused) == ("InvalidSignatureException", 400)


def test_expired_and_future_signatures_are_refused(test_pki, tmp_path) -> None:
    # The node's clock runs six minutes ahead of the client: beyond AWS's five minutes.
    from datetime import timedelta

    with gateway_node(test_pki, tmp_path / "ahead", clock_offset=timedelta(minutes=6)) as ahead:
        expired = error_of(ahead.client().list_keys)
        assert code_and_status(expired) == ("InvalidSignatureException", 400)
        assert expired.response["Error"]["Message"].startswith("Signature expired")
    with gateway_node(test_pki, tmp_path / "behind", clock_offset=timedelta(minutes=-6)) as behind:
        early = error_of(behind.client().list_keys)
        assert code_and_status(early) == ("InvalidSignatureException", 400)
        assert early.response["Error"]["Message"].startswith("Signature not yet current")
        # Within the window the same client is fine.
        behind.advance(timedelta(minutes=2))
        assert behind.client().list_keys()["Truncated"] is False


# ---- the call hooks see gateway calls exactly like gRPC calls --------------------------


class RecordingHook:
    """Stands in for the authorization and audit hooks; denies ScheduleKeyDeletion."""

    def __init__(self) -> None:
        self.before_calls: list[CallInfo] = []
        self.after_calls: list[tuple[CallInfo, Any, KmsError | None]] = []

    async def before(self, call: CallInfo) -> None:
        self.before_calls.append(call)
        if call.operation == "ScheduleKeyDeletion":
            raise AccessDeniedException("denied by the test's policy")

    async def after(self, call: CallInfo, response: Any, error: KmsError | None) -> None:
        self.after_calls.append((call, response, error))


def test_calls_pass_through_the_node_hooks_with_the_sigv4_principal(test_pki, tmp_path) -> None:
    hook = RecordingHook()
    with gateway_node(test_pki, tmp_path / "data", hooks=[hook]) as gateway:
        kms = gateway.client()
        key_id = kms.create_key(Description="hooked")["KeyMetadata"]["KeyId"]
        created = hook.before_calls[-1]
        assert created.operation == "CreateKey"
        assert created.request.description == "hooked"
        assert created.caller is not None
        assert created.caller.principal_arn == f"arn:meridian:iam::{ACCOUNT}:user/{PRINCIPAL}"
        assert created.caller.source_address == "127.0.0.1"
        assert created.facts["access_key_id"] == gateway.key.access_key_id
        assert created.facts["transport"] == "aws-json-1.1"
        _, response, error = hook.after_calls[-1]
        assert error is None
        assert response.key_metadata.key_id == key_id

        denied = error_of(kms.schedule_key_deletion, KeyId=key_id)
        assert code_and_status(denied) == ("AccessDeniedException", 400)
        assert hook.after_calls[-1][2] is not None

        # A badly signed call reaches the after-hooks (the audit trail) unauthenticated.
        before_count = len(hook.before_calls)
        error_of(gateway.client(secret="B" * 40).describe_key, KeyId=key_id)
        assert len(hook.before_calls) == before_count, "no operation ran"
        refused_call, _, refused_error = hook.after_calls[-1]
        assert refused_call.operation == "DescribeKey"
        assert refused_call.caller is None
        assert refused_error is not None
        assert refused_error.reason == "InvalidSignatureException"


def test_access_key_secrets_are_not_stored_or_logged(test_pki, tmp_path, capfd) -> None:
    with gateway_node(test_pki, tmp_path / "data") as gateway:
        kms = gateway.client()
        kms.list_keys()
        secret = gateway.key.secret_access_key.encode()
        data_dir = Path(gateway.node.config.data_dir)
    stored = b"".join(path.read_bytes() for path in data_dir.iterdir() if path.is_file())
    assert gateway.key.access_key_id.encode() in stored, "the check would be meaningless"
    assert secret not in stored
    assert base64.b64decode(secret) not in stored
    output = capfd.readouterr()
    logged = (output.out + output.err).encode()
    assert gateway.key.access_key_id.encode() in logged, "logs were not captured"
    assert secret not in logged


# ---- raw HTTP: every RPC is served, and the boundary answers in AWS's format -----------


def raw_post(
    gateway: GatewayNode,
    body: bytes,
    headers: dict[str, str],
    *,
    method: str = "POST",
    path: str = "/",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    context = ssl.create_default_context(cafile=str(gateway.ca_bundle))
    connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload), dict(response.getheaders())
    finally:
        connection.close()


@pytest.mark.parametrize("rpc", [method.name for method in SERVICE.methods])
def test_every_rpc_is_served_through_the_gateway(gateway, rpc: str) -> None:
    """Whoever added the RPC: an empty signed request reaches its servicer method."""
    body = b"{}"
    status, document, headers = raw_post(
        gateway, body, gateway.signed_headers(body, f"TrentService.{rpc}")
    )
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    if status == 200:
        assert headers["x-meridian-region"] == REGION
        return
    # Refused by the operation itself (a missing KeyId...), never by the gateway.
    assert document["__type"] not in (
        "UnknownOperationException",
        "SerializationException",
        "UnsupportedOperationException",
        "KMSInternalException",
    ), document
    assert status == http_status_for(document["__type"])


def test_boundary_errors_are_aws_json(gateway) -> None:
    body = b'{"KeyId": '
    status, document, headers = raw_post(
        gateway, body, gateway.signed_headers(body, "TrentService.DescribeKey")
    )
    assert (status, document["__type"]) == (400, "SerializationException")
    assert headers["x-amzn-RequestId"]

    body = b"{}"
    status, document, _ = raw_post(
        gateway, body, gateway.signed_headers(body, "TrentService.CreateCustomKeyStore")
    )
    assert (status, document["__type"]) == (400, "UnknownOperationException")
    status, document, _ = raw_post(gateway, body, gateway.signed_headers(body, "KMS.ListKeys"))
    assert (status, document["__type"]) == (400, "UnknownOperationException")

    status, document, _ = raw_post(gateway, b"", {}, method="GET")
    assert (status, document["__type"]) == (405, "UnknownOperationException")
    status, document, _ = raw_post(gateway, b"{}", {}, path="/v1/keys")
    assert (status, document["__type"]) == (404, "UnknownOperationException")

    huge = b'{"Plaintext": "' + b"A" * (1024 * 1024) + b'"}'  # just over 1 MiB
    status, document, _ = raw_post(
        gateway, huge, gateway.signed_headers(huge, "TrentService.Encrypt")
    )
    assert (status, document["__type"]) == (413, "RequestEntityTooLargeException")

    unsigned = {"X-Amz-Target": "TrentService.ListKeys", "Content-Type": CONTENT_TYPE}
    status, document, _ = raw_post(gateway, b"{}", unsigned)
    assert (status, document["__type"]) == (400, "MissingAuthenticationTokenException")


def test_gateway_calls_are_audited_with_their_access_key(gateway) -> None:
    """One audit record per call, under the response's request id (DESIGN.md §7.5)."""
    kms = gateway.client()
    served = kms.list_keys()
    request_id = served["ResponseMetadata"]["RequestId"]
    refused = error_of(gateway.client(secret="C" * 40).list_keys)
    refused_id = refused.response["ResponseMetadata"]["RequestId"]
    records = audit_bodies(gateway, request_id, refused_id)
    assert len(records[request_id]) == 1
    served_record = records[request_id][0]
    assert served_record["eventName"] == "ListKeys"
    assert served_record["userIdentity"]["accessKeyId"] == gateway.key.access_key_id
    assert served_record["userIdentity"]["arn"].endswith(f":user/{PRINCIPAL}")
    assert "Boto3" in served_record["userAgent"]
    assert len(records[refused_id]) == 1
    assert records[refused_id][0]["errorCode"] == "InvalidSignatureException"


def audit_bodies(gateway: GatewayNode, *request_ids: str) -> dict[str, list[dict[str, Any]]]:
    database = gateway.node.config.database_path
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        found: dict[str, list[dict[str, Any]]] = {}
        for request_id in request_ids:
            rows = connection.execute(
                "SELECT body FROM audit_records WHERE request_id = ?", (request_id,)
            ).fetchall()
            found[request_id] = [json.loads(row[0]) for row in rows]
    return found


async def test_a_port_in_use_stops_the_node_with_a_clear_error(test_pki, tmp_path) -> None:
    from dataclasses import replace

    from gateway_support import gateway_config

    from meridian.server.domain.clock import FakeClock
    from meridian.server.node import Node, NodeStartError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = gateway_config(test_pki, tmp_path / "data")
        assert config.aws_gateway is not None
        busy = replace(
            config,
            aws_gateway=replace(config.aws_gateway, listen=f"127.0.0.1:{taken.getsockname()[1]}"),
        )
        node = Node(config=busy, clock=FakeClock())
        with pytest.raises(NodeStartError, match="AWS endpoint"):
            await node.start()
        await node.stop()
