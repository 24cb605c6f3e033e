"""``POST /v1/measurements`` as a plain ASGI handler: the service's hot path.

A single reading costs the service a few hundred microseconds in all; FastAPI's and
Starlette's layers (the telemetry, body-limit, error and exception middlewares, the router's
matching of every route, the request object, the response object) cost about as much again
as the reading's own work. So the app (:func:`weightstream.service.app.create_app`) hands this
one route to :class:`Ingress` before any of them, and every other request to FastAPI.

The handler does what the route and the edge did, in the same order and with the same
answers:

1. a ``Content-Length`` above the cap: 413 (``connection: close``), nothing read;
2. the key (:func:`~weightstream.service.auth.admit`): 401 / 403;
3. the body, read up to the cap (413 past it) and validated as FastAPI validates the route's
   body parameter (:func:`~weightstream.service.routes_v1.parse_body`): 422;
4. the readings (:func:`~weightstream.service.routes_v1.measurements_answer`): 413 for too many,
   else decided through the group commit and answered once durable (200, orjson).

Any exception on the way is answered by the app's own exception handler for its type (the
ones FastAPI would call: same status, body and headers), and one that has none by the edge's
500 (one log line with the exception's type, no trace, no weight). Each request is counted in
the edge's metrics under the route's template. The route stays declared in the app, so the
OpenAPI schema describes it as before; a request that reaches the router all the same (the app
mounted under a prefix) is served by the same functions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from weightstream.service.auth import admit
from weightstream.service.keys import KeyStore
from weightstream.service.keys import Scope as KeyScope
from weightstream.service.routes_v1 import measurements_answer, parse_body
from weightstream.service.state import Service

__all__ = ["Ingress", "PATH"]

_log = logging.getLogger("weightstream.service")

#: The path and method this handler serves.
PATH = "/v1/measurements"
METHOD = "POST"

_JSON_HEADERS = [(b"content-type", b"application/json")]

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class _TooLarge(Exception):
    """The body went past the cap while it was read."""


class _Gone(Exception):
    """The client went away before its body was read."""


class Ingress:
    """The hot path (see the module docstring).

    ``handler_of(exc)``: the app's exception handler for ``exc`` (None: the edge's 500);
    ``plain(scope, send, code, detail)``: the edge's own error answer (413, 500);
    ``count(method, status, seconds)``: the edge's request metrics for this route;
    ``route``: the declared route, put in the scope as the router would (logs name it).
    """

    def __init__(
        self,
        service: Service,
        keys: KeyStore,
        *,
        max_body: int,
        handler_of: Callable[[Exception], ErrorHandler | None],
        plain: Callable[[Scope, Send, int, str], Awaitable[None]],
        count: Callable[[str, int, float], None],
        route: Any,
    ) -> None:
        self.service = service
        self.keys = keys
        self.max_body = max_body
        self.handler_of = handler_of
        self.plain = plain
        self.count = count
        self.route = route

    @staticmethod
    def serves(scope: Scope) -> bool:
        """Whether ``scope`` is a request for this handler."""
        return (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == METHOD
            and not scope.get("root_path")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope["route"] = self.route
        try:
            answer = await self._answer(scope, receive)
        except _Gone:
            self.count(METHOD, 0, time.perf_counter() - started)  # nobody to answer
            return
        except Exception as exc:  # noqa: BLE001 - every failure gets its handler's answer
            sent: list[int] = []

            async def tracking_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    sent.append(int(message["status"]))
                await send(message)

            try:
                await self._fail(scope, tracking_send, exc)
            except Exception as again:  # noqa: BLE001 - the edge: one line, no trace
                _log.error("%s %s failed: %s", METHOD, PATH, type(again).__name__)
            self.count(METHOD, sent[0] if sent else 0, time.perf_counter() - started)
            return
        # The answer's status is sent first: a failure while sending it (the client went
        # away) leaves nothing else to answer.
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode()), *_JSON_HEADERS],
                }
            )
            await send({"type": "http.response.body", "body": answer})
        self.count(METHOD, 200, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive) -> bytes:
        """The body of the 200 answer; anything else raises (the answer is :meth:`_fail`'s)."""
        # Every Content-Length is held to the cap, as the edge holds them; of the others the
        # first is read, as Starlette's headers give it.
        content_type: str | None = None
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = False
                if too_big:
                    raise _TooLarge()
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        # As fastapi.security reads the header: "Bearer <token>", else no key.
        scheme, _, token = (authorization or "").partition(" ")
        admit(self.keys, token.strip() if scheme.lower() == "bearer" else None, KeyScope.WRITE)
        body = parse_body(await self._body(receive), content_type)
        return await measurements_answer(self.service, body)

    async def _body(self, receive: Receive) -> bytes:
        """The whole body, refused past the cap."""
        message = await receive()
        if message["type"] != "http.request":
            raise _Gone()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_body:
                raise _TooLarge()
            return body
        parts, size = [body], len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Gone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge()
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _fail(self, scope: Scope, send: Send, exc: Exception) -> None:
        if isinstance(exc, _TooLarge):
            await self.plain(scope, send, 413, "request body too large")
            return
        handler = self.handler_of(exc)
        if handler is None:
            _log.error("%s %s failed: %s", METHOD, PATH, type(exc).__name__)
            await self.plain(scope, send, 500, "internal error")
            return
        response = await handler(Request(scope), exc)
        await response(scope, _disconnected, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}
