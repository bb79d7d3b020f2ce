"""The deletion sweeper: deletes keys whose waiting period is over.

Driven by the injected clock, so tests move time instead of waiting for it. A
failing sweep is logged and retried at the next interval; it never stops the node.
"""

from __future__ import annotations

import structlog

from meridian.server.domain.clock import Clock
from meridian.server.domain.service import KeyService

log = structlog.get_logger("meridian.sweeper")


async def run_deletion_sweeper(service: KeyService, clock: Clock, *, interval_s: float) -> None:
    while True:
        try:
            deleted = await service.delete_due_keys()
        except Exception:
            log.exception("deletion sweep failed; retrying at the next interval")
        else:
            for key_id in deleted:
                log.info(
                    "key deleted after its waiting period", event_name="DeleteKey", key_id=key_id
                )
        await clock.sleep(interval_s)
