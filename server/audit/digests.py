"""Sealed digests: signed statements of the chain's head, themselves chained.

A digest says "in region R, chain C, records first..last exist and record ``last`` has
hash H; the digest before me had hash P". Its canonical JSON text is signed with the
region's ML-DSA-65 audit key. Digests are numbered from 1 and never pruned, so a
verifier holding any later digest (a peer region's copy, say) can tell whether history
was rewritten.

    digest_hash(n) = SHA-256("meridian/audit-digest/v1" 0x00 || text(n))
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meridian.server.audit.chain import HASH_BYTES
from meridian.server.audit.events import AuditFormatError, canonical_json, format_time

DIGEST_FORMAT = "meridian-audit-digest/1"
ZERO_HASH = bytes(HASH_BYTES)
_DIGEST_LABEL = b"meridian/audit-digest/v1\x00"
DIGEST_BYTES_MAX = 4096


@dataclass(frozen=True, slots=True)
class DigestContent:
    region: str
    chain_id: str
    number: int
    first_seq: int
    last_seq: int
    last_hash: bytes
    previous_digest_hash: bytes
    sealed_at: str  # eventTime format
    signing_key_id: str

    @property
    def record_count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def to_body(self) -> str:
        return canonical_json(
            {
                "format": DIGEST_FORMAT,
                "region": self.region,
                "chainId": self.chain_id,
                "number": self.number,
                "firstSeq": self.first_seq,
                "lastSeq": self.last_seq,
                "lastHash": self.last_hash.hex(),
                "recordCount": self.record_count,
                "previousDigestHash": self.previous_digest_hash.hex(),
                "sealedAt": self.sealed_at,
                "signingKeyId": self.signing_key_id,
                "hashAlgorithm": "SHA-256",
                "signatureAlgorithm": "ML-DSA-65",
            }
        )


@dataclass(frozen=True, slots=True)
class SignedDigest:
    number: int
    body: str
    signature: bytes
    key_id: str

    @property
    def content(self) -> DigestContent:
        return parse_digest_body(self.body)

    @property
    def hash(self) -> bytes:
        return digest_hash(self.body)


def digest_hash(body: str) -> bytes:
    return hashlib.sha256(_DIGEST_LABEL + body.encode("utf-8")).digest()


def new_digest_content(
    *,
    region: str,
    chain_id: str,
    number: int,
    first_seq: int,
    last_seq: int,
    last_hash: bytes,
    previous_digest_hash: bytes,
    sealed_at: datetime,
    signing_key_id: str,
) -> DigestContent:
    return DigestContent(
        region=region,
        chain_id=chain_id,
        number=number,
        first_seq=first_seq,
        last_seq=last_seq,
        last_hash=last_hash,
        previous_digest_hash=previous_digest_hash,
        sealed_at=format_time(sealed_at),
        signing_key_id=signing_key_id,
    )


def parse_digest_body(body: str) -> DigestContent:
    if len(body) > DIGEST_BYTES_MAX:
        raise AuditFormatError("a digest is at most 4 KiB")
    try:
        document: Any = json.loads(body)
    except json.JSONDecodeError as error:
        raise AuditFormatError(f"digest is not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != DIGEST_FORMAT:
        raise AuditFormatError(f"not a {DIGEST_FORMAT} document")
    try:
        content = DigestContent(
            region=_string(document, "region"),
            chain_id=_string(document, "chainId"),
            number=_integer(document, "number"),
            first_seq=_integer(document, "firstSeq"),
            last_seq=_integer(document, "lastSeq"),
            last_hash=bytes.fromhex(_string(document, "lastHash")),
            previous_digest_hash=bytes.fromhex(_string(document, "previousDigestHash")),
            sealed_at=_string(document, "sealedAt"),
            signing_key_id=_string(document, "signingKeyId"),
        )
    except ValueError as error:
        raise AuditFormatError(f"digest field is malformed: {error}") from None
    if (
        content.number < 1
        or content.first_seq < 1
        or content.last_seq < content.first_seq - 1
        or len(content.last_hash) != HASH_BYTES
        or len(content.previous_digest_hash) != HASH_BYTES
        or document.get("recordCount") != content.record_count
    ):
        raise AuditFormatError("digest fields are inconsistent")
    if content.to_body() != body:
        raise AuditFormatError("digest text is not in canonical form")
    return content


def _string(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise AuditFormatError(f"digest needs a string {name!r}")
    return value


def _integer(document: dict[str, Any], name: str) -> int:
    value = document.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AuditFormatError(f"digest needs an integer {name!r}")
    return value
