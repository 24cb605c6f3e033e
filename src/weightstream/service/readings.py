"""Readings as JSON in, results as JSON out: the shapes of ``/v1`` and their conversion.

A reading in JSON has the fields of an export row (``user_id``, ``timestamp``, ``weight``,
``unit``, ``source``, ``id``), and each is held to the very rules of a CSV row: the JSON value
becomes the text a file would hold (a number as Python writes it) and goes through
:func:`weightstream.ingest.to_measurement`, so a reading gets the same verdict and reason by
HTTP as in a file (invariant I11). A value of the wrong JSON type (a weight that is an object,
a missing ``user_id``) is a malformed request: 422 with per-field errors, before any reading is
decided. A well-formed reading that breaks a rule (``"weight": "72,5"``, a ``kg/m2`` unit, a
date in 2999) is not an error: it gets an ``invalid`` result, and stores nothing, as a
library call does (``Processor.process_one``).

A result in JSON has the fields of the results file
(:data:`weightstream.engine.results.RESULT_FIELDS`); ``row`` is the reading's place in the
request, counted from 1.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from weightstream.config import Config
from weightstream.engine.results import RESULT_FIELDS
from weightstream.ingest import RawRow, RowProblem, to_measurement
from weightstream.model import Measurement, Result, Verdict

__all__ = [
    "ReadingIn",
    "BatchIn",
    "ResultOut",
    "ResultsOut",
    "to_reading",
    "invalid_answer",
    "result_json",
]


class ReadingIn(BaseModel):
    """One weight reading, as a row of an export (see the module docstring)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "scale-0001",
                    "user_id": "u1",
                    "timestamp": "2025-01-22T07:30:00Z",
                    "weight": 81.4,
                    "unit": "kg",
                    "source": "patient-device",
                }
            ]
        },
    )

    id: StrictStr | None = Field(
        default=None, description="The reading's id (idempotency key); else its content is."
    )
    user_id: StrictStr = Field(description="The user the reading belongs to.")
    timestamp: StrictStr | StrictInt | StrictFloat = Field(
        description="ISO 8601 (naive = UTC), or epoch seconds or milliseconds."
    )
    weight: StrictFloat | StrictInt | StrictStr = Field(description="The value, in ``unit``.")
    unit: StrictStr | None = Field(
        default=None, description="kg (default), g, lb, st or a UCUM mass code."
    )
    source: StrictStr | None = Field(default=None, description="The device or channel.")


class BatchIn(BaseModel):
    """Several readings in one request; each gets its own result, in order."""

    model_config = ConfigDict(extra="forbid")

    readings: list[ReadingIn] = Field(min_length=1)


class ResultOut(BaseModel):
    """One reading's result: the fields of the results file."""

    row: int | None
    reading_id: str | None
    user_id: str | None
    verdict: Verdict
    reason: str
    message: str
    timestamp: datetime | None
    source: str | None
    weight_kg: float | None
    filtered_weight: float | None
    trend_kg_week: float | None
    std_kg: float | None
    reset_type: str | None
    reset_outcome: str | None
    quality: float | None


if tuple(ResultOut.model_fields) != RESULT_FIELDS:  # one list of the fields: the results file's
    raise RuntimeError("ResultOut must have the fields of RESULT_FIELDS, in order")


class ResultsOut(BaseModel):
    """The answer to ``POST /v1/measurements``: one result per reading, in request order."""

    results: list[ResultOut]


def _text(value: str | int | float | None) -> str | None:
    """The text a CSV cell would hold for a JSON value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_reading(reading: ReadingIn, *, config: Config, now: datetime) -> Measurement | Result:
    """The valid :class:`Measurement` in ``reading``, or its ``invalid`` :class:`Result`."""
    raw = RawRow(
        0,
        reading.user_id,
        _text(reading.timestamp) or "",
        _text(reading.weight) or "",
        reading.unit,
        reading.source,
        reading.id,
    )
    item = to_measurement(raw, config=config, now=now)
    if isinstance(item, RowProblem):
        return invalid_answer(reading.id, reading.user_id, item)
    return item


def invalid_answer(reading_id: str | None, user_id: str | None, problem: RowProblem) -> Result:
    """The ``invalid`` result of a reading: its reason, a message naming the field, no value."""
    return Result(
        reading_id=reading_id,
        user_id=user_id,
        verdict=Verdict.INVALID,
        reason=problem.reason,
        message=f"{problem.field}: {problem.message}",
    )


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def result_json(r: Result, row: int | None) -> dict[str, Any]:
    """``r`` as a JSON object with the results file's fields (``row``: place in the request)."""
    return {
        "row": row,
        "reading_id": r.reading_id,
        "user_id": r.user_id,
        "verdict": r.verdict.value,
        "reason": str(r.reason),
        "message": r.message,
        "timestamp": None if r.timestamp is None else r.timestamp.isoformat(),
        "source": r.source,
        "weight_kg": _number(r.weight_kg),
        "filtered_weight": _number(r.filtered_weight),
        "trend_kg_week": _number(r.trend_kg_week),
        "std_kg": _number(r.std_kg),
        "reset_type": None if r.reset_type is None else str(r.reset_type),
        "reset_outcome": None if r.reset_outcome is None else str(r.reset_outcome),
        "quality": _number(r.quality),
    }
