"""The AWS JSON 1.1 endpoint: one HTTPS listener, one handler, no operation-specific code.

A request goes: read the bounded body -> verify SigV4 -> route ``X-Amz-Target`` to the
RPC of the same name -> JSON to the proto request message -> the node's CallPipeline
(the same hooks as gRPC, with the SigV4 principal as the caller) -> the same servicer
method gRPC calls -> proto response to JSON. Errors become ``{"__type", "message"}``
with AWS's HTTP status. server/gateway/DESIGN.md explains the choices.

aiohttp serves HTTP: a maintained asyncio server with a C parser and bounded header and
body sizes, that runs in the node's own event loop beside grpc.aio and starts and stops
as a library, which is what a second listener inside an existing process needs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from meridian.server.api.interceptor import CallInfo, CallPipeline, Context, MalformedRequest
from meridian.server.api.request_ids import new_id
from meridian.server.domain.clock import Clock
from meridian.server.domain.errors import KmsError, KMSInternalException
from meridian.server.domain.model import Caller
from meridian.server.gateway import sigv4
from meridian.server.gateway.access_keys import Credential, CredentialResolver
from meridian.server.gateway.context import GatewayContext
from meridian.server.gateway.errors import (
    RequestEntityTooLargeException,
    RequestTimeoutException,
    SerializationException,
    UnknownOperationException,
    UnrecognizedClientException,
    http_status_for,
)
from meridian.server.gateway.settings import AwsGatewayConfig
from meridian.server.gateway.translate import extension_headers, fill_request, response_document

log = structlog.get_logger("meridian.gateway")

TARGET_PREFIX = "TrentService."
CONTENT_TYPE = "application/x-amz-json-1.1"
# A client that trickles its body holds a connection; this bounds how long.
BODY_READ_TIMEOUT_S = 30.0
KEEPALIVE_TIMEOUT_S = 75.0
SHUTDOWN_GRACE_S = 5.0
TRANSPORT = "aws-json-1.1"
USER_AGENT_CHARS_MAX = 256

Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    operation: str
    request_class: type[Message]
    handler: Handler  # the servicer's bound method: (request, context) -> response


def implemented_operations(
    servicer_class: type, service: ServiceDescriptor, *, unimplemented_base: type
) -> list[str]:
    """The RPCs of ``service`` that ``servicer_class`` implements.

    ``unimplemented_base`` is the generated servicer base class, whose methods only say
    UNIMPLEMENTED: an RPC still answered by it is not served (and a contract test fails).
    """
    return [
        method.name
        for method in service.methods
        if getattr(servicer_class, method.name, None)
        not in (None, getattr(unimplemented_base, method.name, None))
    ]


def build_routes(
    servicer: object, service: ServiceDescriptor, *, unimplemented_base: type
) -> dict[str, Route]:
    """One route per RPC of ``service`` that ``servicer`` implements, by AWS name."""
    names = implemented_operations(type(servicer), service, unimplemented_base=unimplemented_base)
    return {
        method.name: Route(
            operation=method.name,
            request_class=GetMessageClass(method.input_type),
            handler=getattr(servicer, method.name),
        )
        for method in service.methods
        if method.name in names
    }


class AwsGateway:
    """Serves ``routes`` over HTTPS with SigV4, through ``pipeline``'s hooks."""

    def __init__(
        self,
        *,
        config: AwsGatewayConfig,
        region: str,
        account_id: str,
        routes: Mapping[str, Route],
        pipeline: CallPipeline,
        credentials: CredentialResolver,
        clock: Clock,
    ) -> None:
        self._config = config
        self._region = region
        self._account_id = account_id
        self._routes = dict(routes)
        self._pipeline = pipeline
        self._credentials = credentials
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; returns the bound port. OSError/ssl.SSLError if it cannot."""
        ssl_context = _server_ssl_context(self._config)
        app = web.Application(client_max_size=self._config.body_bytes_max)
        # Every method and path reaches the handler, so that even a wrong one is answered
        # in AWS's JSON error format rather than with aiohttp's HTML page.
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE_S,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        )
        await runner.setup()
        try:
            listener = _bind(self._config.host, self._config.port)
        except BaseException:
            await runner.cleanup()
            raise
        try:
            await web.SockSite(runner, listener, ssl_context=ssl_context).start()
        except BaseException:
            await runner.cleanup()
            listener.close()
            raise
        self._runner = runner
        self.port = int(listener.getsockname()[1])
        log.info("aws endpoint ready", listen=self._config.listen, port=self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening, let in-flight requests finish (bounded), close the key table."""
        if self._runner is not None:
            server = self._runner.server
            connections = [] if server is None else server.connections
            transports = [handler.transport for handler in connections if handler.transport]
            await self._runner.cleanup()
            self._runner = None
            # Cleanup let requests finish and closed the connections; a TLS close waits for
            # the peer's close_notify, which a vanished client never sends. Abort instead
            # of leaving sockets to the garbage collector.
            for transport in transports:
                transport.abort()
        await self._credentials.aclose()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = new_id()
        started = time.perf_counter()
        try:
            return await self._handle(request, request_id, started)
        except Exception:
            # Only a bug gets here: the caller learns "Internal error", the log the rest.
            log.exception("aws request crashed", request_id=request_id)
            return _error_response(KMSInternalException(), request_id)

    async def _handle(
        self, request: web.Request, request_id: str, started: float
    ) -> web.StreamResponse:
        if request.method != "POST" or request.rel_url.raw_path != "/":
            return _error_response(
                UnknownOperationException(
                    "Meridian's AWS endpoint serves POST / with X-Amz-Target only"
                ),
                request_id,
                status=405 if request.rel_url.raw_path == "/" else 404,
            )
        try:
            body = await asyncio.wait_for(request.read(), BODY_READ_TIMEOUT_S)
        except web.HTTPRequestEntityTooLarge:
            return _error_response(
                RequestEntityTooLargeException(
                    f"The request body is larger than {self._config.body_bytes_max} bytes"
                ),
                request_id,
            )
        except TimeoutError:
            return _error_response(
                RequestTimeoutException(
                    f"The request body did not arrive within {BODY_READ_TIMEOUT_S:g} s"
                ),
                request_id,
            )
        signed = sigv4.SignedRequest(
            method=request.method,
            path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=tuple(request.headers.items()),
            body=body,
        )
        credential, auth_error = await self._authenticate(signed)
        target = request.headers.get("X-Amz-Target", "")
        route = (
            self._routes.get(target[len(TARGET_PREFIX) :])
            if target.startswith(TARGET_PREFIX)
            else None
        )
        if route is None:
            refused = auth_error or UnknownOperationException(
                f"Meridian does not implement the operation {target[:100]!r}"
            )
            self._log(request_id, target[:100], credential, refused, started)
            return _error_response(refused, request_id)
        return await self._call(route, request, body, credential, auth_error, request_id, started)

    async def _call(
        self,
        route: Route,
        request: web.Request,
        body: bytes,
        credential: Credential | None,
        auth_error: KmsError | None,
        request_id: str,
        started: float,
    ) -> web.StreamResponse:
        source_address = request.remote or ""
        message: Any
        refusal = auth_error
        try:
            message = _decode(route, body)
        except KmsError as undecodable:
            message = MalformedRequest(undecodable.message)
            refusal = refusal or undecodable
        caller = None
        user_agent = request.headers.get("User-Agent", "")[:USER_AGENT_CHARS_MAX]
        facts: dict[str, Any] = {"transport": TRANSPORT, "user_agent": user_agent}
        if credential is not None:
            caller = Caller(
                principal_arn=credential.principal.arn(self._account_id),
                source_address=source_address,
                request_id=request_id,
            )
            facts["access_key_id"] = credential.access_key_id
        call = CallInfo(
            operation=route.operation,
            request=message,
            caller=caller,
            request_id=request_id,
            source_address=source_address,
            started=started,
            facts=facts,
        )
        context = GatewayContext(
            peer=_peer(source_address, request),
            metadata=(("user-agent", user_agent),),
        )
        handler = route.handler

        def invoke(proto_request: Any) -> Awaitable[Any]:
            return handler(proto_request, cast(Context, context))

        response, error = await self._pipeline.run(call, invoke, refusal=refusal)
        self._log(request_id, route.operation, credential, error, started)
        if error is not None:
            return _error_response(error, request_id)
        assert isinstance(response, Message)
        return _json_response(
            response_document(response), request_id, extra_headers=extension_headers(response)
        )

    async def _authenticate(
        self, signed: sigv4.SignedRequest
    ) -> tuple[Credential | None, KmsError | None]:
        try:
            authorization = sigv4.parse_authorization(signed)
            timestamp = sigv4.check_request(
                signed,
                authorization,
                region=self._region,
                now=self._clock.now(),
                clock_skew_s_max=self._config.clock_skew_s_max,
            )
            credential = await self._credentials.resolve(authorization.access_key_id)
            if credential is None:
                raise UnrecognizedClientException()
            sigv4.check_signature(signed, authorization, timestamp, credential.secret)
        except KmsError as error:
            return None, error
        return credential, None

    def _log(
        self,
        request_id: str,
        operation: str,
        credential: Credential | None,
        error: KmsError | None,
        started: float,
    ) -> None:
        # Never the headers or the body: they carry signatures, plaintext and blobs.
        log.info(
            "aws request failed" if error else "aws request served",
            request_id=request_id,
            operation=operation,
            principal=credential.principal.name if credential else None,
            access_key_id=credential.access_key_id if credential else None,
            outcome=error.reason if error else "ok",
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )


