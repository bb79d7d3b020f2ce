"""The authorization table covers every RPC the node serves, and fails closed.

Every RPC of every gRPC service generated from proto/ must have a row in
``server/api/access_rules.py`` (or belong to a node-only service); every field a row
reads must exist in the RPC's request; every action it names must be a real one. An
RPC added without a row is refused for everyone, and this test says which row to add.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from google.protobuf.descriptor import ServiceDescriptor

import meridian.proto
from meridian.server.api.access_rules import NODE_ONLY_SERVICE_PREFIXES, RULES_BY_SERVICE, Rule
from meridian.server.api.authorization import AuthorizationHook, service_of
from meridian.server.api.interceptor import CallInfo
from meridian.server.domain.access.actions import canonical_action
from meridian.server.domain.errors import AccessDeniedException
from meridian.server.domain.model import Caller


def served_services() -> list[ServiceDescriptor]:
    services: list[ServiceDescriptor] = []
    for module_info in pkgutil.walk_packages(meridian.proto.__path__, "meridian.proto."):
        if module_info.name.endswith("_pb2"):
            module = importlib.import_module(module_info.name)
            services += list(module.DESCRIPTOR.services_by_name.values())
    return services


SERVICES = served_services()
RPCS = [(service, method) for service in SERVICES for method in service.methods]


def test_the_kms_service_is_found() -> None:
    assert "meridian.kms.v1.KeyManagementService" in {s.full_name for s in SERVICES}


@pytest.mark.parametrize(("service", "method"), RPCS, ids=[f"{s.name}.{m.name}" for s, m in RPCS])
def test_every_rpc_has_a_rule(service: ServiceDescriptor, method: Any) -> None:
    if service.full_name.startswith(NODE_ONLY_SERVICE_PREFIXES):
        return
    rule = RULES_BY_SERVICE.get(service.full_name, {}).get(method.name)
    assert rule is not None, (
        f"{service.full_name}/{method.name} has no authorization rule, so every call to it "
        "is refused: add a row to server/api/access_rules.py"
    )
    request_fields = set(method.input_type.fields_by_name)
    missing = [name for name in rule.fields() if name not in request_fields]
    assert missing == [], f"{method.name}'s rule reads fields its request lacks: {missing}"


def _actions(rule: Rule) -> list[str]:
    return [rule.action] + [key.action for key in rule.keys if key.action]


@pytest.mark.parametrize(
    ("service", "name", "rule"),
    [(s, n, r) for s, rules in RULES_BY_SERVICE.items() for n, r in rules.items()],
)
def test_rules_name_real_actions(service: str, name: str, rule: Rule) -> None:
    for action in _actions(rule):
        if action.startswith("meridian:"):
            assert action == f"meridian:{name}"
        else:
            assert canonical_action(action) == action, action


class _NoAuthorizer:
    account_id = "111122223333"

    async def authorize(self, request: object) -> object:
        raise AssertionError("must not be reached")


def _call(operation: str, method: str, principal: str) -> CallInfo:
    return CallInfo(
        operation=operation,
        request=object(),
        caller=Caller(principal_arn=principal),
        request_id="r",
        source_address="127.0.0.1",
        started=0.0,
        method=method,
    )


ADMIN = "arn:meridian:iam::111122223333:user/admin"
NODE = "arn:meridian:iam::111122223333:node/eu-west-1"


async def test_an_operation_without_a_rule_is_refused_even_to_administrators() -> None:
    hook = AuthorizationHook(_NoAuthorizer())  # type: ignore[arg-type]
    call = _call("BrandNew", "/meridian.kms.v1.KeyManagementService/BrandNew", ADMIN)
    with pytest.raises(AccessDeniedException, match="not authorized to perform: BrandNew"):
        await hook.before(call)
    assert call.facts["authorization"]["decision"] == "deny"
    unknown_service = _call("Anything", "/meridian.other.v1.Other/Anything", ADMIN)
    with pytest.raises(AccessDeniedException):
        await hook.before(unknown_service)


@pytest.mark.parametrize(
    "method",
    [
        "/meridian.replication.v1.Replication/ShipBatch",
        "/meridian.audit.v1.AuditExchange/PushAuditDigests",
    ],
)
async def test_node_only_services_refuse_client_certificates(method: str) -> None:
    hook = AuthorizationHook(_NoAuthorizer())  # type: ignore[arg-type]
    operation = method.rsplit("/", 1)[1]
    node_call = _call(operation, method, NODE)
    await hook.before(node_call)
    assert node_call.facts["authorization"]["decision"] == "allow"
    client_call = _call(operation, method, ADMIN)
    with pytest.raises(AccessDeniedException, match="only Meridian nodes"):
        await hook.before(client_call)
    assert client_call.facts["authorization"]["decision"] == "deny"


def test_calls_without_a_method_are_kms_calls() -> None:
    assert service_of("") == "meridian.kms.v1.KeyManagementService"
    assert service_of("/meridian.audit.v1.Audit/GetUsageReport") == "meridian.audit.v1.Audit"
