"""One raw CSV row to a :class:`~weightstream.model.Measurement`, or the reason it is not one.

Policy
------
The checks run in a fixed order and the *first* failing one is reported, so a row with several
bad fields always gets the same reason:

1. user: an empty or null (``NULL``, ``NA``...) user id is ``MISSING_USER``;
2. timestamp: :func:`~weightstream.ingest.timestamps.parse_timestamp`;
3. weight: :func:`~weightstream.ingest.numbers.parse_number`;
4. unit: :func:`~weightstream.ingest.units.to_kg` (an empty or absent unit is kg);
5. range: the weight *in kg* must lie within ``ValidationConfig.min_weight_kg`` ..
   ``max_weight_kg`` (inclusive), else ``OUT_OF_RANGE``. The check is after the conversion, so
   ``176 lb`` passes and ``176 kg`` is judged as 176 kg.

A :class:`~weightstream.ingest.csv_reader.MalformedRow` gives its own ``MALFORMED_ROW``
problem, so every item a :class:`~weightstream.ingest.csv_reader.CsvInput` yields can be passed
here.

The fields of the result: ``user_id``, ``unit`` and ``source`` are trimmed of ASCII
whitespace; an empty or null source is ``"unknown"``; an absent unit column gives ``unit ""``;
``value`` is the number as given and ``weight_kg`` the converted one. ``reading_id`` is the
``id`` column when present and not empty or null, else
:func:`~weightstream.model.content_key` of (user, timestamp, value, unit, source).

Readings built in code
----------------------
:func:`validate_reading` applies the same checks, in the same order and with the same reasons,
to a :class:`~weightstream.model.Measurement` built in code (``Processor.process_one``, the
HTTP service): its fields are values, not texts, so a value of the wrong type is refused with
the reason of the field (a text weight is ``NOT_A_NUMBER``, a ``date`` or a text time
``BAD_TIMESTAMP``, a user id that is not a text ``MISSING_USER``), never parsed, and never a
raw ``TypeError``. Then, as for a row: the user id, unit and source are trimmed, a null
source is ``"unknown"``, a null id gives the content key, a naive time is UTC and an aware one
is converted to UTC; ``value`` must be a finite positive number and ``weight_kg`` must be
``value`` converted from ``unit`` exactly as :func:`~weightstream.ingest.units.to_kg` does
(``INCONSISTENT_WEIGHT`` otherwise, checked after the range). The CSV path does not call it:
:func:`parse_row` has already applied every one of these checks to the texts, and a
Measurement built from its fields passes unchanged (the tests hold both to the same verdicts).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Final

from weightstream.config import Config
from weightstream.ingest._problem import ASCII_WHITESPACE, NULL_TOKENS, RowProblem
from weightstream.ingest.csv_reader import MalformedRow, RawRow
from weightstream.ingest.numbers import check_number, parse_number
from weightstream.ingest.timestamps import TimestampParser, parse_timestamp
from weightstream.ingest.units import to_kg
from weightstream.model import Measurement, Reason, Result, Verdict, content_key

__all__ = [
    "to_measurement",
    "parse_row",
    "measurement_of",
    "validate_reading",
    "invalid_result",
    "ParsedRow",
    "UNKNOWN_SOURCE",
]

#: The source of a row whose source is absent, empty or null.
UNKNOWN_SOURCE: Final = "unknown"

_MISSING_USER: Final = RowProblem(Reason.MISSING_USER, "user_id", "user id is empty or null")


#: The fields of a valid row, before it becomes a Measurement: (id or None, user, time, value,
#: unit, weight_kg, source). ``id`` is None when the row has none (the reading id is then the
#: content key). Kept as a plain tuple so a whole file of them is cheap to hold and sort.
ParsedRow = tuple[str | None, str, datetime, float, str, float, str]


def to_measurement(
    raw: RawRow | MalformedRow, *, config: Config, now: datetime
) -> Measurement | RowProblem:
    """The valid reading in ``raw``, or the first :class:`RowProblem` in the fixed order.

    ``now`` bounds timestamps in the future (``ValidationConfig.max_future_skew_s``).

    >>> from datetime import UTC
    >>> row = RawRow(2, "u1", "2025-01-22 13:03:37", "176.37", "lb", "patient-device", None)
    >>> m = to_measurement(row, config=Config(), now=datetime(2025, 3, 1, tzinfo=UTC))
    >>> m.user_id, m.unit, round(m.weight_kg, 3), m.reading_id.startswith("h:")
    ('u1', 'lb', 80.0, True)
    >>> bad = RawRow(3, "u1", "2025-01-22", "85", "kg/m2", "", None)
    >>> to_measurement(bad, config=Config(), now=datetime(2025, 3, 1, tzinfo=UTC)).reason.value
    'unit_is_bmi'
    """
    fields = parse_row(raw, config=config, now=now)
    if isinstance(fields, RowProblem):
        return fields
    return measurement_of(fields)


def measurement_of(fields: ParsedRow) -> Measurement:
    """The :class:`Measurement` of a parsed row (its content key computed here, once)."""
    ident, user, when, value, unit, weight_kg, source = fields
    content = content_key(user, when, value, unit, source)
    return Measurement(
        reading_id=ident or content,
        user_id=user,
        timestamp=when,
        value=value,
        unit=unit,
        weight_kg=weight_kg,
        source=source,
        content_key=content,
    )


def parse_row(
    raw: RawRow | MalformedRow, *, config: Config, now: datetime
) -> ParsedRow | RowProblem:
    """The checks of :func:`to_measurement`, returning the fields instead of a Measurement."""
    if isinstance(raw, MalformedRow):
        return raw.problem
    user = raw.user_id.strip(ASCII_WHITESPACE)
    if len(user) <= 4 and user.lower() in NULL_TOKENS:
        return _MISSING_USER
    limits = config.validation
    when = parse_timestamp(raw.timestamp, now=now, config=limits)
    if isinstance(when, RowProblem):
        return when
    value = parse_number(raw.weight)
    if isinstance(value, RowProblem):
        return value
    unit = "" if raw.unit is None else raw.unit.strip(ASCII_WHITESPACE)
    weight_kg = to_kg(value, unit, config.units)
    if isinstance(weight_kg, RowProblem):
        return weight_kg
    if not limits.min_weight_kg <= weight_kg <= limits.max_weight_kg:
        return _out_of_range(limits.min_weight_kg, limits.max_weight_kg)
    source = _text_or(raw.source, UNKNOWN_SOURCE)
    return (_text_or(raw.id, "") or None, user, when, value, unit, weight_kg, source)


def validate_reading(m: Measurement, *, config: Config, now: datetime) -> Measurement | RowProblem:
    """``m`` as a valid reading (normalised as a row would be), or the first problem.

    The rules of :func:`parse_row`, for a Measurement built in code (see the module docstring).
    Returns ``m`` itself when it is already normalised.

    >>> from datetime import UTC
    >>> now = datetime(2025, 3, 1, tzinfo=UTC)
    >>> m = Measurement("r1", "u1", datetime(2025, 1, 22), 80.0, "kg", 80.0, "scale")
    >>> validate_reading(m, config=Config(), now=now).timestamp.tzinfo is UTC
    True
    >>> bad = Measurement("r2", "u1", datetime(2999, 1, 1, tzinfo=UTC), 80.0, "kg", 80.0, "s")
    >>> validate_reading(bad, config=Config(), now=now).reason.value
    'timestamp_in_future'
    """
    raw_user = m.user_id
    if not isinstance(raw_user, str):
        return _USER_NOT_TEXT
    user = raw_user.strip(ASCII_WHITESPACE)
    if len(user) <= 4 and user.lower() in NULL_TOKENS:
        return _MISSING_USER
    limits = config.validation
    when = TimestampParser(now=now, config=limits).instant(m.timestamp)
    if isinstance(when, RowProblem):
        return when
    value = check_number(m.value)
    if isinstance(value, RowProblem):
        return value
    if not isinstance(m.unit, str):
        return _UNIT_NOT_TEXT
    unit = m.unit.strip(ASCII_WHITESPACE)
    weight_kg = to_kg(value, unit, config.units)
    if isinstance(weight_kg, RowProblem):
        return weight_kg
    if not limits.min_weight_kg <= weight_kg <= limits.max_weight_kg:
        return _out_of_range(limits.min_weight_kg, limits.max_weight_kg)
    given = check_number(m.weight_kg)
    if isinstance(given, RowProblem) or not math.isclose(given, weight_kg, rel_tol=1e-9):
        return _INCONSISTENT
    if not isinstance(m.source, str):
        return _SOURCE_NOT_TEXT
    if not isinstance(m.reading_id, str):
        return _ID_NOT_TEXT
    source = _text_or(m.source, UNKNOWN_SOURCE)
    ident = _text_or(m.reading_id, "") or None
    if (
        user == m.user_id
        and when == m.timestamp
        and when.tzinfo is m.timestamp.tzinfo
        and type(m.value) is float
        and unit == m.unit
        and weight_kg == m.weight_kg
        and source == m.source
        and ident == m.reading_id
        and m.content_key
    ):
        return m
    return measurement_of((ident, user, when, value, unit, weight_kg, source))


def invalid_result(m: Measurement, problem: RowProblem, *, row: int | None = None) -> Result:
    """The ``invalid`` result of a reading built in code; its id and user only if they are text.

    The reason is the problem's; the message names the field and never holds a value.
    """
    return Result(
        reading_id=m.reading_id if isinstance(m.reading_id, str) else None,
        user_id=m.user_id if isinstance(m.user_id, str) else None,
        verdict=Verdict.INVALID,
        reason=problem.reason,
        message=f"{problem.field}: {problem.message}",
        row=row,
    )


_USER_NOT_TEXT: Final = RowProblem(Reason.MISSING_USER, "user_id", "user id is not a text")
_UNIT_NOT_TEXT: Final = RowProblem(Reason.UNKNOWN_UNIT, "unit", "unit is not a text")
_SOURCE_NOT_TEXT: Final = RowProblem(Reason.MALFORMED_ROW, "source", "source is not a text")
_ID_NOT_TEXT: Final = RowProblem(Reason.MALFORMED_ROW, "id", "reading id is not a text")
_INCONSISTENT: Final = RowProblem(
    Reason.INCONSISTENT_WEIGHT, "weight", "weight_kg is not the value converted from its unit"
)


def _text_or(text: str | None, default: str) -> str:
    """``text`` trimmed, or ``default`` when it is absent, empty or null."""
    if text is None:
        return default
    body = text.strip(ASCII_WHITESPACE)
    return default if len(body) <= 4 and body.lower() in NULL_TOKENS else body


def _out_of_range(low: float, high: float) -> RowProblem:
    # The message states the limits, never the value (health data).
    return RowProblem(
        Reason.OUT_OF_RANGE,
        "weight",
        f"weight is outside the plausible range {low:g} to {high:g} kg (after unit conversion)",
    )
