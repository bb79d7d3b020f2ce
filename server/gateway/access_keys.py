"""Access keys for the AWS endpoint: each maps an access key id to a Meridian principal.

SigV4 is an HMAC, so verifying one needs the secret itself; a one-way hash of it would
verify nothing. Secrets are therefore stored the way key material is: wrapped by the
region's root key (file or HSM), bound to their access key id so that a wrapped secret
cannot be moved to another id, and shown to the operator exactly once, when created.
Revoking erases the wrapped secret and keeps the row, so audit records stay traceable.

Ids look like AWS's (20 upper-case letters and digits) but start with ``MKIA`` instead of
``AKIA``, so that neither people nor secret scanners mistake them for AWS credentials.
"""

from __future__ import annotations

import base64
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from meridian.server.api.principal import Principal
from meridian.server.domain.clock import Clock
from meridian.server.domain.crypto.rootkey import RootKeyError, RootKeyProvider
from meridian.server.domain.errors import KMSInternalException
from meridian.server.storage.access_keys import AccessKeyRow, AccessKeyTable

log = structlog.get_logger("meridian.gateway")

ACCESS_KEY_ID_PREFIX = "MKIA"
_ACCESS_KEY_ID_RANDOM_BYTES = 10  # 16 base32 characters after the prefix
_SECRET_RANDOM_BYTES = 30  # 40 base64 characters, as long as AWS's secrets
ACCESS_KEY_ID_PATTERN = re.compile(r"^[A-Z0-9]{16,128}$")
SECRET_PATTERN = re.compile(r"^[A-Za-z0-9+/=]{16,128}$")
PRINCIPAL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
DESCRIPTION_CHARS_MAX = 256
CACHE_ENTRIES_MAX = 1024
_AAD_PREFIX = b"meridian/aws-access-key/v1\x00"


class AccessKeyError(ValueError):
    """An operator's request about access keys cannot be done (bad name, unknown id...)."""


@dataclass(frozen=True, slots=True)
class NewAccessKey:
    """A freshly created key: the only time its secret is known outside the node."""

    access_key_id: str
    secret_access_key: str
    principal: str
    description: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credential:
    """What the gateway learns from a verified access key id."""

    access_key_id: str
    principal: Principal
    secret: bytes


def generate_access_key(randbytes: Callable[[int], bytes] = os.urandom) -> tuple[str, str]:
    """A new (access key id, secret access key) pair."""
    id_random = randbytes(_ACCESS_KEY_ID_RANDOM_BYTES)
    secret_random = randbytes(_SECRET_RANDOM_BYTES)
    if len(id_random) != _ACCESS_KEY_ID_RANDOM_BYTES or len(secret_random) != _SECRET_RANDOM_BYTES:
        raise ValueError("randbytes returned the wrong number of bytes")
    access_key_id = ACCESS_KEY_ID_PREFIX + base64.b32encode(id_random).decode("ascii")
    return access_key_id, base64.b64encode(secret_random).decode("ascii")


def secret_aad(access_key_id: str) -> bytes:
    return _AAD_PREFIX + access_key_id.encode("ascii")


class AccessKeyAdmin:
    """Create, list and revoke access keys: what ``meridian access-key`` does.

    Moving secrets to another root key is ``meridian node rewrap-root``'s job, which
    knows this table (``server/rewrap.py``).
    """

    def __init__(
        self,
        table: AccessKeyTable,
        root_key: RootKeyProvider,
        clock: Clock,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._table = table
        self._root_key = root_key
        self._clock = clock
        self._randbytes = randbytes

    async def create(
        self,
        principal: str,
        description: str = "",
        *,
        existing: tuple[str, str] | None = None,
    ) -> NewAccessKey:
        """Create a key for ``principal``; ``existing`` installs a known (id, secret) pair
        instead, which is how one key is made valid in every region of a cluster."""
        if not PRINCIPAL_NAME_PATTERN.fullmatch(principal):
            raise AccessKeyError(
                f"principal {principal!r} must be 1-64 characters of letters, digits and +=,.@_-"
            )
        if len(description) > DESCRIPTION_CHARS_MAX:
            raise AccessKeyError(f"the description is longer than {DESCRIPTION_CHARS_MAX} chars")
        if existing is None:
            access_key_id, secret = generate_access_key(self._randbytes)
        else:
            access_key_id, secret = existing
            if not ACCESS_KEY_ID_PATTERN.fullmatch(access_key_id):
                raise AccessKeyError("an access key id is 16-128 upper-case letters and digits")
            if not SECRET_PATTERN.fullmatch(secret):
                raise AccessKeyError("a secret access key is 16-128 base64 characters")
        if await self._table.get(access_key_id) is not None:
            raise AccessKeyError(f"access key {access_key_id} exists already")
        wrapped = await self._root_key.wrap(secret.encode("ascii"), aad=secret_aad(access_key_id))
        created_at = self._clock.now()
        await self._table.insert(
            AccessKeyRow(
                access_key_id=access_key_id,
                principal=principal,
                description=description,
                created_at=created_at,
                revoked_at=None,
                wrapped_secret=wrapped,
            )
        )
        return NewAccessKey(access_key_id, secret, principal, description, created_at)

    async def list(self, principal: str | None = None) -> list[AccessKeyRow]:
        return await self._table.list(principal)

    async def revoke(self, access_key_id: str) -> AccessKeyRow:
        if not await self._table.revoke(access_key_id, self._clock.now()):
            raise AccessKeyError(f"there is no active access key {access_key_id}")
        row = await self._table.get(access_key_id)
        assert row is not None
        assert not row.active
        return row


class CredentialResolver:
    """The node's read path: access key id -> principal and secret, checked every request.

    The row is read on every request, so a revocation takes effect at once; only the
    unwrapping (an HSM call with a PKCS#11 root key) is cached, keyed by the wrapped
    blob itself so that a re-wrapped or revoked secret is never served from the cache.
    """

    def __init__(
        self,
        table: AccessKeyTable,
        root_key: RootKeyProvider,
        *,
        cache_entries_max: int = CACHE_ENTRIES_MAX,
    ) -> None:
        self._table = table
        self._root_key = root_key
        self._cache: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._cache_entries_max = cache_entries_max

    async def aclose(self) -> None:
        await self._table.close()
        self._cache.clear()

    async def resolve(self, access_key_id: str) -> Credential | None:
        """The active credential of ``access_key_id``; None if unknown or revoked."""
        if not ACCESS_KEY_ID_PATTERN.fullmatch(access_key_id):
            return None
        row = await self._table.get(access_key_id)
        if row is None or row.wrapped_secret is None:
            return None
        cache_key = (access_key_id, row.wrapped_secret)
        secret = self._cache.get(cache_key)
        if secret is None:
            try:
                secret = await self._root_key.unwrap(
                    row.wrapped_secret, aad=secret_aad(access_key_id)
                )
            except RootKeyError as error:
                # An operator problem (wrong or missing root key), never the caller's.
                log.error(
                    "access key secret does not unwrap",
                    access_key_id=access_key_id,
                    problem=str(error),
                )
                raise KMSInternalException() from None
            self._cache[cache_key] = secret
            if len(self._cache) > self._cache_entries_max:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(cache_key)
        return Credential(access_key_id, Principal("user", row.principal), secret)