def _decode(route: Route, body: bytes) -> Message:
    try:
        document = json.loads(body, parse_constant=_reject_constant) if body.strip() else {}
    except (ValueError, RecursionError):
        raise SerializationException("The request body is not valid JSON") from None
    message = route.request_class()
    try:
        fill_request(message, document, route.operation)
    except (TypeError, ValueError, OverflowError, RecursionError):
        # What the checks in translate.py let through and protobuf still refuses.
        raise SerializationException(
            f"The request body does not fit the {route.operation} request"
        ) from None
    return message


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _error_response(error: KmsError, request_id: str, *, status: int | None = None) -> web.Response:
    return _json_response(
        {"__type": error.reason, "message": error.message},
        request_id,
        status=status or http_status_for(error.reason),
    )


def _json_response(
    document: Mapping[str, Any],
    request_id: str,
    *,
    status: int = 200,
    extra_headers: Mapping[str, str] | None = None,
) -> web.Response:
    # "Server" replaces aiohttp's own, which would advertise its version to every caller.
    headers = {"x-amzn-RequestId": request_id, "Server": "Meridian", **(extra_headers or {})}
    return web.Response(
        body=json.dumps(document, separators=(",", ":")).encode(),
        status=status,
        content_type=CONTENT_TYPE,
        headers=headers,
    )


def _peer(source_address: str, request: web.Request) -> str:
    """The gRPC spelling of the caller's address (``ipv4:1.2.3.4:5``), for servicers."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    port = peername[1] if isinstance(peername, tuple) and len(peername) >= 2 else 0
    if ":" in source_address:
        return f"ipv6:[{source_address}]:{port}"
    return f"ipv4:{source_address}:{port}"


def _server_ssl_context(config: AwsGatewayConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # AWS clients present no certificate: SigV4 authenticates them.
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(config.cert), str(config.key))
    return context


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener
