"""Node certificates serve replication only: a call hook that refuses them everything else.

A node's certificate (URI SAN ``meridian:node:REGION``) lets peers replicate to each other.
It must not also open the public API: otherwise a key policy that allows ``"*"`` would let
a stolen node key decrypt, and a node could act on keys in another region's name. This
hook runs before authorization, so the decision does not depend on any policy; the audit
hooks still record the refused call.
"""

from __future__ import annotations

from typing import Any

from meridian.server.api.access_rules import NODE_ONLY_SERVICE_PREFIXES
from meridian.server.api.authorization import is_node_principal, service_of
from meridian.server.api.interceptor import CallInfo
from meridian.server.domain.errors import AccessDeniedException, KmsError


class NodePrincipalGuard:
    async def before(self, call: CallInfo) -> None:
        if call.caller is None or not is_node_principal(call.caller.principal_arn):
            return
        if service_of(call.method).startswith(NODE_ONLY_SERVICE_PREFIXES):
            return
        raise AccessDeniedException(
            f"{call.caller.principal_arn} is a node: node certificates may call only the "
            "node-to-node services, not the public API"
        )

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None:
        return None
