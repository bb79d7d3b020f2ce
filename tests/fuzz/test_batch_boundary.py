"""Property-based fuzzing of the batch extensions at the gRPC boundary (DESIGN.md §7.6).

Arbitrary BatchEncrypt/BatchDecrypt/BatchGenerateDataKey requests (any item count
around the limit, any mix of keys, contexts, blobs and sizes) get either a documented
whole-call error or one result per item, in order, each a response or a documented
reason, never KMSInternalException; and the node still serves a round trip afterwards.
"""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_grpc_boundary import (
    _expect_documented,
    _run_async_given,
    _still_serves,
    contexts,
    key_ids,
)

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.batch_servicer import BATCH_ITEMS_MAX
from meridian.server.api.errors import GRPC_CODE_BY_REASON

BATCH_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_results(results: object, count: int) -> None:
    assert len(results) == count  # type: ignore[arg-type]
    for result in results:  # type: ignore[attr-defined]
        if result.WhichOneof("outcome") == "error":
            assert result.error.reason in GRPC_CODE_BY_REASON, result.error.reason
            assert result.error.reason != "KMSInternalException", result.error
        else:
            assert result.WhichOneof("outcome") == "response"
        assert result.request_id


async def test_fuzz_batch_operations(running_node) -> None:
    stub = running_node.stub
    key = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata
    await stub.CreateAlias(pb.CreateAliasRequest(alias_name="alias/fuzz", target_key_id=key.key_id))
    valid_blob = (
        await stub.Encrypt(pb.EncryptRequest(key_id=key.key_id, plaintext=b"seed"))
    ).ciphertext_blob
    blobs = st.one_of(
        st.binary(max_size=300),
        st.just(valid_blob),
        st.builds(lambda n: valid_blob[:n], st.integers(min_value=0, max_value=len(valid_blob))),
    )
    references = st.one_of(key_ids, st.just(key.key_id), st.just(key.arn))
    encrypt_items = st.builds(
        pb.EncryptRequest,
        key_id=references,
        plaintext=st.binary(max_size=5000),
        encryption_context=contexts,
        encryption_algorithm=st.sampled_from(["", "SYMMETRIC_DEFAULT", "bogus"]),
        grant_tokens=st.lists(st.text(max_size=20), max_size=2),
    )
    decrypt_items = st.builds(
        pb.DecryptRequest,
        ciphertext_blob=blobs,
        encryption_context=contexts,
        key_id=st.one_of(st.just(""), references),
    )
    data_key_items = st.builds(
        pb.GenerateDataKeyRequest,
        key_id=references,
        encryption_context=contexts,
        key_spec=st.sampled_from(["", "AES_256", "AES_128", "bogus"]),
        number_of_bytes=st.one_of(st.none(), st.integers(min_value=-5, max_value=2000)),
    )

    def counts(items: st.SearchStrategy) -> st.SearchStrategy:
        # Small batches of varied items, and the limits themselves (0, 100, 101) cheaply
        # as repeats of one item.
        repeated = st.builds(
            lambda item, n: [item] * n,
            items,
            st.sampled_from([0, BATCH_ITEMS_MAX, BATCH_ITEMS_MAX + 1]),
        )
        return st.one_of(st.lists(items, min_size=1, max_size=6), repeated)

    # Everything is drawn up front: the test body runs on the event loop's thread, where
    # hypothesis cannot draw.
    @BATCH_SETTINGS
    @given(
        batch=st.one_of(
            st.tuples(st.just("encrypt"), counts(encrypt_items)),
            st.tuples(st.just("decrypt"), counts(decrypt_items)),
            st.tuples(st.just("datakey"), counts(data_key_items)),
        )
    )
    async def run(batch) -> None:
        operation, items = batch
        if operation == "encrypt":
            call = stub.BatchEncrypt(pb.BatchEncryptRequest(items=items))
        elif operation == "decrypt":
            call = stub.BatchDecrypt(pb.BatchDecryptRequest(items=items))
        else:
            call = stub.BatchGenerateDataKey(pb.BatchGenerateDataKeyRequest(items=items))
        try:
            response = await call
        except grpc.aio.AioRpcError:
            await _expect_documented(call)
            return
        _check_results(response.results, len(items))

    await _run_async_given(run)
    await _still_serves(stub)
