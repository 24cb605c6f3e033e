"""The ``/v1`` routes: readings in, estimates, history, resets and recovery out.

Each route is a thin shell: readings go through :mod:`weightstream.service.readings` (the CSV
rules) and the group commit (:mod:`weightstream.service.commit`: the file engine's and the
processor's own paths); queries call the store's and the processor's public methods on the
store thread. No decision about a reading is made here.

``POST /v1/measurements`` is the service's hot path (thousands of requests a second): the app
serves it before FastAPI's layers (:mod:`weightstream.service.ingress`) with this module's
:func:`parse_body` (the body validated straight from its bytes with the same pydantic type
FastAPI would use) and :func:`measurements_answer` (the endpoint's work; its answer encoded
with orjson). The route is declared like the others, so its OpenAPI operation (body schema,
security, answers) is unchanged; a request that reaches it all the same (the app mounted
under a prefix) skips FastAPI's generic per-request argument solving (:class:`_DirectRoute`):
the key (:func:`authorize`, the check the other routes' dependency makes), the body, the
endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from email.message import Message
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Discriminator, Field, Tag, TypeAdapter, ValidationError

from weightstream.errors import StateCorruptionError
from weightstream.model import Measurement, Result, to_micros
from weightstream.service.auth import authorize, require
from weightstream.service.commit import Answer
from weightstream.service.keys import Scope
from weightstream.service.readings import (
    BatchIn,
    ReadingIn,
    ResultsOut,
    results_body,
    to_readings,
)
from weightstream.service.state import Service, service_of
from weightstream.smooth import SmoothedReading, smooth_rows
from weightstream.store.base import HistoryRow

__all__ = ["router", "decide", "parse_body", "measurements_answer"]

router = APIRouter(prefix="/v1", tags=["v1"])

_read = Depends(require(Scope.READ))
_write = Depends(require(Scope.WRITE))


def _kind(body: Any) -> str:
    return "batch" if isinstance(body, dict) and "readings" in body else "one"


MeasurementsBody = Annotated[
    Annotated[ReadingIn, Tag("one")] | Annotated[BatchIn, Tag("batch")],
    Discriminator(_kind),
]
UserId = Annotated[str, Path(min_length=1, max_length=512, description="The user's id.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key."},
    403: {"description": "The key lacks the scope."},
    413: {"description": "Body or batch too large."},
    422: {"description": "Malformed request (per-field errors)."},
    503: {"description": "Storage unavailable or shutting down; retry."},
}


async def decide(service: Service, readings: list[Measurement | Result]) -> list[Answer]:
    """Results for ``readings`` (valid ones decided and committed; invalid ones as they are)."""
    valid = [m for m in readings if isinstance(m, Measurement)]
    decided = iter(await service.committer.submit(valid))
    out: list[Answer] = []
    for item in readings:
        if isinstance(item, Measurement):
            out.append(next(decided))
        else:
            service.observer.reading_processed(item, 0.0)
            out.append(item)
    return out


_BODY: TypeAdapter[ReadingIn | BatchIn] = TypeAdapter(MeasurementsBody)


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would read a body of this content type as JSON."""
    if content_type is None:
        return False
    if content_type == "application/json" or content_type.startswith("application/json;"):
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def parse_body(raw: bytes, content_type: str | None) -> ReadingIn | BatchIn:
    """The body of ``POST /v1/measurements``, validated as FastAPI validates a body parameter
    (errors located under ``body``); a non-JSON content type is validated as raw bytes (and
    refused), as FastAPI does.

    A body is parsed by orjson and validated by the union's member that the discriminator
    picks (:class:`BatchIn` or :class:`ReadingIn`): for a batch a quarter of what validating
    the union from JSON costs per reading, whose callable discriminator makes pydantic build
    every object twice; for one reading about 3 us less than the union from JSON, and the JSON
    is read once, not twice. Any body that this refuses is validated the whole way again, so
    the errors are the union's (``tests/service/test_ingress.py`` holds the two together).
    """
    try:
        if not raw:
            return _BODY.validate_python(None)
        if _is_json(content_type):
            body = _fast_body(raw)
            return body if body is not None else _BODY.validate_json(raw)
        return _BODY.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _fast_body(raw: bytes) -> ReadingIn | BatchIn | None:
    """``raw`` as a valid batch or reading; None for anything else (not JSON, invalid)."""
    if not raw.lstrip().startswith(b"{"):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    try:
        if _kind(data) == "batch":
            batch = BatchIn.model_validate(data)
            readings = batch.readings
            body: ReadingIn | BatchIn = batch
        else:
            reading = ReadingIn.model_validate(data)
            readings, body = [reading], reading
    except ValidationError:
        return None
    for r in readings:
        # orjson reads an integer past 64 bits as a float; pydantic keeps it an int.
        if _huge(r.timestamp) or _huge(r.weight):
            return None
    return body


