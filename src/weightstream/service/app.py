"""The FastAPI application: :func:`create_app` wires a store, a configuration and a key table.

Everything the app uses is injected: the store (any
:class:`~weightstream.store.base.StateStore`; it stays the caller's to close), the
:class:`~weightstream.config.Config`, the :class:`~weightstream.service.keys.KeyStore`, the
clock, the :class:`~weightstream.service.settings.ServiceSettings` and the metrics. The app
builds one :class:`~weightstream.processor.Processor` and one
:class:`~weightstream.service.commit.GroupCommitter`; its lifespan starts the writer and, on
shutdown, lets it decide, commit and answer everything already submitted before the app
stops (uvicorn first stops accepting connections and waits for the requests in flight).

The edge (:class:`_Edge`, a plain ASGI middleware) caps request bodies (413), counts requests
for ``/metrics``, and turns any exception that escaped a route into a 500 whose body says only
"internal error" and whose one log line names the exception's type and the route: no stack
trace and no weight in any error body or log line. ``POST /v1/measurements``, the hot path, is
served before FastAPI's layers by :class:`~weightstream.service.ingress.Ingress`, which does
the edge's part itself (the same cap, metrics and answers). Errors become HTTP statuses here
and only here (:data:`ERROR_STATUS`); under ``/fhir`` an error body is a FHIR
``OperationOutcome``.

Routes without a key: ``/healthz`` (the process is alive), ``/readyz`` (the store answers a
query through the store thread, the writer takes readings; with the reset breaker's state)
and ``/metrics`` (Prometheus text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.config import Config
from weightstream.errors import (
    ConflictError,
    StateCorruptionError,
    StorageError,
    StorageFullError,
    StoreBusyError,
    WeightstreamError,
)
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.heap import long_lived_heap
from weightstream.logs import LogObserver
from weightstream.metrics import MetricsObserver
from weightstream.observe import Observers
from weightstream.processor import Processor
from weightstream.report import ui as report_ui
from weightstream.service import fhir, routes_v1
from weightstream.service.commit import GroupCommitter, RequestFailed, ServiceClosing
from weightstream.service.ingress import PATH as INGRESS_PATH
from weightstream.service.ingress import Ingress
from weightstream.service.keys import KeyStore
from weightstream.service.settings import ServiceSettings
from weightstream.service.state import Service, service_of
from weightstream.store.base import StateStore

__all__ = ["create_app", "ERROR_STATUS"]

_log = logging.getLogger("weightstream.service")

#: The HTTP status of each kind of failure (most specific first), and what the body says. A
#: message never carries the exception's own text (paths, SQL), only this.
ERROR_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (ServiceClosing, 503, "the service is shutting down; retry"),
    (StorageFullError, 507, "storage is full"),
    (StoreBusyError, 503, "storage is busy; retry"),
    (ConflictError, 503, "a concurrent writer changed the same user; retry"),
    (StateCorruptionError, 409, "the stored state of this user is corrupt"),
    (StorageError, 503, "storage unavailable; retry"),
    (RequestFailed, 500, "internal error"),
    (WeightstreamError, 500, "internal error"),
)

_RETRY_AFTER = {"Retry-After": "1"}


def _status_of(exc: BaseException) -> tuple[int, str]:
    for cls, code, message in ERROR_STATUS:
        if isinstance(exc, cls):
            return code, message
    return 500, "internal error"


def _is_fhir(request_or_scope: Request | Scope) -> bool:
    path = (
        request_or_scope.url.path
        if isinstance(request_or_scope, Request)
        else str(request_or_scope.get("path", ""))
    )
    return path == "/fhir" or path.startswith("/fhir/")


def _error(
    request: Request, code: int, detail: Any, headers: dict[str, str] | None = None
) -> Response:
    if _is_fhir(request):
        return fhir.outcome_response(
            code, detail if isinstance(detail, str) else None, detail, headers
        )
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Per-field errors without the submitted values (no weight in an error body)."""
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]


