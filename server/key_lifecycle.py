"""The key lifecycle task: automatic rotation and the expiry of imported key material.

Driven by the injected clock, like the deletion sweeper, so tests move time instead of
waiting for it. A failing pass is logged and retried at the next interval; it never
stops the node. Each rotation is a ``RotateKey`` service event and each expiry a
``DeleteExpiredKeyMaterial`` service event in the audit trail (CloudTrail's names); if
the trail cannot take the event, the action waits until it can.
"""

from __future__ import annotations

import structlog

from meridian.server.audit import AuditSink, NullAuditSink, ServiceEvent, ServiceEventName
from meridian.server.domain import identifiers
from meridian.server.domain.clock import Clock
from meridian.server.domain.service import KeyService

log = structlog.get_logger("meridian.key_lifecycle")


async def run_key_lifecycle(
    service: KeyService,
    clock: Clock,
    *,
    interval_s: float,
    audit: AuditSink | None = None,
) -> None:
    sink = audit or NullAuditSink()
    while True:
        try:
            await lifecycle_pass(service, sink)
        except Exception:
            log.exception("key lifecycle pass failed; retrying at the next interval")
        await clock.sleep(interval_s)


async def lifecycle_pass(service: KeyService, audit: AuditSink) -> None:
    """Rotate the keys that are due, then expire the imported material that is due."""
    rotation, imports = service.key_types.rotation, service.key_types.imports
    for key_id in await rotation.keys_due_for_rotation():
        event = ServiceEvent(ServiceEventName.ROTATE_KEY, key_arn=_arn(service, key_id))
        async with audit.service_action(event) as action:
            material_id = await rotation.rotate_if_due(key_id)
            if material_id is None:
                action.skip()
                continue
            action.key_material_id = material_id.hex()
        log.info("key rotated", event_name="RotateKey", key_id=key_id)
    for key_id, material_id in await imports.materials_due_to_expire():
        event = ServiceEvent(
            ServiceEventName.DELETE_EXPIRED_KEY_MATERIAL, key_arn=_arn(service, key_id)
        )
        async with audit.service_action(event) as action:
            if not await imports.expire_if_due(key_id, material_id):
                action.skip()
                continue
            action.key_material_id = material_id.hex()
        log.info(
            "imported key material expired", event_name="DeleteExpiredKeyMaterial", key_id=key_id
        )


def _arn(service: KeyService, key_id: str) -> str:
    return identifiers.key_arn(service.region, service.account_id, key_id)