def _huge(value: object) -> bool:
    return isinstance(value, float) and abs(value) >= 2.0**63


class _DirectRoute(APIRoute):
    """A route whose request is turned into the endpoint's arguments by hand (see the module
    docstring): the key first (401/403), then the body (422), then the endpoint."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            scopes = authorize(request, Scope.WRITE)
            body = parse_body(await request.body(), request.headers.get("content-type"))
            answer: Response = await endpoint(request, body, scopes)
            return answer

        return handle


async def post_measurements(request: Request, body: MeasurementsBody, _: Any = _write) -> Response:
    """Decide and store readings: one result per reading, in order, once durable.

    Idempotent: a reading already stored (same user, id and content) gets its stored result
    and changes nothing. Readings that break an input rule get ``invalid`` results; the others
    are processed.
    """
    answer = await measurements_answer(service_of(request), body)
    return Response(answer, media_type="application/json")


async def measurements_answer(service: Service, body: ReadingIn | BatchIn) -> bytes:
    """The body of the answer to ``POST /v1/measurements`` (413 for too many readings)."""
    items = body.readings if isinstance(body, BatchIn) else [body]
    if len(items) > service.settings.max_batch:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"at most {service.settings.max_batch} readings per request",
        )
    now = service.clock.now()
    readings = to_readings(items, config=service.config, now=now)
    return results_body(await decide(service, readings))


router.add_api_route(
    "/measurements",
    post_measurements,
    methods=["POST"],
    summary="Process one reading or a batch",
    response_model=None,
    responses={200: {"model": ResultsOut, "description": "One result per reading."}, **_ERRORS},
    route_class_override=_DirectRoute,
)


class EstimateOut(BaseModel):
    """A user's filtered trajectory at its last accepted reading."""

    user_id: str
    weight_kg: float = Field(description="Filtered weight.")
    trend_kg_week: float
    std_kg: float = Field(description="Uncertainty (one standard deviation) of the weight.")
    adapting: bool = Field(description="Whether the filter is adapting after a reset.")
    as_of: datetime = Field(description="Time of the filter state: the last accepted reading.")
    accepted_count: int
    version: int


@router.get(
    "/users/{user_id}/estimate",
    response_model=EstimateOut,
    responses={404: {"description": "No estimate for this user."}, **_ERRORS},
)
async def get_estimate(request: Request, user_id: UserId, _: Any = _read) -> EstimateOut:
    """The user's filtered weight, trend per week, uncertainty and adaptation. Reads only."""
    service = service_of(request)
    try:
        est = await service.committer.read(lambda: service.estimate(user_id))
    except StateCorruptionError:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "the stored state of this user is corrupt; it is rebuilt when its next reading "
            "is processed, or by POST /v1/users/{user_id}/recover",
        ) from None
    if est is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no estimate for this user")
    return EstimateOut(
        user_id=est.user_id,
        weight_kg=est.weight_kg,
        trend_kg_week=est.trend_kg_week,
        std_kg=est.std_kg,
        adapting=est.adapting,
        as_of=est.timestamp,
        accepted_count=est.accepted_count,
        version=est.version,
    )


class MeasurementOut(BaseModel):
    """A stored reading with its current result."""

    seq: int
    reading_id: str
    timestamp: datetime
    value: float
    unit: str
    weight_kg: float
    source: str
    verdict: str
    reason: str
    message: str
    filtered_weight: float | None
    trend_kg_week: float | None
    std_kg: float | None
    reset_type: str | None
    reset_outcome: str | None
    quality: float | None
    smoothed_weight: float | None = Field(
        description="Fixed-interval (RTS) smoothed weight from all the user's readings; "
        "accepted readings only."
    )
    smoothed_std: float | None
    smoothed_trend_kg_week: float | None


class MeasurementsPage(BaseModel):
    """One page of a user's history, oldest first; ``next`` is the cursor of the next page."""

    user_id: str
    items: list[MeasurementOut]
    next: int | None


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _aware(when: datetime | None) -> datetime | None:
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


