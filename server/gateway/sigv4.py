"""AWS Signature Version 4 verification, sans-IO: bytes and headers in, a verdict out.

The verifier recomputes what the client signed (AWS's "canonical request", the
"string to sign" and the derived signing key) and compares signatures in constant
time. It follows the signer in botocore (``botocore/auth.py``, ``SigV4Auth``), the
reference that every AWS SDK agrees with.

Meridian is stricter than the protocol in three places, because a KMS request is worth
protecting: the body is always hashed (``UNSIGNED-PAYLOAD`` is refused), and ``host``,
``x-amz-target`` and the date header must be among the signed headers, so that neither
the endpoint, the operation nor the time can be changed without breaking the signature.
A signature is valid within ``clock_skew_s_max`` (AWS: five minutes) either side of the
verifier's clock; like AWS there is no other replay cache, since SDKs re-send identical
signed requests on retry.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, quote

from meridian.server.gateway.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "kms"
TERMINATOR = "aws4_request"
CLOCK_SKEW_S_MAX_DEFAULT = 300
SIGNED_HEADERS_MAX = 64
REQUIRED_SIGNED_HEADERS = ("host", "x-amz-target")

_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_SCOPE_DATE = re.compile(r"^\d{8}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,128}$")
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the verifier needs of an HTTP request, as received."""

    method: str
    path: str  # as sent, still percent-encoded, without the query
    query: str  # the raw query string, without "?"
    headers: Sequence[tuple[str, str]]  # every header line, in order
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    access_key_id: str
    scope_date: str
    scope_region: str
    scope_service: str
    scope_terminator: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return "/".join(
            (self.scope_date, self.scope_region, self.scope_service, self.scope_terminator)
        )


def parse_authorization(request: SignedRequest) -> Authorization:
    """Read the Authorization header; raise if the request is unsigned or it is malformed."""
    values = request.header_values("authorization")
    if not values:
        if any(key.lower() == "x-amz-algorithm" for key, _ in parse_qsl(request.query)):
            raise IncompleteSignatureException(
                "Meridian accepts Signature Version 4 in the Authorization header only, "
                "not in the query string"
            )
        raise MissingAuthenticationTokenException()
    if len(values) > 1:
        raise IncompleteSignatureException("The request has more than one Authorization header")
    if request.header_values("x-amz-security-token"):
        # Meridian issues long-term access keys only; a session token names nothing here.
        raise UnrecognizedClientException()
    algorithm, _, rest = values[0].strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(
            f"Unsupported AWS 'algorithm': {algorithm[:40]!r}; Meridian verifies {ALGORITHM}"
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, equals, value = item.strip().partition("=")
        if equals and name in ("Credential", "SignedHeaders", "Signature"):
            parts[name] = value.strip()
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if name not in parts]
    if missing:
        raise IncompleteSignatureException(
            " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
        )
    credential = parts["Credential"].split("/")
    if len(credential) != 5 or not all(credential):
        raise IncompleteSignatureException(
            "Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request"
        )
    signed_headers = tuple(parts["SignedHeaders"].split(";"))
    if len(signed_headers) > SIGNED_HEADERS_MAX or not all(
        _HEADER_NAME.fullmatch(name) for name in signed_headers
    ):
        raise IncompleteSignatureException("SignedHeaders is not a list of header names")
    if not _SIGNATURE.fullmatch(parts["Signature"]):
        raise IncompleteSignatureException("Signature must be 64 lowercase hexadecimal digits")
    return Authorization(
        access_key_id=credential[0],
        scope_date=credential[1],
        scope_region=credential[2],
        scope_service=credential[3],
        scope_terminator=credential[4],
        signed_headers=signed_headers,
        signature=parts["Signature"],
    )


