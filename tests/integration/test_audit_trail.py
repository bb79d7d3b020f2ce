"""The audit trail of a real in-process node: one record per call, before the response.

Covers DESIGN.md §5 and §7.5: every call (allowed, denied, malformed) is exactly one
record, written before its response; records name the principal, key, context and
outcome; no plaintext, data key or random bytes ever reach the trail; the chain
verifies; GetKeyLastUsage and the usage counters follow the records.
"""

from __future__ import annotations

import base64
import contextlib

import grpc
from audit_support import (
    all_records,
    audit_stub,
    documents,
    request_id_of,
    verify_file,
    verify_over_grpc,
)
from google.protobuf import message_factory

from conftest import RunningNode, expect_error, secure_channel
from meridian.proto.audit.v1 import audit_pb2 as apb
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc

CONTEXT = {"purpose": "audit-test"}
SECRET = b"audit-test plaintext: never in a record 7f3a9c"


async def _create_key(stub: kms_pb2_grpc.KeyManagementServiceStub) -> str:
    response = await stub.CreateKey(pb.CreateKeyRequest(description="audited"))
    return str(response.key_metadata.arn)


async def test_each_call_is_one_record_with_its_facts(running_node: RunningNode) -> None:
    stub = running_node.stub
    arn = await _create_key(stub)
    key_id = arn.rsplit("/", 1)[-1]
    call = stub.Encrypt(
        pb.EncryptRequest(key_id=key_id, plaintext=SECRET, encryption_context=CONTEXT)
    )
    encrypted = await call
    encrypt_id = await request_id_of(call)
    decrypt_call = stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=encrypted.ciphertext_blob, encryption_context=CONTEXT)
    )
    await decrypt_call
    decrypt_id = await request_id_of(decrypt_call)

    records = await all_records(running_node.channel)
    by_request = {}
    for document in documents(records):
        assert document["requestID"] not in by_request, "one record per request"
        by_request[document["requestID"]] = document
    encrypt = by_request[encrypt_id]
    assert encrypt["eventName"] == "Encrypt"
    assert encrypt["userIdentity"]["arn"].endswith(":user/admin")
    assert encrypt["resources"] == [
        {"accountId": arn.split(":")[4], "type": "AWS::KMS::Key", "ARN": arn}
    ]
    assert encrypt["requestParameters"]["encryptionContext"] == CONTEXT
    assert encrypt["requestParameters"]["keyId"] == key_id
    assert "plaintext" not in encrypt["requestParameters"]
    assert encrypt["meridian"]["outcome"] == "Success"
    assert encrypt["meridian"]["authorization"]["decision"] == "allow"
    assert len(encrypt["additionalEventData"]["keyMaterialId"]) == 64
    assert encrypt["sourceIPAddress"] == "127.0.0.1"
    assert encrypt["readOnly"] is True
    decrypt = by_request[decrypt_id]
    # Decrypt names no key: the record takes it from the ciphertext's public header.
    assert decrypt["resources"][0]["ARN"] == arn
    assert (
        decrypt["additionalEventData"]["keyMaterialId"]
        == (encrypt["additionalEventData"]["keyMaterialId"])
    )
    report = await verify_over_grpc(running_node.channel)
    assert report.ok, report.problems
    # The verifier read every record, including those of the reads made since.
    assert report.records_checked > len(records)


async def test_every_rpc_yields_exactly_one_record(running_node: RunningNode) -> None:
    """Every RPC the node serves, called with an empty request (most fail validation),
    leaves exactly one record carrying its request id: operations added later included."""
    channel = running_node.channel
    services = [pb.DESCRIPTOR.services_by_name["KeyManagementService"]]
    services += [apb.DESCRIPTOR.services_by_name["Audit"]]
    seen: dict[str, str] = {}
    for service in services:
        for method in service.methods:
            multicallable = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=lambda data: data,
            )
            call = multicallable(message_factory.GetMessageClass(method.input_type)())
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call
            seen[await request_id_of(call)] = method.name
    records = documents(await all_records(channel))
    counts: dict[str, int] = {}
    for document in records:
        counts[document["requestID"]] = counts.get(document["requestID"], 0) + 1
    for request_id, operation in seen.items():
        assert counts.get(request_id) == 1, f"{operation} has {counts.get(request_id)} records"
        record = next(d for d in records if d["requestID"] == request_id)
        assert record["eventName"] == operation


