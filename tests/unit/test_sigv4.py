"""SigV4 verification against botocore's own signer, and every way a signature fails.

botocore signs (it is the reference every AWS SDK agrees with); the verifier must accept
exactly what it signed and refuse any change to the request, the key, the scope or the
time, with AWS's error names.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.server.domain.errors import KmsError
from meridian.server.gateway import sigv4
from meridian.server.gateway.errors import UnrecognizedClientException

ACCESS_KEY_ID = "MKIAEXAMPLEEXAMPLE00"
SECRET = base64.b64encode(b"s" * 30).decode()
REGION = "us-east-1"
BODY = b'{"KeyId":"alias/orders","Plaintext":"aGVsbG8="}'


def botocore_signed(
    *,
    body: bytes = BODY,
    region: str = REGION,
    service: str = "kms",
    secret: str = SECRET,
    url: str = "https://kms.example:8443/",
    headers: dict[str, str] | None = None,
) -> tuple[sigv4.SignedRequest, datetime]:
    request = botocore.awsrequest.AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.Encrypt",
            **(headers or {}),
        },
    )
    credentials = botocore.credentials.Credentials(ACCESS_KEY_ID, secret)
    botocore.auth.SigV4Auth(credentials, service, region).add_auth(request)
    prepared = request.prepare()
    signed_at = datetime.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC
    )
    path, _, query = prepared.url.partition("://")[2].partition("/")[2].partition("?")
    host = prepared.url.partition("://")[2].partition("/")[0]
    lines = [("Host", host), *prepared.headers.items()]
    return (
        sigv4.SignedRequest(
            method="POST", path="/" + path, query=query, headers=tuple(lines), body=body
        ),
        signed_at,
    )


def verify(request: sigv4.SignedRequest, now: datetime, secret: str = SECRET) -> None:
    authorization = sigv4.parse_authorization(request)
    if authorization.access_key_id != ACCESS_KEY_ID:
        # What the gateway does when the store has no such key.
        raise UnrecognizedClientException()
    timestamp = sigv4.check_request(request, authorization, region=REGION, now=now)
    sigv4.check_signature(request, authorization, timestamp, secret.encode())


def reason_of(action: Callable[[], None]) -> tuple[str, str]:
    with pytest.raises(KmsError) as caught:
        action()
    return caught.value.reason, caught.value.message


def with_header(request: sigv4.SignedRequest, name: str, value: str | None) -> sigv4.SignedRequest:
    kept = tuple((key, old) for key, old in request.headers if key.lower() != name.lower())
    return replace(request, headers=kept if value is None else (*kept, (name, value)))


def test_accepts_what_botocore_signs() -> None:
    request, signed_at = botocore_signed()
    verify(request, signed_at)
    verify(request, signed_at + timedelta(minutes=4, seconds=59))
    verify(request, signed_at - timedelta(minutes=4, seconds=59))


def test_accepts_a_query_string_and_an_empty_body() -> None:
    request, signed_at = botocore_signed(body=b"", url="https://kms.example/?b=2&a=1&a=0")
    verify(request, signed_at)


def test_wrong_secret() -> None:
    request, signed_at = botocore_signed()
    reason, message = reason_of(lambda: verify(request, signed_at, secret="x" * 40))
    assert reason == "InvalidSignatureException"
    assert "does not match" in message


def test_expired_and_not_yet_current() -> None:
    request, signed_at = botocore_signed()
    reason, message = reason_of(
        lambda: verify(request, signed_at + timedelta(minutes=5, seconds=1))
    )
    assert reason == "InvalidSignatureException"
    assert message.startswith("Signature expired: ")
    assert "- 5 min." in message
    reason, message = reason_of(
        lambda: verify(request, signed_at - timedelta(minutes=5, seconds=1))
    )
    assert reason == "InvalidSignatureException"
    assert message.startswith("Signature not yet current: ")


def test_wrong_region_and_service_in_scope() -> None:
    request, signed_at = botocore_signed(region="eu-west-1")
    reason, message = reason_of(lambda: verify(request, signed_at))
    assert reason == "InvalidSignatureException"
    assert "'eu-west-1'" in message
    request, signed_at = botocore_signed(service="s3")
    reason, message = reason_of(lambda: verify(request, signed_at))
    assert (reason, message) == (
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'kms'.",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Amz-Target", "TrentService.Decrypt"),  # another operation, same body
        ("Host", "other.example"),
        ("Content-Type", "application/json"),
    ],
)
def test_tampered_signed_header(name: str, value: str) -> None:
    request, signed_at = botocore_signed()
    tampered = with_header(request, name, value)
    assert reason_of(lambda: verify(tampered, signed_at))[0] == "InvalidSignatureException"


def test_tampered_body() -> None:
    request, signed_at = botocore_signed()
    tampered = replace(request, body=BODY.replace(b"aGVsbG8=", b"aGVsbG9="))
    assert reason_of(lambda: verify(tampered, signed_at))[0] == "InvalidSignatureException"


def test_unsigned_payload_is_refused() -> None:
    request, signed_at = botocore_signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    reason, message = reason_of(lambda: verify(request, signed_at))
    assert reason == "InvalidSignatureException"
    assert "signed payload" in message


def test_missing_authorization_date_and_security_token() -> None:
    request, signed_at = botocore_signed()
    unsigned = with_header(request, "Authorization", None)
    assert reason_of(lambda: verify(unsigned, signed_at)) == (
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    )
    undated = with_header(request, "X-Amz-Date", None)
    reason, message = reason_of(lambda: verify(undated, signed_at))
    assert reason == "IncompleteSignatureException"
    assert "X-Amz-Date" in message
    tokened = with_header(request, "X-Amz-Security-Token", "FQoGZXIvYXdzE")
    assert reason_of(lambda: verify(tokened, signed_at))[0] == "UnrecognizedClientException"
    presigned = replace(unsigned, query="X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00")
    assert reason_of(lambda: verify(presigned, signed_at))[0] == "IncompleteSignatureException"


def _authorization(request: sigv4.SignedRequest) -> str:
    return next(value for key, value in request.headers if key.lower() == "authorization")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda value: value.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        lambda value: value.replace("Credential=", "Cred="),
        lambda value: value.replace("SignedHeaders=", "Headers="),
        lambda value: value.replace("Signature=", "Sig="),
        lambda value: value.replace("/aws4_request", ""),
        lambda value: value.replace("Signature=", "Signature=XYZ"),
        lambda value: value.replace("host;", "Host Name;"),
        lambda value: "AWS4-HMAC-SHA256",
        lambda value: "",
    ],
)
def test_malformed_authorization_headers(mangle: Callable[[str], str]) -> None:
    request, signed_at = botocore_signed()
    mangled = with_header(request, "Authorization", mangle(_authorization(request)))
    assert reason_of(lambda: verify(mangled, signed_at))[0] == "IncompleteSignatureException"


def test_required_headers_must_be_signed() -> None:
    request, signed_at = botocore_signed()
    authorization = _authorization(request)
    for name in ("host;", "x-amz-target"):
        without = authorization.replace(name, "").replace(";;", ";").replace("=;", "=")
        mangled = with_header(request, "Authorization", without)
        reason, message = reason_of(lambda mangled=mangled: verify(mangled, signed_at))
        assert reason == "IncompleteSignatureException"
        assert "SignedHeader" in message


def test_terminator_and_scope_date() -> None:
    request, signed_at = botocore_signed()
    authorization = _authorization(request)
    other = with_header(
        request, "Authorization", authorization.replace("/aws4_request", "/aws5_request")
    )
    assert reason_of(lambda: verify(other, signed_at))[0] == "InvalidSignatureException"
    date = signed_at.strftime("%Y%m%d")
    moved = with_header(request, "Authorization", authorization.replace(f"/{date}/", "/20000101/"))
    reason, message = reason_of(lambda: verify(moved, signed_at))
    assert reason == "InvalidSignatureException"
    assert "Date in Credential scope" in message


def test_a_date_header_can_stand_for_x_amz_date() -> None:
    request, signed_at = botocore_signed()
    authorization = sigv4.parse_authorization(request)
    dated = with_header(
        with_header(request, "X-Amz-Date", None),
        "Date",
        signed_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    )
    headers = tuple(name for name in authorization.signed_headers if name != "x-amz-date")
    signed_headers = tuple(sorted((*headers, "date")))
    auth = replace(authorization, signed_headers=signed_headers)
    timestamp = sigv4.check_request(dated, auth, region=REGION, now=signed_at)
    string_to_sign = sigv4.string_to_sign_for(dated, auth, timestamp)
    import hashlib
    import hmac

    key = sigv4.signing_key(SECRET.encode(), auth.scope_date, REGION)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    sigv4.check_signature(dated, replace(auth, signature=signature), timestamp, SECRET.encode())
    garbled = with_header(dated, "Date", "yesterday")
    assert reason_of(lambda: sigv4.check_request(garbled, auth, region=REGION, now=signed_at))[
        0
    ] == ("IncompleteSignatureException")


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=10_000),
    flip=st.integers(min_value=1, max_value=127),
    part=st.sampled_from(["body", "target", "date", "signature"]),
)
def test_any_single_byte_change_is_refused(position: int, flip: int, part: str) -> None:
    request, signed_at = botocore_signed()

    def flipped(text: str) -> str:
        # Whitespace around the header's parts is not significant (as for AWS), so only
        # visible characters are changed, and only into other visible characters.
        visible = [index for index, char in enumerate(text) if not char.isspace()]
        index = visible[position % len(visible)]
        new = chr(ord(text[index]) ^ flip)
        if new.isspace() or not new.isprintable():
            new = "Z" if text[index] != "Z" else "Y"
        return text[:index] + new + text[index + 1 :]

    if part == "body":
        index = position % len(BODY)
        changed = replace(
            request,
            body=BODY[:index] + bytes([BODY[index] ^ flip]) + BODY[index + 1 :],
        )
    elif part == "target":
        changed = with_header(request, "X-Amz-Target", flipped("TrentService.Encrypt"))
    elif part == "date":
        changed = with_header(request, "X-Amz-Date", flipped(signed_at.strftime("%Y%m%dT%H%M%SZ")))
    else:
        changed = with_header(request, "Authorization", flipped(_authorization(request)))
    with pytest.raises(KmsError):
        verify(changed, signed_at)
