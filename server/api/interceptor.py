"""One interceptor for every RPC: request id, authentication, hooks, logging, errors.

Doing these once here (etcd's and wtf's habit) keeps servicers to pure translation
and guarantees that no handler forgets to authenticate or maps an error its own way.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc
import structlog
from google.protobuf.message import DecodeError

from meridian.server.api.errors import status_for
from meridian.server.api.principal import PrincipalResolver
from meridian.server.api.request_ids import new_id
from meridian.server.domain.errors import (
    AccessDeniedException,
    KmsError,
    KMSInternalException,
    ValidationException,
)
from meridian.server.domain.model import Caller

log = structlog.get_logger("meridian.api")

CURRENT_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("meridian_caller")
# The call being served, for operations that run calls of their own (the batch
# operations, server/api/batch_servicer.py, run one call per item).
CURRENT_CALL: contextvars.ContextVar[CallInfo] = contextvars.ContextVar("meridian_call")

# Batch items run back to back on the event loop; after this many, other calls get a turn.
ITEMS_PER_TURN = 20

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
# An operation as the transport-neutral pipeline sees it: request in, response out.
Invoke = Callable[[Any], Awaitable[Any]]


class NotAuthenticated(AccessDeniedException):
    """No client certificate names a principal: AccessDeniedException over UNAUTHENTICATED."""

    def __init__(self) -> None:
        super().__init__("The request carries no client certificate that names a principal")


@dataclass
class CallInfo:
    """One call as the hooks see it. ``facts`` is where hooks leave what they learned
    (the key ARN an authorizer resolved, the grant that allowed the call, ...) for the
    hooks after them, e.g. the audit trail."""

    operation: str
    request: Any  # the decoded message, or MalformedRequest
    caller: Caller | None  # None: no authenticated principal
    request_id: str
    source_address: str
    started: float
    facts: dict[str, Any] = field(default_factory=dict)
    # The full gRPC method, "/package.Service/Operation"; "" for calls that did not come
    # over gRPC (they are KeyManagementService operations).
    method: str = ""


class CallHook(Protocol):
    """A step every API call passes through (authorization, audit, ...), in order.

    ``before`` runs after authentication and before the operation; raising a KmsError
    refuses the call. ``after`` runs once the outcome is known and before the response
    is sent, for every call including refused ones; raising fails the call (this is how
    auditing fails closed).
    """

    async def before(self, call: CallInfo) -> None: ...

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None: ...


class ItemsHook(CallHook, Protocol):
    """A hook that takes the ``after`` of many calls at once (batch operations,
    :meth:`CallPipeline.run_items`): the same per call as ``after``, returning for each
    call the KmsError that replaces its outcome (None if it passed)."""

    async def after_items(
        self, outcomes: Sequence[tuple[CallInfo, Any | None, KmsError | None]]
    ) -> list[KmsError | None]: ...


class RequestInterceptor(_ServerInterceptor):
    def __init__(self, *, account_id: str, hooks: Sequence[CallHook] = ()) -> None:
        self._account_id = account_id
        self._principals = PrincipalResolver()
        # Wrapped handlers by method, built on a method's first call: grpc hands us the
        # same handler object for every call of a method, so wrapping it once saves
        # building a handler, a closure and a deserializer on every request. An entry
        # holds the handler it wraps and is rebuilt if grpc ever hands over another.
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}
        # Shared with the node's other transport (the AWS JSON gateway, server/gateway), so
        # that every call, however it arrives, passes through the same hook instances.
        self.pipeline = CallPipeline(hooks)

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
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        operation = method.rsplit("/", 1)[-1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(cast(Behavior, handler.unary_unary), operation, method),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        # Bounded by the services' method count: only registered methods get a handler.
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, behavior: Behavior, operation: str, method: str = "") -> Behavior:
        async def wrapped(request: Any, context: Context) -> Any:
            principal = self._principals.from_auth_context(context.auth_context())
            source_address = _source_address(context.peer())
            request_id = new_id()
            caller = None
            if principal is not None:
                caller = Caller(
                    principal_arn=principal.arn(self._account_id),
                    source_address=source_address,
                    request_id=request_id,
                )
            call = CallInfo(
                operation=operation,
                request=request,
                caller=caller,
                request_id=request_id,
                source_address=source_address,
                started=time.perf_counter(),
                method=method,
                facts={"user_agent": _user_agent(context)},
            )
            response, error = await self.pipeline.run(
                call, lambda message: behavior(message, context)
            )
            principal_arn = caller.principal_arn if caller else None
            if error is not None:
                log.info(
                    "request failed",
                    request_id=request_id,
                    operation=operation,
                    principal=principal_arn,
                    duration_ms=_ms_since(call.started),
                    outcome=error.reason,
                )
                code, message, details = status_for(error)
                if isinstance(error, NotAuthenticated):
                    code = grpc.StatusCode.UNAUTHENTICATED
                await context.abort(code, message, _trailers(request_id, details))
            context.set_trailing_metadata((("x-request-id", request_id),))
            # Successes log at debug: the audit trail is the record of every call, and a
            # log line per request costs more than the operation itself. No bound logger
            # is built for them either (a bind per request showed in profiles).
            log.debug(
                "request served",
                request_id=request_id,
                operation=operation,
                principal=principal_arn,
                duration_ms=_ms_since(call.started),
                outcome="ok",
            )
            return response

        return wrapped


class CallPipeline:
    """What every API call goes through once its transport has decoded it: the
    principal check, the hooks in order, the operation, and the error mapping.

    The gRPC interceptor above and the AWS JSON gateway both run calls through the
    node's one pipeline, so authorization and audit cannot differ between transports.
    """

    def __init__(self, hooks: Sequence[CallHook] = ()) -> None:
        self._hooks = tuple(hooks)

    async def run(
        self, call: CallInfo, invoke: Invoke, *, refusal: KmsError | None = None
    ) -> tuple[Any | None, KmsError | None]:
        """Run ``invoke(call.request)`` between the hooks; returns (response, error).

        ``refusal`` is an error the transport has already decided on (a bad signature, an
        unreadable body): the operation does not run, but the ``after`` hooks still see the
        call, so a refused call is audited like any other.
        """
        response, error = await self._run(call, invoke, refusal)
        return await self._after(call, response, error)

    async def run_items(
        self, items: Sequence[tuple[CallInfo, Invoke]]
    ) -> list[tuple[Any | None, KmsError | None]]:
        """Run several calls: each one's hooks and operation as :meth:`run` does, but the
        operations one after another and then each hook's ``after`` for every call.

        This is the batch operations' path. Sequential operations let the first item of a
        key resolve it and unwrap its material while the others find both cached. A hook
        with ``after_items`` (:class:`ItemsHook`: the audit trail) gets every call at
        once, so it can submit all their records before awaiting any, and the writer
        commits them in one group; other hooks' ``after`` is awaited call by call (they
        do no I/O).
        """
        outcomes: list[tuple[Any | None, KmsError | None]] = []
        for index, (call, invoke) in enumerate(items):
            if index and index % ITEMS_PER_TURN == 0:
                # Items rarely wait on anything (keys and material come from caches), so
                # a long batch would hold the event loop; other calls get a turn.
                await asyncio.sleep(0)
            outcomes.append(await self._run(call, invoke, None))
        calls = [call for call, _ in items]
        for hook in self._hooks:
            after_items = getattr(hook, "after_items", None)
            if after_items is not None:
                failures = await cast(ItemsHook, hook).after_items(
                    [(call, *outcome) for call, outcome in zip(calls, outcomes, strict=True)]
                )
            else:
                failures = [
                    await self._hook_after(hook, call, *outcome)
                    for call, outcome in zip(calls, outcomes, strict=True)
                ]
            outcomes = [
                (None, failure) if failure is not None else outcome
                for outcome, failure in zip(outcomes, failures, strict=True)
            ]
        return outcomes

    async def _hook_after(
        self, hook: CallHook, call: CallInfo, response: Any | None, error: KmsError | None
    ) -> KmsError | None:
        """One hook's ``after``; the error that replaces the call's outcome, if it failed."""
        try:
            await hook.after(call, response, error)
        except KmsError as hook_error:
            return hook_error
        except Exception:
            log.exception("call hook crashed", request_id=call.request_id)
            return KMSInternalException()
        return None

    async def _run(
        self, call: CallInfo, invoke: Invoke, refusal: KmsError | None
    ) -> tuple[Any | None, KmsError | None]:
        if refusal is not None:
            return None, refusal
        if call.caller is None:
            return None, NotAuthenticated()
        token = CURRENT_CALLER.set(call.caller)
        call_token = CURRENT_CALL.set(call)
        try:
            if isinstance(call.request, MalformedRequest):
                raise ValidationException(
                    f"The request is not a valid {call.operation} request: {call.request.problem}"
                )
            for hook in self._hooks:
                await hook.before(call)
            return await invoke(call.request), None
        except KmsError as error:
            return None, error
        except grpc.aio.AbortError:
            raise
        except Exception:
            # Anything else is a bug: the caller learns only "Internal error", the log
            # gets everything (never request payloads, which may be secret).
            log.exception("request crashed", request_id=call.request_id, operation=call.operation)
            return None, KMSInternalException()
        finally:
            CURRENT_CALL.reset(call_token)
            CURRENT_CALLER.reset(token)

    async def _after(
        self, call: CallInfo, response: Any | None, error: KmsError | None
    ) -> tuple[Any | None, KmsError | None]:
        for hook in self._hooks:
            try:
                await hook.after(call, response, error)
            except KmsError as hook_error:
                response, error = None, hook_error
            except Exception:
                log.exception("call hook crashed", request_id=call.request_id)
                response, error = None, KMSInternalException()
        return response, error


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


def _user_agent(context: Context) -> str:
    """The caller's user-agent (for the audit record's ``userAgent``), at most 256 chars."""
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent":
            return str(value)[:256]
    return ""


def _source_address(peer: str) -> str:
    """gRPC peers look like ``ipv4:127.0.0.1:5555`` or ``ipv6:[::1]:5555``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer
