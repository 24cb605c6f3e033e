"""Exact conversions between frozen values and flat rows (SQLite, PostgreSQL).

Times are integer microseconds since the epoch (no float rounding); floats are stored as
IEEE doubles, so a state read back is equal, bit for bit, to the one written. The buffer is a
compact JSON array (``repr`` of a float round-trips exactly through ``json``). A result's
quality components are JSON text, written by a hand-made encoder in the common case (see
``_components_json``) that gives exactly ``json.dumps``'s text.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from weightstream.errors import StateCorruptionError
from weightstream.model import (
    AdaptationState,
    AuditOutcome,
    BufferedReading,
    KalmanState,
    Measurement,
    Reason,
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
from weightstream.store import strict
from weightstream.store.columns import READINGS, RESULTS, STATES

__all__ = [
    "STATE_COLUMNS",
    "state_to_row",
    "row_to_state",
    "READING_COLUMNS",
    "reading_to_row",
    "row_to_reading",
    "RESULT_COLUMNS",
    "COMPONENT_NAMES",
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


STATE_COLUMNS = STATES.names


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
    """The state in a stored row; a row that does not decode raises StateCorruptionError.

    Decoding is strict, because SQLite keeps whatever type it is given: every integer column
    must hold an integer (a version of at least 1, counts not negative, times within the
    datetime range), every float column a number or NULL (NULL is how SQLite stores a NaN: it
    reads back as NaN), flags 0 or 1, reset types known names, the buffers JSON lists of
    ``[time, weight, source]``. The error names the field, never its value. What decodes may
    still be invalid (NaN, an infinite weight, P not positive definite): the validator's
    checks come after, in :func:`weightstream.repair.load_checked`, which raises the same
    error.
    """
    values = tuple(row)
    if len(values) != len(STATE_COLUMNS):
        raise StateCorruptionError(
            f"stored state row has {len(values)} columns, expected {len(STATE_COLUMNS)}",
            operation="load_state",
        )
    user_id, version = values[0], values[1]
    try:
        return _decode_state(values)
    except strict.Bad as bad:
        raise StateCorruptionError(
            f"stored state does not decode: {bad.field}: {bad.why}",
            user_id=user_id if isinstance(user_id, str) else None,
            operation="load_state",
            stored_version=version,
        ) from None


def _decode_state(values: tuple[Any, ...]) -> UserState:
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
    ) = values
    if not isinstance(user_id, str) or not user_id:
        raise strict.Bad("user_id", "not a non-empty text")
    kalman = None
    if strict.flag(has_kalman, "has_kalman"):
        kalman = KalmanState(
            x=(strict.number(x0, "x0"), strict.number(x1, "x1")),
            P=(
                (strict.number(p00, "p00"), strict.number(p01, "p01")),
                (strict.number(p10, "p10"), strict.number(p11, "p11")),
            ),
            timestamp=strict.time(kalman_ts, "kalman_ts"),
        )
    return UserState(
        user_id=user_id,
        kalman=kalman,
        adaptation=AdaptationState(
            is_adapting=strict.flag(adapting, "adapting"),
            adaptation_start=strict.opt_time(adapt_start, "adapt_start"),
            adaptation_factor=strict.number(adapt_factor, "adapt_factor"),
            measurements_since_reset=strict.count(adapt_n, "adapt_n"),
            reset_type=strict.reset_type(adapt_type, "adapt_type"),
        ),
        buffer=_unpack_stored(buffer, "buffer"),
        rejected=_unpack_stored(rejected, "rejected"),
        last_accepted_at=strict.opt_time(last_accepted, "last_accepted"),
        last_event_at=strict.opt_time(last_event, "last_event"),
        last_reset_at=strict.opt_time(last_reset, "last_reset"),
        last_reset_type=strict.reset_type(last_reset_type, "last_reset_type"),
        accepted_count=strict.count(accepted_count, "accepted_count"),
        version=strict.version(version),
    )


def _unpack_stored(text: Any, name: str) -> tuple[BufferedReading, ...]:
    if not isinstance(text, str):
        raise strict.Bad(name, f"{strict.kind(text)} where JSON text must be")
    try:
        items = json.loads(text)
    except ValueError:
        raise strict.Bad(name, "not JSON") from None
    if not isinstance(items, list):
        raise strict.Bad(name, "JSON that is not a list")
    out = []
    for item in items:
        # [time, weight, source], since the copy rules also [unit, value, reading id], and
        # since offsets also the offset when it is not 0
        if not (
            isinstance(item, list)
            and len(item) in (3, 6, 7)
            and isinstance(item[2], str)
            and all(isinstance(v, str) for v in item[3:4] + item[5:6])
        ):
            raise strict.Bad(
                name, "an entry that is not [time, weight, source(, unit, value, id(, offset))]"
            )
        if len(item) == 3:
            t, w, source = item
            out.append(BufferedReading(strict.time(t, name), strict.number(w, name), source))
        else:
            t, w, source, unit, value, reading_id = item[:6]
            out.append(
                BufferedReading(
                    strict.time(t, name),
                    strict.number(w, name),
                    source,
                    unit=unit,
                    value=None if value is None else strict.number(value, name),
                    reading_id=reading_id,
                    offset_kg=strict.number(item[6], name) if len(item) == 7 else 0.0,
                )
            )
    return tuple(out)


def _pack(readings: tuple[BufferedReading, ...]) -> str:
    # orjson: about 15 times faster than json.dumps here (a group writes a buffer of up to 20
    # entries for each of its users), and reads back the same numbers. A text orjson refuses
    # (a lone surrogate, which Python strings may hold) is written by json instead.
    entries = [_packed(b) for b in readings]
    try:
        return orjson.dumps(entries).decode()
    except orjson.JSONEncodeError:
        return json.dumps(entries, separators=(",", ":"))


def _packed(b: BufferedReading) -> list[Any]:
    if b.offset_kg:
        return [
            to_micros(b.timestamp),
            b.weight_kg,
            b.source,
            b.unit,
            b.value,
            b.reading_id,
            b.offset_kg,
        ]
    if b.value is None and not b.unit and not b.reading_id:  # as before the copy rules
        return [to_micros(b.timestamp), b.weight_kg, b.source]
    return [to_micros(b.timestamp), b.weight_kg, b.source, b.unit, b.value, b.reading_id]


READING_COLUMNS = READINGS.names


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
        m.offset_kg,
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
        offset,
    ) = tuple(row)
    when = from_micros(ts)
    m = Measurement(
        key, user_id, when, float(value), unit, float(weight_kg), source, content, float(offset)
    )
    # The history keeps the offset a reading was decided with (0: none); its result shows
    # none for 0, not knowing whether offsets were configured then.
    r_offset = m.offset_kg or None
    r = Result(
        reading_id=key,
        user_id=user_id,
        verdict=Verdict(verdict),
        reason=_known(_REASONS, reason, "reason", "reading", user_id, key),
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
        offset_kg=r_offset,
    )
    return m, r


#: A result row: the input's id text where the table keeps its number (``inputs.ref``).
RESULT_COLUMNS = ("input_id", *RESULTS.names[1:])
#: The quality components the processor gives, stored as three numbers; any other set of
#: components is stored as JSON in ``quality_components``.
COMPONENT_NAMES = ("innovation", "rate", "source")


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
        *_components(r.quality_components),
        r.offset_kg,
    )


def _components(components: tuple[tuple[str, float], ...]) -> tuple[Any, Any, Any, Any]:
    """(innovation, rate, source, None) for the usual components; else Nones and the JSON."""
    if len(components) == 3:  # unrolled: this runs for every result decided one by one
        (n0, v0), (n1, v1), (n2, v2) = components
        if (
            (n0, n1, n2) == COMPONENT_NAMES
            and type(v0) is float
            and type(v1) is float
            and type(v2) is float
        ):
            return (v0, v1, v2, None)
    if not components:
        return (None, None, None, None)
    return (None, None, None, _components_json(components))


_PLAIN_NAMES = frozenset(COMPONENT_NAMES)


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
        q_innovation,
        q_rate,
        q_source,
        components,
        offset,
    ) = tuple(row)
    return Result(
        reading_id=reading_id,
        user_id=user_id,
        verdict=Verdict(verdict),
        reason=_known(_REASONS, reason, "reason", "result", user_id, reading_id),
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
        quality_components=_decoded_components(q_innovation, q_rate, q_source, components),
        offset_kg=offset,
    )


def _decoded_components(
    innovation: Any, rate: Any, source: Any, text: Any
) -> tuple[tuple[str, float], ...]:
    if text:
        return tuple((n, v) for n, v in json.loads(text))
    if innovation is None:
        return ()
    return (("innovation", innovation), ("rate", rate), ("source", source))


def _s(value: object | None) -> str | None:
    return None if value is None else str(value)


def _reset_type(value: str | None) -> ResetType | None:
    return None if value is None else ResetType(value)


def _outcome(value: str | None) -> ResetOutcome | None:
    return None if value is None else ResetOutcome(value)


_E = TypeVar("_E", bound=StrEnum)


def _members(kind: type[_E]) -> dict[str, _E]:
    return {member.value: member for member in kind}


# A dict lookup: ``Reason(text)`` costs a microsecond, and history is decoded row by row.
_REASONS = _members(Reason)
_AUDIT_OUTCOMES = _members(AuditOutcome)


def _known(members: dict[str, _E], value: Any, field: str, record: str, user: Any, read: Any) -> _E:
    """The member whose value is ``value``; a stored code that is not one is corruption."""
    member = members.get(value) if isinstance(value, str) else None
    if member is None:
        raise StateCorruptionError(
            f"stored {record} does not decode: {field}: not a known code",
            user_id=user if isinstance(user, str) else None,
            reading_id=read if isinstance(read, str) else None,
            operation=f"load_{record}",
        )
    return member


def audit_to_row(a: ResetAudit) -> tuple[Any, ...]:
    return (
        a.user_id,
        a.reading_id,
        str(a.reset_type),
        a.trigger,
        str(a.outcome),
        a.failed_operation,
        a.reason,
        a.duration_s,
        to_micros(a.at),
        _s(a.fallback),
        _checkpoints_json(a.checkpoints),
    )


def _checkpoints_json(checkpoints: Any) -> str:
    """An audit's checkpoints as stored: JSON pairs (operation, passed). Nearly every audit
    has one of a few lists (the four operations passed; none, unchecked), so each text is
    made once; a list given by hand (not hashable) is made on the spot."""
    try:
        return _known_checkpoints(checkpoints)
    except TypeError:
        return _pairs_json(checkpoints)


def _pairs_json(checkpoints: Any) -> str:
    return json.dumps([[op, ok] for op, ok in checkpoints])


_known_checkpoints = functools.lru_cache(maxsize=256)(_pairs_json)


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
        outcome=_known(_AUDIT_OUTCOMES, outcome, "outcome", "audit", user_id, reading_id),
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