class _HttpMetrics:
    def __init__(self, registry: Any) -> None:
        self.requests = Counter(
            "weightstream_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "weightstream_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=registry,
        )
        self.group = Histogram(
            "weightstream_group_commit_readings",
            "Readings decided and committed together in one unit of work.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000),
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def count(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (``status`` 0: none was sent)."""
        labels = (route, method, str(status))
        # The metric children of a label set are looked up once (labels() costs a lock and a
        # check of every value per request); the sets are few (route templates x statuses).
        children = self._children.get(labels)
        if children is None:
            children = (self.requests.labels(*labels), self.duration.labels(route))
            self._children[labels] = children
        children[0].inc()
        children[1].observe(seconds)


class _Edge:
    """Body cap, request metrics and the last word on any escaped exception."""

    def __init__(self, app: ASGIApp, *, max_body: int, metrics: _HttpMetrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent: dict[str, int] = {}
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = False
                if too_big:
                    await _plain(scope, send, 413, "request body too large")
                    sent["status"] = 413
                    self._count(scope, sent, started)
                    return
        received = 0
        too_large = False

        async def capped_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # The app sees the client go away and stops reading; the edge answers.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            if too_large:
                return  # the app's answer to a cut-off body is replaced by the 413
            if message["type"] == "http.response.start":
                sent["status"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the edge: one line, no trace, a 500
            if not too_large:
                route = _route(scope)
                _log.error("%s %s failed: %s", scope.get("method"), route, type(exc).__name__)
                if "status" not in sent:
                    await _plain(scope, send, 500, "internal error")
                    sent["status"] = 500
        if too_large and "status" not in sent:
            await _plain(scope, send, 413, "request body too large")
            sent["status"] = 413
        self._count(scope, sent, started)

    def _count(self, scope: Scope, sent: dict[str, int], started: float) -> None:
        self.metrics.count(
            _route(scope),
            str(scope.get("method", "")),
            sent.get("status", 0),
            time.perf_counter() - started,
        )


async def _plain(scope: Scope, send: Send, code: int, detail: str) -> None:
    """The edge's own error answer (a FHIR ``OperationOutcome`` under ``/fhir``)."""
    if _is_fhir(scope):
        response: Response = fhir.outcome_response(code, detail, None)
    else:
        response = JSONResponse({"detail": detail}, status_code=code)
    if code == 413:
        response.headers["connection"] = "close"

    async def empty() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, empty, send)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "other"


def create_app(
    store: StateStore,
    config: Config | None = None,
    *,
    keys: KeyStore,
    clock: Clock = SYSTEM_CLOCK,
    settings: ServiceSettings | None = None,
    metrics: MetricsObserver | None = None,
    faults: FaultPoints = NO_FAULTS,
    on_close: Callable[[], None] | None = None,
) -> FastAPI:
    """The weightstream HTTP service over ``store`` (see the module docstring).

    ``on_close`` runs after the last reading is committed at shutdown (the serve command
    closes the store and the key table there: uvicorn ends the process by the signal it got,
    so nothing after ``Server.run`` is sure to run).
    """
    config = config or Config()
    settings = settings or ServiceSettings()
    metrics = metrics or MetricsObserver(known_sources=config.sources.multipliers)
    http_metrics = _HttpMetrics(metrics.registry)
    observer = Observers([metrics, LogObserver()])
    processor = Processor(store, config, clock=clock, observer=observer, faults=faults)
    committer = GroupCommitter(
        processor,
        linger_s=settings.group_linger_s,
        max_readings=settings.group_max_readings,
        inline_max=settings.group_inline_max,
        retries=settings.commit_retries,
        on_group=lambda size, _seconds: http_metrics.group.observe(size),
        shared=settings.shared_store,
    )
    service = Service(processor, committer, keys, settings, observer)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await committer.prepare()
        committer.start()
        try:
            with long_lived_heap(settings.gc_young):
                yield
        finally:
            await committer.close()
            if on_close is not None:
                on_close()

    app = _App(
        title="weightstream",
        summary="Per-user body-weight trajectories: readings in, filtered weights out.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.keys = keys
    app.include_router(routes_v1.router)
    app.include_router(fhir.router)
    app.include_router(report_ui.router())  # /ui/: the report, live (read scope)
    _add_probes(app, service, metrics)
    _add_error_handlers(app)
    app.add_middleware(_Edge, max_body=settings.max_body_bytes, metrics=http_metrics)
    app.ingress = Ingress(
        service,
        keys,
        max_body=settings.max_body_bytes,
        handler_of=lambda exc: _handler_of(app, exc),
        plain=_plain,
        count=lambda method, status, seconds: http_metrics.count(
            INGRESS_PATH, method, status, seconds
        ),
        route=next(
            r
            for r in routes_v1.router.routes
            if getattr(r, "path", None) == INGRESS_PATH and "POST" in getattr(r, "methods", ())
        ),
    )
    return app


def _handler_of(app: FastAPI, exc: Exception) -> Callable[[Request, Exception], Any] | None:
    """The app's exception handler for ``exc`` (by its classes, most specific first), as
    Starlette's exception middleware looks it up."""
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler
    return None


class _App(FastAPI):
    """FastAPI, with ``POST /v1/measurements`` served before its layers
    (:mod:`weightstream.service.ingress`)."""

    ingress: Ingress | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ingress = self.ingress
        if ingress is not None and ingress.serves(scope):
            scope["app"] = self  # as Starlette sets it (an exception handler may read it)
            await ingress(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _add_probes(app: FastAPI, service: Service, metrics: MetricsObserver) -> None:
    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is up and answering."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness",
        responses={503: {"description": "Not ready: store unreachable or shutting down."}},
    )
    async def readyz(request: Request) -> JSONResponse:
        """The store answers through the store thread and the writer takes readings."""
        svc = service_of(request)
        breaker = str(svc.processor.breaker.state)
        if svc.committer.closing:
            return JSONResponse(
                {"status": "shutting_down", "store": "unknown", "breaker": breaker}, 503
            )
        try:
            await svc.committer.read(lambda: svc.processor.store.position("readyz"))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            _log.warning("readiness: store query failed: %s", type(exc).__name__)
            return JSONResponse(
                {"status": "unavailable", "store": "error", "breaker": breaker}, 503
            )
        return JSONResponse({"status": "ready", "store": "ok", "breaker": breaker})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        """Counters, gauges and histograms in the Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    del service


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return _error(request, 422, _field_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and not _is_fhir(request):
            # FastAPI's answer to a body it cannot decode (not UTF-8): a malformed body is
            # 422 here, as a body that is not JSON is.
            error = {"loc": ["body"], "msg": "the body is not valid JSON", "type": "json_invalid"}
            return _error(request, 422, [error])
        return _error(request, exc.status_code, exc.detail, dict(exc.headers or {}))

    async def typed(request: Request, exc: Exception) -> Response:
        code, message = _status_of(exc)
        _log.warning("%s %s: %s", request.method, _route(request.scope), type(exc).__name__)
        return _error(request, code, message, _RETRY_AFTER if code == 503 else None)

    for cls in (WeightstreamError, ServiceClosing, RequestFailed):
        app.add_exception_handler(cls, typed)
