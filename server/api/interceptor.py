"""One interceptor for every RPC: request id, authentication, logging, error mapping.

Doing these once here (etcd's and wtf's habit) keeps servicers to pure translation
and guarantees that no handler forgets to authenticate or maps an error its own way.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from google.protobuf.message import DecodeError

from meridian.server.api.errors import status_for, unauthenticated_status
from meridian.server.api.principal import PrincipalResolver
from meridian.server.domain.errors import (
    KmsError,
    KMSInternalException,
    ValidationException,
)
from meridian.server.domain.model import Caller

log = structlog.get_logger("meridian.api")

CURRENT_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("meridian_caller")

# Services that need no principal: the standard health and reflection services are
# probed by orchestrators and load balancers. mTLS is still required to connect.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

if TYPE_CHECKING:
    # grpc's stubs make these generic; the runtime classes are not subscriptable.
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor
    Context = grpc.aio.ServicerContext

Behavior = Callable[[Any, Context], Awaitable[Any]]


class RequestInterceptor(_ServerInterceptor):
    def __init__(self, *, account_id: str) -> None:
        self._account_id = account_id
        self._principals = PrincipalResolver()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_SERVICES) or handler.unary_unary is None:
            return handler
        operation = method.rsplit("/", 1)[-1]
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(cast(Behavior, handler.unary_unary), operation),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behavior: Behavior, operation: str) -> Behavior:
        async def wrapped(request: Any, context: Context) -> Any:
            request_id = str(uuid.uuid4())
            started = time.perf_counter()
            principal = self._principals.from_auth_context(context.auth_context())
            bound = log.bind(request_id=request_id, operation=operation)
            if principal is None:
                bound.warning("request refused", outcome="Unauthenticated")
                code, message, details = unauthenticated_status(
                    "The request carries no client certificate that names a principal"
                )
                await context.abort(code, message, _trailers(request_id, details))
            assert principal is not None
            caller = Caller(
                principal_arn=principal.arn(self._account_id),
                source_address=_source_address(context.peer()),
                request_id=request_id,
            )
            token = CURRENT_CALLER.set(caller)
            try:
                if isinstance(request, MalformedRequest):
                    raise ValidationException(
                        f"The request is not a valid {operation} request: {request.problem}"
                    )
                response = await behavior(request, context)
            except KmsError as error:
                code, message, details = status_for(error)
                bound.info(
                    "request failed",
                    principal=caller.principal_arn,
                    outcome=error.reason,
                    duration_ms=_ms_since(started),
                )
                await context.abort(code, message, _trailers(request_id, details))
            except grpc.aio.AbortError:
                raise
            except Exception:
                # Anything else is a bug: the caller learns only "Internal error", the
                # log gets everything (never request payloads, which may be secret).
                bound.exception("request crashed", principal=caller.principal_arn)
                code, message, details = status_for(KMSInternalException())
                await context.abort(code, message, _trailers(request_id, details))
            finally:
                CURRENT_CALLER.reset(token)
            context.set_trailing_metadata((("x-request-id", request_id),))
            bound.info(
                "request served",
                principal=caller.principal_arn,
                outcome="ok",
                duration_ms=_ms_since(started),
            )
            return response

        return wrapped


class MalformedRequest:
    """Stands in for a request that failed to parse, so it reaches the error mapping.

    Without this, grpc answers an undecodable message (bad wire format, a string
    field that is not UTF-8) with UNKNOWN and no reason, which is neither the right
    code nor an AWS error.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            problem = (
                "a string field is not valid UTF-8"
                if "UTF-8" in str(error)
                else ("the message is not valid protobuf")
            )
            return MalformedRequest(problem)

    return deserialize


def _trailers(request_id: str, details: bytes) -> tuple[tuple[str, str | bytes], ...]:
    return (("grpc-status-details-bin", details), ("x-request-id", request_id))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _source_address(peer: str) -> str:
    """gRPC peers look like ``ipv4:127.0.0.1:5555`` or ``ipv6:[::1]:5555``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer
