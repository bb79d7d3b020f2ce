"""The audit API for the node's own subsystems (rotation, replication, sweeper, ...).

Two ways to record a service event, both durable before they return:

```python
# Something already happened and is durable elsewhere (replication applied an entry):
await audit.record_service_event(
    ServiceEvent(ServiceEventName.SYNCHRONIZE_MULTI_REGION_KEY, key_arn=arn,
                 details={"sourceRegion": "us-east-1", "sequence": 42})
)

# About to do something irreversible (rotate, delete): an intent is written first, so a
# crash in the middle leaves a record with outcome "Unknown" instead of nothing.
async with audit.service_action(ServiceEvent(ServiceEventName.DELETE_KEY, key_arn=arn)) as act:
    if not await delete_if_still_due():
        act.skip()  # nothing happened: no record
    act.add_details(keyMaterialCount=3)
```

Both raise :class:`AuditUnavailable` if the record (or the intent) cannot be written;
``service_action`` raises before running the body, so the action is not taken
unaudited. If the body raises an ``Exception`` the intent is withdrawn and nothing is
recorded (a failed action is the subsystem's to log and retry); if it is cancelled,
the intent stays and becomes an ``Unknown`` record, because the action may have taken
effect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from meridian.server.audit.events import ServiceEvent


class AuditUnavailable(Exception):
    """A record could not be made durable: the audit store failed, is full, or is slow.

    ``timed_out`` tells a slow store (or an overloaded writer) from a failing one.
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ServiceAction:
    """The handle ``service_action`` yields: skip the record or add details to it."""

    def __init__(self) -> None:
        self.skipped = False
        self.details: dict[str, str | int | bool] = {}
        self.key_material_id = ""

    def skip(self) -> None:
        self.skipped = True

    def add_details(self, **details: str | int | bool) -> None:
        self.details.update(details)


class AuditSink(Protocol):
    async def record_service_event(self, event: ServiceEvent) -> None: ...

    def service_action(self, event: ServiceEvent) -> AbstractAsyncContextManager[ServiceAction]: ...


class NullAuditSink:
    """The sink of a node whose audit trail is disabled (``[audit] enabled = false``)."""

    async def record_service_event(self, event: ServiceEvent) -> None:
        return None

    def service_action(self, event: ServiceEvent) -> AbstractAsyncContextManager[ServiceAction]:
        return _null_action()


@asynccontextmanager
async def _null_action() -> AsyncIterator[ServiceAction]:
    yield ServiceAction()
