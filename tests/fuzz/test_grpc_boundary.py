"""Property-based fuzzing of the gRPC boundary (DESIGN.md §7.6).

Arbitrary Encrypt/Decrypt/CreateAlias/DescribeKey/GenerateDataKey inputs are sent to a
real node over mTLS. Whatever the input, the answer is either success or one of the
documented reasons with its documented code, never INTERNAL or UNKNOWN, and the node
still serves a normal round trip afterwards.
"""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import error_reason
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.errors import GRPC_CODE_BY_REASON

FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(max_size=300)
contexts = st.dictionaries(st.text(max_size=40), st.text(max_size=80), max_size=6)
key_ids = st.one_of(
    text,
    st.just("alias/fuzz"),
    st.builds(lambda s: "alias/" + s, text),
    st.builds(lambda s: "arn:meridian:kms:us-east-1:111122223333:" + s, text),
    st.uuids().map(str),
    st.builds(lambda s: "mrk-" + s, st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
)


async def _expect_documented(call: object) -> None:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error
        reason = error_reason(error)
        assert GRPC_CODE_BY_REASON[reason] == error.code(), (reason, error.code())


async def _still_serves(stub) -> None:
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    blob = (await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"ok"))).ciphertext_blob
    assert (await stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob))).plaintext == b"ok"


async def test_fuzz_encrypt_decrypt_alias(running_node) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await stub.CreateAlias(pb.CreateAliasRequest(alias_name="alias/fuzz", target_key_id=key.key_id))
    valid_blob = (
        await stub.Encrypt(
            pb.EncryptRequest(key_id=key.key_id, plaintext=b"seed", encryption_context={"a": "b"})
        )
    ).ciphertext_blob

    blobs = st.one_of(
        st.binary(max_size=7000),
        st.builds(
            lambda i, b: valid_blob[: i % (len(valid_blob) + 1)] + b,
            st.integers(min_value=0, max_value=10_000),
            st.binary(max_size=64),
        ),
        st.builds(
            lambda i, x: (
                valid_blob[: i % len(valid_blob)]
                + bytes([valid_blob[i % len(valid_blob)] ^ (x or 1)])
                + valid_blob[i % len(valid_blob) + 1 :]
            ),
            st.integers(min_value=0, max_value=10_000),
            st.integers(min_value=0, max_value=255),
        ),
    )

    @FUZZ_SETTINGS
    @given(
        operation=st.sampled_from(["encrypt", "decrypt", "alias", "describe", "datakey"]),
        key_id=key_ids,
        plaintext=st.binary(max_size=5000),
        blob=blobs,
        context=contexts,
        number=st.one_of(st.none(), st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        algorithm=st.sampled_from(["", "SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "bogus"]),
    )
    async def run(operation, key_id, plaintext, blob, context, number, algorithm) -> None:
        if operation == "encrypt":
            call = stub.Encrypt(
                pb.EncryptRequest(
                    key_id=key_id,
                    plaintext=plaintext,
                    encryption_context=context,
                    encryption_algorithm=algorithm,
                )
            )
        elif operation == "decrypt":
            call = stub.Decrypt(
                pb.DecryptRequest(
                    ciphertext_blob=blob,
                    encryption_context=context,
                    key_id=key_id if number else "",
                )
            )
        elif operation == "alias":
            call = stub.CreateAlias(
                pb.CreateAliasRequest(alias_name=key_id, target_key_id=key.key_id)
            )
        elif operation == "describe":
            call = stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id))
        else:
            request = pb.GenerateDataKeyRequest(key_id=key.key_id, encryption_context=context)
            if number is not None:
                request.number_of_bytes = number
            call = stub.GenerateDataKey(request)
        await _expect_documented(call)

    # hypothesis drives async tests through a sync wrapper; run it on this loop's thread.
    await _run_async_given(run)
    await _still_serves(stub)


async def _run_async_given(test) -> None:
    """Run a hypothesis-decorated coroutine function inside the current event loop."""
    import asyncio

    loop = asyncio.get_running_loop()
    pending: list[BaseException] = []

    def sync_runner(coroutine_function):
        def runner(*args, **kwargs):
            future = asyncio.run_coroutine_threadsafe(coroutine_function(*args, **kwargs), loop)
            return future.result()

        return runner

    test.hypothesis.inner_test = sync_runner(test.hypothesis.inner_test)
    try:
        await asyncio.to_thread(test)
    except BaseException as error:  # re-raised below with hypothesis's falsifying example
        pending.append(error)
    if pending:
        raise pending[0]


METHODS = [method.name for method in pb.DESCRIPTOR.services_by_name["KeyManagementService"].methods]


async def test_fuzz_raw_wire_bytes_on_every_method(running_node) -> None:
    """Undecodable messages (bad wire format, non-UTF-8 strings) are ValidationException."""
    channel = running_node.channel
    calls = {
        name: channel.unary_unary(
            f"/meridian.kms.v1.KeyManagementService/{name}",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        for name in METHODS
    }

    @FUZZ_SETTINGS
    @given(method=st.sampled_from(METHODS), payload=st.binary(max_size=300))
    async def run(method, payload) -> None:
        await _expect_documented(calls[method](payload))

    await _run_async_given(run)
    await _still_serves(running_node.stub)


async def test_non_utf8_encryption_context_is_validation_error(running_node) -> None:
    stub = running_node.stub
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    valid = pb.EncryptRequest(
        key_id=key_id, plaintext=b"x", encryption_context={"k": "v"}
    ).SerializeToString()
    corrupted = valid.replace(b"\x01v", b"\x01\xff")
    assert corrupted != valid
    call = running_node.channel.unary_unary(
        "/meridian.kms.v1.KeyManagementService/Encrypt",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    try:
        await call(corrupted)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(error) == "ValidationException"
        assert "UTF-8" in (error.details() or "")
    else:
        raise AssertionError("a non-UTF-8 encryption context was accepted")