@router.get(
    "/users/{user_id}/measurements",
    response_model=MeasurementsPage,
    responses={404: {"description": "No stored readings for this user."}, **_ERRORS},
)
async def get_measurements(
    request: Request,
    user_id: UserId,
    since: Annotated[datetime | None, Query(description="From this time (inclusive).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (exclusive).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    after: Annotated[
        int | None, Query(ge=0, description="Cursor: `next` of the last page.")
    ] = None,
    _: Any = _read,
) -> MeasurementsPage:
    """The user's stored readings with verdicts, filtered and smoothed values, paged."""
    service = service_of(request)
    start, end = _aware(since), _aware(until)

    def history() -> tuple[list[HistoryRow], list[SmoothedReading]]:
        rows = service.processor.store.history(user_id)
        return rows, smooth_rows(rows, service.config)

    rows, smoothed = await service.committer.read(history)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no stored readings for this user")
    smooth_of = {row.seq: s for row, s in zip(rows, smoothed, strict=True)}
    lo = to_micros(start) if start is not None else None
    hi = to_micros(end) if end is not None else None
    picked = []
    for row in rows:
        t = to_micros(row.measurement.timestamp)
        if (lo is not None and t < lo) or (hi is not None and t >= hi):
            continue
        if after is not None and row.seq <= after:
            continue
        picked.append(row)
    picked.sort(key=lambda r: r.seq)
    page = picked[:limit]
    items = [
        MeasurementOut(
            seq=row.seq,
            reading_id=row.measurement.reading_id,
            timestamp=row.measurement.timestamp,
            value=row.measurement.value,
            unit=row.measurement.unit,
            weight_kg=row.measurement.weight_kg,
            source=row.measurement.source,
            verdict=str(row.result.verdict),
            reason=str(row.result.reason),
            message=row.result.message,
            filtered_weight=row.result.filtered_weight,
            trend_kg_week=row.result.trend_kg_week,
            std_kg=row.result.std_kg,
            reset_type=None if row.result.reset_type is None else str(row.result.reset_type),
            reset_outcome=(
                None if row.result.reset_outcome is None else str(row.result.reset_outcome)
            ),
            quality=row.result.quality,
            smoothed_weight=_finite(smooth_of[row.seq].smoothed_weight),
            smoothed_std=_finite(smooth_of[row.seq].smoothed_std),
            smoothed_trend_kg_week=_finite(smooth_of[row.seq].smoothed_trend_kg_week),
        )
        for row in page
    ]
    more = len(picked) > limit
    return MeasurementsPage(user_id=user_id, items=items, next=page[-1].seq if more else None)


class ResetOut(BaseModel):
    """One reset transaction from the audit record."""

    reading_id: str
    type: str
    trigger: str
    outcome: str
    fallback: str | None
    failed_operation: str | None
    reason: str | None
    duration_ms: float
    at: datetime


@router.get("/users/{user_id}/resets", response_model=list[ResetOut], responses=_ERRORS)
async def get_resets(request: Request, user_id: UserId, _: Any = _read) -> list[ResetOut]:
    """The user's reset transactions (committed, rolled back, refused), oldest first."""
    service = service_of(request)
    audits = await service.committer.read(lambda: service.processor.store.audits(user_id=user_id))
    return [
        ResetOut(
            reading_id=a.reading_id,
            type=str(a.reset_type),
            trigger=a.trigger,
            outcome=str(a.outcome),
            fallback=None if a.fallback is None else str(a.fallback),
            failed_operation=a.failed_operation,
            reason=a.reason,
            duration_ms=a.duration_s * 1000,
            at=a.at,
        )
        for a in audits
    ]


class RecoverOut(BaseModel):
    """What a rebuild from history found, and whether it was stored."""

    user_id: str
    readings: int = Field(description="Stored readings replayed.")
    changed: int = Field(description="Results the rebuild would change.")
    differences: list[str] = Field(description="State fields that differ (names only).")
    applied: bool
    version: int | None


@router.post(
    "/users/{user_id}/recover",
    response_model=RecoverOut,
    responses={404: {"description": "No stored readings for this user."}, **_ERRORS},
)
async def post_recover(
    request: Request,
    user_id: UserId,
    dry_run: Annotated[bool, Query(description="Only compare; store nothing.")] = False,
    _: Any = _write,
) -> RecoverOut:
    """Rebuild the user's state by replaying its stored history; store it unless dry_run."""
    service = service_of(request)
    outcome = await service.committer.read(lambda: service.recover(user_id, apply=not dry_run))
    if outcome is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no stored readings for this user")
    return RecoverOut(**outcome)