async def test_denied_and_malformed_calls_are_recorded(running_node: RunningNode, test_pki) -> None:
    arn = await _create_key(running_node.stub)
    async with secure_channel(test_pki, running_node.endpoint, principal="mallory") as channel:
        intruder = kms_pb2_grpc.KeyManagementServiceStub(channel)
        call = intruder.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=SECRET))
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, "AccessDeniedException")
        denied_id = await request_id_of(call)
    garbage = running_node.channel.unary_unary(
        "/meridian.kms.v1.KeyManagementService/DescribeKey",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    malformed = garbage(b"\xff\xff\xff\xff")
    await expect_error(malformed, grpc.StatusCode.INVALID_ARGUMENT, "ValidationException")
    malformed_id = await request_id_of(malformed)

    by_request = {d["requestID"]: d for d in documents(await all_records(running_node.channel))}
    denied = by_request[denied_id]
    assert denied["userIdentity"]["userName"] == "mallory"
    assert denied["errorCode"] == "AccessDeniedException"
    assert denied["meridian"]["outcome"] == "Denied"
    assert denied["meridian"]["authorization"]["decision"] == "deny"
    assert denied["resources"][0]["ARN"] == arn
    assert by_request[malformed_id]["errorCode"] == "ValidationException"
    assert by_request[malformed_id]["requestParameters"] is None
    # Queries by principal and outcome find the denial.
    found = await all_records(running_node.channel, principal="mallory", outcome="Denied")
    assert [record.columns.request_id for record in found] == [denied_id]


async def test_no_secret_reaches_the_trail(running_node: RunningNode) -> None:
    stub = running_node.stub
    arn = await _create_key(stub)
    secrets = [SECRET]
    blob = (await stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=SECRET))).ciphertext_blob
    secrets.append((await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))).plaintext)
    data_key = await stub.GenerateDataKey(pb.GenerateDataKeyRequest(key_id=arn, key_spec="AES_256"))
    secrets.append(data_key.plaintext)
    secrets.append(
        (await stub.GenerateRandom(pb.GenerateRandomRequest(number_of_bytes=48))).plaintext
    )
    await stub.ReEncrypt(pb.ReEncryptRequest(ciphertext_blob=blob, destination_key_id=arn))
    records = await all_records(running_node.channel)
    await running_node.node.stop()  # everything on disk, WAL included
    files = [
        p for p in running_node.node.config.data_dir.iterdir() if p.name.startswith("meridian")
    ]
    stored = b"".join(path.read_bytes() for path in files)
    text = "".join(record.body for record in records)
    for secret in secrets:
        assert len(secret) >= 32
        for form in (secret, base64.b64encode(secret), secret.hex().encode()):
            assert form not in stored
            assert form.decode("latin-1") not in text


async def test_key_last_usage_follows_the_trail(running_node: RunningNode) -> None:
    stub = running_node.stub
    arn = await _create_key(stub)
    before = await stub.GetKeyLastUsage(pb.GetKeyLastUsageRequest(key_id=arn))
    assert not before.HasField("key_last_usage")
    assert before.key_id == arn
    call = stub.GenerateDataKey(pb.GenerateDataKeyRequest(key_id=arn, number_of_bytes=32))
    await call
    after = await stub.GetKeyLastUsage(pb.GetKeyLastUsageRequest(key_id=arn))
    usage = after.key_last_usage
    assert usage.operation == "GenerateDataKey"
    assert usage.kms_request_id == await request_id_of(call)
    record = next(
        d
        for d in documents(await all_records(running_node.channel))
        if d["requestID"] == usage.kms_request_id
    )
    assert usage.cloud_trail_event_id == record["eventID"]
    # A failed use is not a use.
    await expect_error(
        stub.Decrypt(pb.DecryptRequest(ciphertext_blob=b"\x01junk", key_id=arn)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidCiphertextException",
    )
    again = await stub.GetKeyLastUsage(pb.GetKeyLastUsageRequest(key_id=arn))
    assert again.key_last_usage.operation == "GenerateDataKey"


async def test_usage_report_counts_per_key_and_operation(running_node: RunningNode) -> None:
    stub = running_node.stub
    arn = await _create_key(stub)
    for _ in range(3):
        await stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=b"x"))
    await expect_error(
        stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=b"")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ValidationException",
    )
    report = await audit_stub(running_node.channel).GetUsageReport(apb.GetUsageReportRequest())
    rows = {(row.key_arn, row.operation): row for row in report.counts}
    assert (rows[(arn, "Encrypt")].requests, rows[(arn, "Encrypt")].failures) == (4, 1)
    assert any(key.key_arn == arn and key.key_state == "Enabled" for key in report.keys)
    assert [use.operation for use in report.last_uses if use.key_arn == arn] == ["Encrypt"]


async def test_the_trail_verifies_from_the_file(running_node: RunningNode) -> None:
    stub = running_node.stub
    arn = await _create_key(stub)
    for n in range(5):
        await stub.Encrypt(pb.EncryptRequest(key_id=arn, plaintext=bytes([n + 1])))
    sealed = await audit_stub(running_node.channel).SealAuditDigest(apb.SealAuditDigestRequest())
    assert sealed.sealed
    assert sealed.digest.number >= 1
    report = verify_file(running_node.node)
    assert report.ok, report.problems
    assert report.sealed_through_seq >= 6


async def test_audit_service_calls_are_audited_too(running_node: RunningNode) -> None:
    call = audit_stub(running_node.channel).GetAuditTrailInfo(apb.GetAuditTrailInfoRequest())
    await call
    request_id = await request_id_of(call)
    found = [
        d
        for d in documents(await all_records(running_node.channel))
        if d["requestID"] == request_id
    ]
    assert len(found) == 1
    assert found[0]["eventName"] == "GetAuditTrailInfo"


async def test_a_trail_larger_than_a_message_is_read_and_verified_in_pages(
    running_node: RunningNode,
) -> None:
    """Records carry their request's parameters (an 8 KiB description here): a page of
    1,000 would pass the node's 1 MiB message limit, so pages end early by size."""
    stub = running_node.stub
    description = "d" * 8192
    for _ in range(160):  # > 1.3 MB of records
        await stub.CreateKey(pb.CreateKeyRequest(description=description))
    first = await audit_stub(running_node.channel).ListAuditRecords(
        apb.ListAuditRecordsRequest(after_seq=0)
    )
    assert first.truncated and 0 < len(first.records) < 160
    records = await all_records(running_node.channel)
    assert sum(description in record.body for record in records) == 160
    seqs = [record.seq for record in records]
    assert seqs == sorted(set(seqs)), "no record skipped or repeated across pages"
    report = await verify_over_grpc(running_node.channel)
    assert report.ok, report
