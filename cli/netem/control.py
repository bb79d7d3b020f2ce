"""The proxy's run-time control API: JSON lines over TCP on loopback, with a token.

One request per line, one answer per line:

    -> {"token": "...", "op": "ping"}
    <- {"ok": true, "revision": 3, "pid": 4242}
    -> {"token": "...", "op": "reload"}      re-read links.json, apply it at once
    <- {"ok": true, "revision": 4}
    -> {"token": "...", "op": "stats"}
    <- {"ok": true, "revision": 4, "links": {"client<->us-east-1": {...}, ...}}
    <- {"ok": false, "error": "..."}         for anything refused

The token lives in a 0600 file beside the cluster's PKI, so only the cluster's owner
can bend its network. Anyone who can read it can also read the cluster's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ControlError", "ControlServer", "call"]

LINE_BYTES_MAX = 64 * 1024
RESPONSE_BYTES_MAX = 4 * 1024 * 1024
CALL_TIMEOUT_S_DEFAULT = 5.0

Handler = Callable[[str], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The proxy cannot be reached, or it refused the request."""


class ControlServer:
    def __init__(self, token: str, handler: Handler) -> None:
        self._token = token.encode()
        self._handler = handler
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=LINE_BYTES_MAX, reuse_address=True
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = await self._answer(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            # ValueError: a line over the limit; the caller gets a closed connection.
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "a request is one JSON object per line"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is one JSON object per line"}
        token = request.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
            return {"ok": False, "error": "wrong or missing token"}
        operation = request.get("op")
        if not isinstance(operation, str):
            return {"ok": False, "error": "missing op"}
        try:
            answer = await self._handler(operation)
        except ControlError as error:
            return {"ok": False, "error": str(error)}
        return {"ok": True, **answer}


def call(
    endpoint: str, token: str, operation: str, *, timeout_s: float = CALL_TIMEOUT_S_DEFAULT
) -> dict[str, Any]:
    """Send one request to the proxy at `endpoint` and return its answer."""
    host, _, port = endpoint.rpartition(":")
    request = json.dumps({"token": token, "op": operation}).encode() + b"\n"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
            connection.sendall(request)
            with connection.makefile("rb") as stream:
                line = stream.readline(RESPONSE_BYTES_MAX)
    except OSError as error:
        raise ControlError(f"the link proxy at {endpoint} does not answer: {error}") from None
    try:
        answer = json.loads(line)
    except ValueError:
        raise ControlError(f"the link proxy at {endpoint} sent no valid answer") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the link proxy at {endpoint} sent no valid answer")
    if not answer.get("ok"):
        raise ControlError(f"the link proxy refused {operation!r}: {answer.get('error')}")
    return answer
