"""What access control needs from storage; implemented by ``server/storage/access_repository``.

Grants and identity policies live in their own tables (migration 4). Writes share the
node's one durable transaction (``KeyStore.write()``), so a grant and the key it names
are read and written consistently, and a deleted key takes its grants with it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meridian.server.domain.access.grants import Grant
from meridian.server.domain.ports import KeyWriter


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """An identity policy attached to one principal (AWS IAM's inline user policy)."""

    principal_arn: str
    policy_name: str
    document: str
    created_at: datetime
    updated_at: datetime


class AccessRepository(Protocol):
    async def get_grant(self, grant_id: str) -> Grant | None: ...

    async def list_grants(
        self,
        key_id: str,
        *,
        grant_id: str | None,
        grantee_principal: str | None,
        after_grant_id: str | None,
        limit: int,
    ) -> list[Grant]: ...

    async def grants_for(self, key_id: str, grantee_principal: str) -> list[Grant]:
        """Every grant on ``key_id`` whose grantee is ``grantee_principal``."""
        ...

    async def grants_named(self, key_id: str, name: str) -> list[Grant]: ...

    async def count_grants(self, key_id: str) -> int: ...

    async def list_retirable_grants(
        self, retiring_principal: str, *, after_grant_id: str | None, limit: int
    ) -> list[Grant]: ...

    async def user_policies(self, principal_arn: str) -> list[UserPolicy]: ...

    async def get_user_policy(self, principal_arn: str, policy_name: str) -> UserPolicy | None: ...

    async def list_user_policy_names(
        self, principal_arn: str, *, after_name: str | None, limit: int
    ) -> list[str]: ...

    async def count_user_policies(self, principal_arn: str) -> int: ...


class AccessWriter(AccessRepository, Protocol):
    async def insert_grant(self, grant: Grant) -> None: ...

    async def delete_grant(self, grant_id: str) -> None: ...

    async def put_user_policy(self, policy: UserPolicy) -> None:
        """Insert or replace the policy of that principal and name."""
        ...

    async def delete_user_policy(self, principal_arn: str, policy_name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class AccessTransaction:
    """One durable transaction seen through both ports."""

    keys: KeyWriter
    access: AccessWriter


class AccessStore(Protocol):
    @property
    def reader(self) -> AccessRepository: ...

    def write(self) -> AbstractAsyncContextManager[AccessTransaction]: ...
