"""The tamper-evident audit trail, its digests, and usage accounting (DESIGN.md beside).

What other subsystems need is re-exported here::

    from meridian.server.audit import AuditSink, ServiceEvent, ServiceEventName
"""

from meridian.server.audit.events import ServiceEvent, ServiceEventName
from meridian.server.audit.sink import AuditSink, AuditUnavailable, NullAuditSink, ServiceAction

__all__ = [
    "AuditSink",
    "AuditUnavailable",
    "NullAuditSink",
    "ServiceAction",
    "ServiceEvent",
    "ServiceEventName",
]
