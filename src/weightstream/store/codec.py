"""Exact conversions between frozen values and flat rows (SQLite, PostgreSQL).

Times are integer microseconds since the epoch (no float rounding); floats are stored as
IEEE doubles, so a state read back is equal, bit for bit, to the one written. The buffer is a
compact JSON array (``repr`` of a float round-trips exactly through ``json``). A result's
quality components are JSON text, written by a hand-made encoder in the common case (see
``_components_json``) that gives exactly ``json.dumps``'s text.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    Measurement,
    RecoveryAttempt,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
    UserState,
    Verdict,
    from_micros,
    to_micros,
)

__all__ = [
    "STATE_COLUMNS",
    "state_to_row",
    "row_to_state",
    "READING_COLUMNS",
    "reading_to_row",
    "row_to_reading",
    "RESULT_COLUMNS",
    "result_to_row",
    "row_to_result",
    "audit_to_row",
    "row_to_audit",
    "recovery_to_row",
    "row_to_recovery",
    "us",
    "dt",
    "iso",
]


def us(when: datetime | None) -> int | None:
    return None if when is None else to_micros(when)


def dt(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


def iso(micros: int | None) -> str:
    """The results file's time text: ``datetime.isoformat()`` of the stored time, or ``""``."""
    return "" if micros is None else from_micros(micros).isoformat()


STATE_COLUMNS = (
    "user_id",
    "version",
    "has_kalman",
    "x0",
    "x1",
    "p00",
    "p01",
    "p10",
    "p11",
    "kalman_ts",
    "adapting",
    "adapt_start",
    "adapt_factor",
    "adapt_n",
    "adapt_type",
    "buffer",
    "rejected",
    "last_accepted",
    "last_event",
    "last_reset",
    "last_reset_type",
    "accepted_count",
)


def state_to_row(state: UserState) -> tuple[Any, ...]:
    k = state.kalman
    a = state.adaptation
    if k is None:
        kal: tuple[Any, ...] = (0, None, None, None, None, None, None, None)
    else:
        kal = (1, k.x[0], k.x[1], k.P[0][0], k.P[0][1], k.P[1][0], k.P[1][1], us(k.timestamp))
    return (
        state.user_id,
        state.version,
        *kal,
        int(a.is_adapting),
        us(a.adaptation_start),
        a.adaptation_factor,
        a.measurements_since_reset,
        _s(a.reset_type),
        _pack(state.buffer),
        _pack(state.rejected),
        us(state.last_accepted_at),
        us(state.last_event_at),
        us(state.last_reset_at),
        _s(state.last_reset_type),
        state.accepted_count,
    )


def row_to_state(row: tuple[Any, ...] | Any) -> UserState:
    (
        user_id,
        version,
        has_kalman,
        x0,
        x1,
        p00,
        p01,
        p10,
        p11,
        kalman_ts,
        adapting,
        adapt_start,
        adapt_factor,
        adapt_n,
        adapt_type,
        buffer,
        rejected,
        last_accepted,
        last_event,
        last_reset,
        last_reset_type,
        accepted_count,
    ) = tuple(row)
    kalman = None
    if has_kalman:
        kalman = KalmanState(
            x=(_f(x0), _f(x1)),
            P=((_f(p00), _f(p01)), (_f(p10), _f(p11))),
            timestamp=from_micros(kalman_ts),
        )
    return UserState(
        user_id=user_id,
        kalman=kalman,
        adaptation=AdaptationState(
            is_adapting=bool(adapting),
            adaptation_start=dt(adapt_start),
            adaptation_factor=_f(adapt_factor),
            measurements_since_reset=int(adapt_n),
            reset_type=_reset_type(adapt_type),
        ),
        buffer=_unpack(buffer),
        rejected=_unpack(rejected),
        last_accepted_at=dt(last_accepted),
        last_event_at=dt(last_event),
        last_reset_at=dt(last_reset),
        last_reset_type=_reset_type(last_reset_type),
        accepted_count=int(accepted_count),
        version=int(version),
    )


def _pack(readings: tuple[BufferedReading, ...]) -> str:
    return json.dumps(
        [[to_micros(b.timestamp), b.weight_kg, b.source] for b in readings], separators=(",", ":")
    )


def _unpack(text: str) -> tuple[BufferedReading, ...]:
    return tuple(BufferedReading(from_micros(t), float(w), s) for t, w, s in json.loads(text))


def _f(value: Any) -> float:
    """A stored float; NULL (SQLite's NaN) reads back as NaN so the validator catches it."""
    return float("nan") if value is None else float(value)


READING_COLUMNS = (
    "key",
    "content_key",
    "user_id",
    "ts",
    "value",
    "unit",
    "weight_kg",
    "source",
    "verdict",
    "reason",
    "message",
    "filtered_weight",
    "trend_kg_week",
    "std_kg",
    "reset_type",
    "reset_outcome",
    "quality",
)


def reading_to_row(m: Measurement, r: Result) -> tuple[Any, ...]:
    return (
        m.reading_id,
        m.content_key,
        m.user_id,
        to_micros(m.timestamp),
        m.value,
        m.unit,
        m.weight_kg,
        m.source,
        str(r.verdict),
        str(r.reason),
        r.message,
        r.filtered_weight,
        r.trend_kg_week,
        r.std_kg,
        _s(r.reset_type),
        _s(r.reset_outcome),
        r.quality,
    )


