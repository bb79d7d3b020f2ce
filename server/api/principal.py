"""Who is calling: the principal named by the caller's mTLS client certificate.

The TLS layer has already verified the certificate chain against the cluster CA;
here we read the identity from its URI SAN (``meridian:principal:NAME`` for people
and programs, ``meridian:node:REGION`` for peer nodes), as the dev PKI issues them.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509

_PRINCIPAL = re.compile(r"^meridian:principal:([A-Za-z0-9+=,.@_-]{1,64})$")
_NODE = re.compile(r"^meridian:node:(([a-z]+-){2,3}\d+)$")
_CACHE_ENTRIES_MAX = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "user" or "node"
    name: str

    def arn(self, account_id: str) -> str:
        return f"arn:meridian:iam::{account_id}:{self.kind}/{self.name}"


class PrincipalResolver:
    """Parses peer certificates once and remembers them: parsing x509 per call is slow."""

    def __init__(self) -> None:
        self._by_pem: OrderedDict[bytes, Principal | None] = OrderedDict()

    def from_auth_context(self, auth_context: Mapping[str, Iterable[bytes]]) -> Principal | None:
        pems = list(auth_context.get("x509_pem_cert", ()))
        if not pems:
            return None
        pem = pems[0]
        if pem in self._by_pem:
            self._by_pem.move_to_end(pem)
            return self._by_pem[pem]
        principal = _parse(pem)
        self._by_pem[pem] = principal
        if len(self._by_pem) > _CACHE_ENTRIES_MAX:
            self._by_pem.popitem(last=False)
        return principal


def _parse(pem: bytes) -> Principal | None:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return None
    for name in names:
        if match := _PRINCIPAL.fullmatch(name):
            return Principal("user", match.group(1))
        if match := _NODE.fullmatch(name):
            return Principal("node", match.group(1))
    return None
