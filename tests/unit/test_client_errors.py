"""Typed errors are rebuilt from (status code, ErrorInfo.reason), for both twins."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from test_client_support import NO_RETRY, FakeCluster, FakeError, async_cluster, sync_cluster

from meridian.client import errors
from meridian.client.errors import (
    AccessDeniedException,
    DependencyTimeoutException,
    DisabledException,
    InvalidCiphertextException,
    KmsError,
    KMSInternalException,
    KMSInvalidStateException,
    NotFoundException,
    ServiceUnavailableError,
    ThrottlingException,
    UnauthenticatedError,
    error_class_for,
)

HOME = "us-east-1"
Code = grpc.StatusCode

# (what the server sends, the class the client must raise, the reason it keeps)
CASES: list[tuple[FakeError, type[KmsError], str]] = [
    (
        FakeError(Code.NOT_FOUND, "NotFoundException", "no key"),
        NotFoundException,
        "NotFoundException",
    ),
    (
        FakeError(Code.INVALID_ARGUMENT, "InvalidCiphertextException", "bad"),
        InvalidCiphertextException,
        "InvalidCiphertextException",
    ),
    (
        FakeError(Code.FAILED_PRECONDITION, "DisabledException", "off"),
        DisabledException,
        "DisabledException",
    ),
    (
        FakeError(Code.FAILED_PRECONDITION, "KMSInvalidStateException", "pending"),
        KMSInvalidStateException,
        "KMSInvalidStateException",
    ),
    (
        FakeError(Code.FAILED_PRECONDITION, "ConflictException", "rotation in progress"),
        errors.ConflictException,
        "ConflictException",
    ),
    (
        FakeError(Code.UNAUTHENTICATED, "AccessDeniedException", "who?"),
        AccessDeniedException,
        "AccessDeniedException",
    ),
    (
        FakeError(Code.RESOURCE_EXHAUSTED, "ThrottlingException", "slow down"),
        ThrottlingException,
        "ThrottlingException",
    ),
    (
        FakeError(Code.UNAVAILABLE, "DependencyTimeoutException", "hsm"),
        DependencyTimeoutException,
        "DependencyTimeoutException",
    ),
    (
        FakeError(Code.INTERNAL, "KMSInternalException", "oops"),
        KMSInternalException,
        "KMSInternalException",
    ),
    # A reason this client does not know (a newer server): generic by code, reason kept.
    (FakeError(Code.NOT_FOUND, "FutureException", "new"), KmsError, "FutureException"),
    # No ErrorInfo at all (a proxy, a load balancer): only the code is left.
    (FakeError(Code.UNAVAILABLE, None, "down"), ServiceUnavailableError, ""),
    (FakeError(Code.UNAUTHENTICATED, None, "no cert"), UnauthenticatedError, ""),
    (FakeError(Code.INVALID_ARGUMENT, None, "bad"), KmsError, ""),
    # An AWS-looking reason from another domain is not trusted as ours.
    (
        FakeError(Code.NOT_FOUND, "NotFoundException", "x", domain="googleapis.com"),
        KmsError,
        "",
    ),
]
IDS = [f"{case[0].code.name}-{case[0].reason}-{case[0].domain}" for case in CASES]


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster() as running:
        yield running


@pytest.fixture
async def aio_cluster() -> AsyncIterator[FakeCluster]:
    async with async_cluster() as running:
        yield running


def _check(error: KmsError, sent: FakeError, expected: type[KmsError], reason: str) -> None:
    assert type(error) is expected
    assert error.reason == reason
    assert error.code is sent.code
    assert error.message == sent.message
    assert str(error) == sent.message
    assert error.region == HOME
    assert error.operation == "DescribeKey"
    assert error.request_id == "req-1234"


@pytest.mark.parametrize(("sent", "expected", "reason"), CASES, ids=IDS)
def test_sync_error(
    cluster: FakeCluster, sent: FakeError, expected: type[KmsError], reason: str
) -> None:
    cluster[HOME].fail_next = sent
    with cluster.sync_client(routing=NO_RETRY) as client, pytest.raises(KmsError) as caught:
        client.describe_key(key_id="k")
    _check(caught.value, sent, expected, reason)
    # The grpc error stays attached for debugging.
    assert isinstance(caught.value.__cause__, grpc.RpcError)


@pytest.mark.parametrize(("sent", "expected", "reason"), CASES, ids=IDS)
async def test_async_error(
    aio_cluster: FakeCluster, sent: FakeError, expected: type[KmsError], reason: str
) -> None:
    aio_cluster[HOME].fail_next = sent
    async with aio_cluster.async_client(routing=NO_RETRY) as client:
        with pytest.raises(KmsError) as caught:
            await client.describe_key(key_id="k")
    _check(caught.value, sent, expected, reason)


def test_request_id_is_none_when_the_server_sends_none(cluster: FakeCluster) -> None:
    cluster[HOME].fail_next = FakeError(Code.NOT_FOUND, "NotFoundException", "x", request_id=None)
    with cluster.sync_client() as client, pytest.raises(NotFoundException) as caught:
        client.describe_key(key_id="k")
    assert caught.value.request_id is None


def test_errors_from_real_state(cluster: FakeCluster) -> None:
    with cluster.sync_client() as client:
        key = client.create_key().key_metadata
        sealed = client.encrypt(key_id=key.key_id, plaintext=b"x", encryption_context={"a": "1"})
        with pytest.raises(InvalidCiphertextException):
            client.decrypt(ciphertext_blob=sealed.ciphertext_blob, encryption_context={"a": "2"})
        client.disable_key(key_id=key.key_id)
        with pytest.raises(DisabledException):
            client.encrypt(key_id=key.key_id, plaintext=b"x")
        client.schedule_key_deletion(key_id=key.key_id)
        with pytest.raises(KMSInvalidStateException):
            client.schedule_key_deletion(key_id=key.key_id)


def test_deadline_is_service_unavailable(cluster: FakeCluster) -> None:
    cluster[HOME].delay_s = 0.5
    with (
        cluster.sync_client(timeout_s=0.05) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        client.generate_random()
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    assert caught.value.reason == ""


async def test_async_deadline_is_service_unavailable(aio_cluster: FakeCluster) -> None:
    aio_cluster[HOME].delay_s = 0.5
    async with aio_cluster.async_client(timeout_s=0.05) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.generate_random()
    assert caught.value.code is Code.DEADLINE_EXCEEDED


def _dead_endpoint() -> dict[str, str]:
    # Port 1 on loopback is never served in a test environment: connection refused.
    return {HOME: "127.0.0.1:1"}


def test_unreachable_region_is_service_unavailable() -> None:
    with (
        FakeCluster(kms={}, endpoints=_dead_endpoint()).sync_client(
            timeout_s=5, routing=NO_RETRY
        ) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        client.generate_random()
    assert caught.value.code is Code.UNAVAILABLE
    assert caught.value.region == HOME
    assert caught.value.request_id is None


async def test_async_unreachable_region_is_service_unavailable() -> None:
    async with FakeCluster(kms={}, endpoints=_dead_endpoint()).async_client(
        timeout_s=5, routing=NO_RETRY
    ) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.generate_random()
    assert caught.value.code is Code.UNAVAILABLE


def _contract_reasons() -> list[str]:
    """Every reason the shared contract lists, read from the contract itself."""
    contracts = Path(__file__).parents[2] / "docs" / "contributors" / "shared-contracts.md"
    section = contracts.read_text().split("## Errors on the wire", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"\b(?:[A-Z][A-Za-z]+Exception)\b", section)))


def test_every_contract_reason_has_a_class_of_that_name() -> None:
    reasons = _contract_reasons()
    assert len(reasons) >= 20
    for reason in reasons:
        error_class = error_class_for(Code.UNKNOWN, reason)
        assert error_class.__name__ == reason
        assert getattr(errors, reason) is error_class
        assert issubclass(error_class, KmsError)


def test_generic_classes_by_code() -> None:
    assert error_class_for(Code.DEADLINE_EXCEEDED, "") is ServiceUnavailableError
    assert error_class_for(Code.UNAVAILABLE, "Unheard") is ServiceUnavailableError
    assert error_class_for(Code.UNAUTHENTICATED, "") is UnauthenticatedError
    assert error_class_for(Code.PERMISSION_DENIED, "") is KmsError


def test_error_name_prefers_the_reason() -> None:
    assert KmsError("x", reason="FutureException").error_name == "FutureException"
    assert ServiceUnavailableError("x").error_name == "ServiceUnavailableError"


def test_client_side_errors_are_not_service_errors() -> None:
    assert not issubclass(errors.ClientConfigError, KmsError)
    assert issubclass(errors.UnknownRegionError, ValueError)
    assert issubclass(errors.ClusterFileError, ValueError)
    assert issubclass(errors.ClientClosedError, RuntimeError)
