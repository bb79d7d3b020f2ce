"""The deletion sweeper: deletes keys whose waiting period is over.

Driven by the injected clock, so tests move time instead of waiting for it. A
failing sweep is logged and retried at the next interval; it never stops the node.
Each deletion is a ``DeleteKey`` service event in the audit trail; if the trail
cannot take it, the key is not deleted until it can.
"""

from __future__ import annotations

import structlog

from meridian.server.audit import AuditSink, NullAuditSink, ServiceEvent, ServiceEventName
from meridian.server.domain import identifiers
from meridian.server.domain.clock import Clock
from meridian.server.domain.service import KeyService

log = structlog.get_logger("meridian.sweeper")


async def run_deletion_sweeper(
    service: KeyService,
    clock: Clock,
    *,
    interval_s: float,
    audit: AuditSink | None = None,
) -> None:
    sink = audit or NullAuditSink()
    while True:
        try:
            for key_id in await service.keys_due_for_deletion():
                await _delete(service, sink, key_id)
        except Exception:
            log.exception("deletion sweep failed; retrying at the next interval")
        await clock.sleep(interval_s)


async def _delete(service: KeyService, audit: AuditSink, key_id: str) -> None:
    """Delete one key under an audit intent: the DeleteKey service event (CloudTrail's)
    is durable before the key is gone, or the key is not deleted this time."""
    event = ServiceEvent(
        ServiceEventName.DELETE_KEY,
        key_arn=identifiers.key_arn(service.region, service.account_id, key_id),
    )
    async with audit.service_action(event) as action:
        if not await service.delete_if_due(key_id):
            action.skip()
            return
    log.info("key deleted after its waiting period", event_name="DeleteKey", key_id=key_id)
