"""Authorization decisions shared by the items of one batch call.

The items of a batch come from one principal at one address at one moment, and most
name the same key with the same encryption context: each such item would evaluate the
same policies and grants to the same decision. The authorization hook asks this memo
first, so a batch evaluates each distinct request once. An item still gets its own
decision record (``call.facts["authorization"]``), its own audit record and, when
denied, its own AccessDeniedException.

What a decision depends on is the whole ``AuthorizationRequest`` except the
ciphertext blob, of which only the key id in its header is read; the memo key is
therefore the request with the blob replaced by that key id. Requests the batch
operations never make (aliases, principals, grant retirement or creation as
resources) are not memoized. The one thing that differs between items is the time
(``aws:CurrentTime``): a batch is authorized as of its first item of each kind, a few
milliseconds apart at most.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from meridian.server.domain.access.authorizer import (
    AuthorizationRequest,
    AuthorizationResult,
    KeyTarget,
)
from meridian.server.domain.crypto import blob as blob_recipe
from meridian.server.domain.errors import KmsError

# CallInfo.facts key of a batch item: the batch's AuthorizationMemo (not recorded: the
# audit document reads named facts only, and a memo holds decisions, never secrets).
FACT_AUTHORIZATION_MEMO = "batch.authorization_memo"


class AuthorizationMemo:
    """The decisions made so far in one batch, by what they depended on."""

    def __init__(self) -> None:
        # At most one entry per item: a batch's items are bounded (BATCH_ITEMS_MAX).
        self._results: dict[Hashable, AuthorizationResult] = {}

    def get(
        self, request: AuthorizationRequest
    ) -> tuple[Hashable | None, AuthorizationResult | None]:
        """(memo key or None if not memoizable, the decision made for it or None)."""
        key = _key(request)
        if key is None:
            return None, None
        return key, self._results.get(key)

    def put(self, key: Hashable, result: AuthorizationResult) -> None:
        self._results[key] = result


def _key(request: AuthorizationRequest) -> Hashable | None:
    if (
        request.aliases
        or request.alias_keys
        or request.principals
        or request.retiring is not None
        or request.requested_grant is not None
    ):
        return None
    targets = []
    for target in request.keys:
        frozen = _target(target)
        if frozen is None:
            return None
        targets.append(frozen)
    return (
        request.caller.principal_arn,
        request.caller.source_address,
        request.action,
        tuple(targets),
        _frozen_map(request.values),
        tuple(request.grant_tokens),
        request.compare_keys,
    )


def _target(target: KeyTarget) -> Hashable | None:
    blob_key = ""
    if not target.reference and target.ciphertext_blob:
        if len(target.ciphertext_blob) > blob_recipe.BLOB_BYTES_MAX:
            blob_key = "(oversized)"  # resolved to no key, whatever the bytes
        else:
            try:
                blob_key = blob_recipe.parse_header(target.ciphertext_blob).key_id
            except (KmsError, ValueError):
                # An unreadable header: the authorizer decides (and refuses) it itself.
                return None
    context = target.encryption_context
    return (
        target.reference,
        blob_key,
        target.action,
        None if context is None else _frozen_map(context),
        _frozen_map(target.values),
    )


def _frozen_map(values: Mapping[str, Any]) -> Hashable:
    return tuple(
        sorted(
            (name, tuple(value) if isinstance(value, list | tuple) else value)
            for name, value in values.items()
        )
    )