def check_request(
    request: SignedRequest,
    authorization: Authorization,
    *,
    region: str,
    now: datetime,
    clock_skew_s_max: int = CLOCK_SKEW_S_MAX_DEFAULT,
) -> str:
    """Check everything that needs no secret; return the request's signing timestamp.

    Raises InvalidSignatureException or IncompleteSignatureException with AWS's messages.
    """
    for name in REQUIRED_SIGNED_HEADERS:
        if name not in authorization.signed_headers:
            raise IncompleteSignatureException(
                f"'{name}' must be a 'SignedHeader' in the AWS Authorization."
            )
    timestamp, date_header = _timestamp(request)
    if date_header not in authorization.signed_headers:
        raise IncompleteSignatureException(
            f"'{date_header}' must be a 'SignedHeader' in the AWS Authorization."
        )
    if authorization.scope_terminator != TERMINATOR:
        raise InvalidSignatureException(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{authorization.scope_terminator[:40]}'."
        )
    if authorization.scope_service != SERVICE:
        raise InvalidSignatureException(
            f"Credential should be scoped to correct service: '{SERVICE}'."
        )
    if authorization.scope_region != region:
        raise InvalidSignatureException(
            f"Credential should be scoped to a valid region, not "
            f"'{authorization.scope_region[:40]}'. This endpoint serves region '{region}'."
        )
    if not _SCOPE_DATE.fullmatch(authorization.scope_date) or (
        authorization.scope_date != timestamp[:8]
    ):
        raise InvalidSignatureException(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{authorization.scope_date[:40]}' != '{timestamp[:8]}', "
            f"from '{timestamp}'."
        )
    _check_time(timestamp, now.astimezone(UTC), clock_skew_s_max)
    declared = request.header_values("x-amz-content-sha256")
    if declared and declared[0].strip() != hashlib.sha256(request.body).hexdigest():
        raise InvalidSignatureException(
            "X-Amz-Content-SHA256 does not match the body; Meridian requires a signed payload"
        )
    return timestamp


def check_signature(
    request: SignedRequest, authorization: Authorization, timestamp: str, secret: bytes
) -> None:
    """Raise InvalidSignatureException unless the signature is the one ``secret`` makes."""
    string_to_sign = string_to_sign_for(request, authorization, timestamp)
    key = signing_key(secret, authorization.scope_date, authorization.scope_region)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, authorization.signature):
        raise InvalidSignatureException(_MISMATCH)


def signing_key(secret: bytes, date: str, region: str) -> bytes:
    key = _hmac(b"AWS4" + secret, date)
    key = _hmac(key, region)
    key = _hmac(key, SERVICE)
    return _hmac(key, TERMINATOR)


def string_to_sign_for(request: SignedRequest, authorization: Authorization, timestamp: str) -> str:
    canonical = canonical_request(request, authorization.signed_headers)
    return "\n".join(
        (
            ALGORITHM,
            timestamp,
            authorization.scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        )
    )


def canonical_request(request: SignedRequest, signed_headers: Sequence[str]) -> str:
    headers = []
    for name in signed_headers:
        values = request.header_values(name)
        if not values:
            raise InvalidSignatureException(
                f"SignedHeaders names '{name}', which the request does not have."
            )
        headers.append(f"{name}:{','.join(' '.join(value.split()) for value in values)}\n")
    return "\n".join(
        (
            request.method.upper(),
            _canonical_path(request.path),
            _canonical_query(request.query),
            "".join(headers),
            ";".join(signed_headers),
            hashlib.sha256(request.body).hexdigest(),
        )
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_path(path: str) -> str:
    """As botocore does for every service but S3: remove dot segments and repeated
    slashes (RFC 3986 5.2.4), then percent-encode the already encoded path once more."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and segments else ""
    return quote(first + "/".join(segments) + last, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = sorted(
        (quote(key, safe="-_.~"), quote(value, safe="-_.~"))
        for key, value in parse_qsl(query, keep_blank_values=True)
    )
    return "&".join(f"{key}={value}" for key, value in pairs)


def _timestamp(request: SignedRequest) -> tuple[str, str]:
    """The ISO-8601 basic timestamp the client signed, and the header it came from."""
    amz_dates = request.header_values("x-amz-date")
    if amz_dates:
        value = amz_dates[0].strip()
        if len(amz_dates) > 1 or not _AMZ_DATE.fullmatch(value):
            raise IncompleteSignatureException("X-Amz-Date must be one YYYYMMDDTHHMMSSZ value")
        return value, "x-amz-date"
    dates = request.header_values("date")
    if not dates:
        raise IncompleteSignatureException(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    try:
        moment = parsedate_to_datetime(dates[0])
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"), "date"
    except (TypeError, ValueError, IndexError, OverflowError):
        raise IncompleteSignatureException("The Date header is not an HTTP date") from None


def _check_time(timestamp: str, now: datetime, clock_skew_s_max: int) -> None:
    try:
        signed_at = datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise IncompleteSignatureException("X-Amz-Date is not a valid time") from None
    skew = timedelta(seconds=clock_skew_s_max)
    minutes = f"{clock_skew_s_max / 60:g}"
    if signed_at < now - skew:
        raise InvalidSignatureException(
            f"Signature expired: {timestamp} is now earlier than {_basic(now - skew)} "
            f"({_basic(now)} - {minutes} min.)"
        )
    if signed_at > now + skew:
        raise InvalidSignatureException(
            f"Signature not yet current: {timestamp} is still later than {_basic(now + skew)} "
            f"({_basic(now)} + {minutes} min.)"
        )


def _basic(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")
