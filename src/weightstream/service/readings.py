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
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any, get_type_hints

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, create_model

from weightstream.config import Config
from weightstream.engine.results import RESULT_FIELDS
from weightstream.ingest import RawRow, RowProblem, to_measurement
from weightstream.ingest.rows import parse_row
from weightstream.model import (
    Measurement,
    Result,
    Verdict,
    content_keys,
    from_micros,
    to_micros,
)
from weightstream.store.columns import RESULTS, Kind

__all__ = [
    "ReadingIn",
    "BatchIn",
    "ResultOut",
    "ResultsOut",
    "to_reading",
    "to_readings",
    "invalid_answer",
    "result_json",
    "results_body",
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


def _result_fields() -> dict[str, Any]:
    """The results file's fields, each typed as :class:`Result` types it (``row``: an int)."""
    hints = get_type_hints(Result)
    fields: dict[str, Any] = {}
    for name in RESULT_FIELDS:
        kind = hints[name]
        fields[name] = (kind | None if name == "row" else kind, ...)
    return fields


#: One reading's result: the fields of the results file (:data:`RESULT_FIELDS`), in order.
ResultOut = create_model("ResultOut", __doc__="One reading's result.", **_result_fields())

#: The answer to ``POST /v1/measurements``: one result per reading, in request order.
ResultsOut = create_model("ResultsOut", results=(list[ResultOut], ...))  # type: ignore[valid-type]


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


def to_readings(
    readings: Sequence[ReadingIn], *, config: Config, now: datetime
) -> list[Measurement | Result]:
    """:func:`to_reading` of each of ``readings``, column-wise: the same verdicts and the same
    :class:`Measurement` values, for less CPU per reading in a batch.

    Each reading goes through the CSV rules one by one
    (:func:`weightstream.ingest.rows.parse_row`, the checks of
    :func:`~weightstream.ingest.to_measurement`), and the content keys of the valid ones are
    computed in one call (:func:`weightstream.model.content_keys`, the one definition of a
    key) instead of one call per reading; each Measurement is then built as
    :func:`weightstream.ingest.rows.measurement_of` builds it. ``tests/service/test_readings.py``
    holds the two functions together.
    """
    if len(readings) == 1:
        return [to_reading(readings[0], config=config, now=now)]
    out: list[Measurement | Result] = []
    valid: list[int] = []
    fields: list[tuple[str | None, str, datetime, float, str, float, str]] = []
    for reading in readings:
        raw = RawRow(
            0,
            reading.user_id,
            _text(reading.timestamp) or "",
            _text(reading.weight) or "",
            reading.unit,
            reading.source,
            reading.id,
        )
        parsed = parse_row(raw, config=config, now=now)
        if isinstance(parsed, RowProblem):
            out.append(invalid_answer(reading.id, reading.user_id, parsed))
        else:
            valid.append(len(out))
            out.append(_PENDING)
            fields.append(parsed)
    if not fields:
        return out
    keys = content_keys(
        [f[1] for f in fields],
        [to_micros(f[2]) for f in fields],
        [f[3] for f in fields],
        [f[4] for f in fields],
        [f[6] for f in fields],
    )
    for at, (ident, user, when, value, unit, weight_kg, source), key in zip(
        valid, fields, keys, strict=True
    ):
        out[at] = Measurement(
            reading_id=ident or key,
            user_id=user,
            timestamp=when,
            value=value,
            unit=unit,
            weight_kg=weight_kg,
            source=source,
            content_key=key,
        )
    return out


#: A place held in :func:`to_readings`' answer until the reading's Measurement is built.
_PENDING = Result(reading_id=None, user_id=None, verdict=Verdict.INVALID)


def invalid_answer(reading_id: str | None, user_id: str | None, problem: RowProblem) -> Result:
    """The ``invalid`` result of a reading: its reason, a message naming the field, no value."""
    return Result(
        reading_id=reading_id,
        user_id=user_id,
        verdict=Verdict.INVALID,
        reason=problem.reason,
        message=f"{problem.field}: {problem.message}",
    )


def _json_value(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def result_json(r: Result, row: int | None) -> dict[str, Any]:
    """``r`` as a JSON object with the results file's fields (``row``: place in the request)."""
    return {name: row if name == "row" else _json_value(getattr(r, name)) for name in RESULT_FIELDS}


def results_body(results: Sequence[Result | tuple[Any, ...]]) -> bytes:
    """The answer to ``POST /v1/measurements``: ``{"results": [...]}``, each result as
    :func:`result_json` gives it (``row`` counted from 1), encoded by orjson.

    A result is a :class:`Result`, or a row as the compiled loop stages it
    (:data:`weightstream.service.commit.ResultRow`), read by its columns. The values go to
    orjson as they are, which writes them as :func:`result_json` makes them (enums by value,
    UTC times as ``isoformat`` writes them, a non-finite float as null) at a fraction of the
    cost; ``tests/service/test_answers.py`` holds the two together.
    """
    out = []
    for i, r in enumerate(results, 1):
        if isinstance(r, Result):
            out.append({name: i if name == "row" else getattr(r, name) for name in RESULT_FIELDS})
        else:
            out.append(
                {
                    name: i if name == "row" else (_time(r[at]) if is_time else r[at])
                    for name, at, is_time in _ROW_CELLS
                }
            )
    return orjson.dumps({"results": out})


#: (results-file field, its place in a staged result row, whether it is a time) in file order.
_ROW_CELLS = tuple(
    (c.file, RESULTS.index(c.name), c.kind is Kind.TIME)
    for c in RESULTS.columns
    if c.file is not None
)


def _time(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)
