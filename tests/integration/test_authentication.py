"""mTLS from day one: no client certificate, a foreign CA, or no principal -> refused."""

from __future__ import annotations

import datetime

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import REGION, error_reason
from meridian.cli import pki
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc

OPTIONS = [("grpc.ssl_target_name_override", f"{REGION}.node.meridian")]


def _self_signed_client(common_name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("meridian:principal:mallory")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _ca_signed_without_principal(test_pki) -> tuple[bytes, bytes]:
    ca_cert, ca_key = pki.load_ca(test_pki.directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def _describe(endpoint: str, credentials: grpc.ChannelCredentials) -> None:
    async with grpc.aio.secure_channel(endpoint, credentials, options=OPTIONS) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        await stub.ListKeys(pb.ListKeysRequest(), timeout=5)


async def test_client_without_certificate_is_refused(running_node, test_pki) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=test_pki.ca_cert)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _describe(running_node.endpoint, credentials)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


async def test_certificate_from_another_ca_is_refused(running_node, test_pki) -> None:
    cert, key = _self_signed_client("mallory")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=test_pki.ca_cert, private_key=key, certificate_chain=cert
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _describe(running_node.endpoint, credentials)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_certificate_without_principal_is_unauthenticated(running_node, test_pki) -> None:
    cert, key = _ca_signed_without_principal(test_pki)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=test_pki.ca_cert, private_key=key, certificate_chain=cert
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _describe(running_node.endpoint, credentials)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(caught.value) == "AccessDeniedException"


async def test_plaintext_connection_is_refused(running_node) -> None:
    async with grpc.aio.insecure_channel(running_node.endpoint) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListKeys(pb.ListKeysRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_request_id_is_returned(running_node) -> None:
    call = running_node.stub.ListKeys(pb.ListKeysRequest())
    await call
    trailers = dict(await call.trailing_metadata())
    assert len(trailers["x-request-id"]) == 36