def row_to_reading(row: tuple[Any, ...] | Any) -> tuple[Measurement, Result]:
    (
        key,
        content,
        user_id,
        ts,
        value,
        unit,
        weight_kg,
        source,
        verdict,
        reason,
        message,
        filtered,
        trend,
        std,
        reset_type,
        reset_outcome,
        quality,
    ) = tuple(row)
    when = from_micros(ts)
    m = Measurement(key, user_id, when, float(value), unit, float(weight_kg), source, content)
    r = Result(
        reading_id=key,
        user_id=user_id,
        verdict=Verdict(verdict),
        reason=reason,
        message=message,
        timestamp=when,
        source=source,
        weight_kg=float(weight_kg),
        filtered_weight=filtered,
        trend_kg_week=trend,
        std_kg=std,
        reset_type=_reset_type(reset_type),
        reset_outcome=_outcome(reset_outcome),
        quality=quality,
    )
    return m, r


RESULT_COLUMNS = (
    "input_id",
    "row",
    "reading_id",
    "user_id",
    "verdict",
    "reason",
    "message",
    "ts",
    "source",
    "weight_kg",
    "filtered_weight",
    "trend_kg_week",
    "std_kg",
    "reset_type",
    "reset_outcome",
    "quality",
    "quality_components",
)


def result_to_row(input_id: str | None, r: Result) -> tuple[Any, ...]:
    return (
        input_id,
        r.row,
        r.reading_id,
        r.user_id,
        str(r.verdict),
        str(r.reason),
        r.message,
        us(r.timestamp),
        r.source,
        r.weight_kg,
        r.filtered_weight,
        r.trend_kg_week,
        r.std_kg,
        _s(r.reset_type),
        _s(r.reset_outcome),
        r.quality,
        _components_json(r.quality_components) if r.quality_components else None,
    )


_PLAIN_NAMES = frozenset({"innovation", "rate", "source"})


def _components_json(components: tuple[tuple[str, float], ...]) -> str:
    """``json.dumps(components)``, hand-written for the usual case because it runs per result.

    For the processor's own component names and finite floats the text is the same as
    ``json.dumps`` gives (``json`` writes a float as ``float.__repr__``); anything else goes
    through ``json.dumps`` itself.
    """
    parts = []
    for name, value in components:
        if name not in _PLAIN_NAMES or type(value) is not float or not math.isfinite(value):
            return json.dumps(components)
        parts.append(f'["{name}", {value!r}]')
    return "[" + ", ".join(parts) + "]"


def row_to_result(row: tuple[Any, ...] | Any) -> Result:
    (
        _input,
        line,
        reading_id,
        user_id,
        verdict,
        reason,
        message,
        ts,
        source,
        weight_kg,
        filtered,
        trend,
        std,
        reset_type,
        reset_outcome,
        quality,
        components,
    ) = tuple(row)
    return Result(
        reading_id=reading_id,
        user_id=user_id,
        verdict=Verdict(verdict),
        reason=reason,
        message=message,
        row=line,
        timestamp=dt(ts),
        source=source,
        weight_kg=weight_kg,
        filtered_weight=filtered,
        trend_kg_week=trend,
        std_kg=std,
        reset_type=_reset_type(reset_type),
        reset_outcome=_outcome(reset_outcome),
        quality=quality,
        quality_components=tuple((n, v) for n, v in json.loads(components)) if components else (),
    )


def _s(value: object | None) -> str | None:
    return None if value is None else str(value)


def _reset_type(value: str | None) -> ResetType | None:
    return None if value is None else ResetType(value)


def _outcome(value: str | None) -> ResetOutcome | None:
    return None if value is None else ResetOutcome(value)


def audit_to_row(a: ResetAudit) -> tuple[Any, ...]:
    return (
        a.user_id,
        a.reading_id,
        str(a.reset_type),
        a.trigger,
        a.outcome,
        a.failed_operation,
        a.reason,
        a.duration_s,
        to_micros(a.at),
        _s(a.fallback),
        json.dumps([[op, ok] for op, ok in a.checkpoints]),
    )


def row_to_audit(row: tuple[Any, ...] | Any) -> ResetAudit:
    (
        user_id,
        reading_id,
        reset_type,
        trigger,
        outcome,
        failed_op,
        reason,
        duration,
        at,
        fallback,
        checkpoints,
    ) = tuple(row)
    return ResetAudit(
        user_id=user_id,
        reading_id=reading_id,
        reset_type=ResetType(reset_type),
        trigger=trigger,
        outcome=outcome,
        failed_operation=failed_op,
        reason=reason,
        duration_s=duration,
        at=from_micros(at),
        fallback=_outcome(fallback),
        checkpoints=tuple((op, bool(ok)) for op, ok in json.loads(checkpoints)),
    )


def recovery_to_row(a: RecoveryAttempt) -> tuple[Any, ...]:
    return (a.user_id, a.reading_id, a.strategy, int(a.succeeded), a.detail, to_micros(a.at))


def row_to_recovery(row: tuple[Any, ...] | Any) -> RecoveryAttempt:
    user_id, reading_id, strategy, succeeded, detail, at = tuple(row)
    return RecoveryAttempt(user_id, reading_id, strategy, bool(succeeded), detail, from_micros(at))
