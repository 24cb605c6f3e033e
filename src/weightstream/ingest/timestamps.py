"""Timestamp texts to aware UTC datetimes, fast, with a stated policy for every odd case.

Policy
------
Accepted forms (after trimming ASCII whitespace):

* ISO 8601 as :meth:`datetime.datetime.fromisoformat` reads it in Python 3.11, with the date and
  time separated by ``T`` or a space: ``2025-01-17T00:00:00Z``,
  ``2025-01-22 13:03:37.883``, ``2025-01-22T13:03:37+02:00``, week dates, any number of
  fractional digits (truncated to microseconds).
* A date alone, ``2025-01-17``: midnight UTC.
* An epoch number: ASCII digits with an optional sign and fraction, no exponent. Seconds and
  milliseconds are told apart by size: a value whose whole part is at least ``1e11`` is in
  milliseconds. ``1e11`` seconds is the year 5138, so no plausible reading in seconds is that
  large, while milliseconds below ``1e11`` are before March 1973 and are read as seconds. An
  all-digit text such as ``20250122`` is therefore an epoch number (1970-08-23), not an ISO
  "basic" date, and so refused by the default floor (``min_year`` 1990), as are ``0`` and
  ``-1``: such values are nearly always a mistake, not a reading from 1970.

Zones: a time without an offset is UTC ("naive = UTC", as the exports are); an offset is applied
(``13:00+02:00`` is 11:00 UTC). The result always carries :data:`datetime.UTC`.

Reason codes: ``MISSING_TIMESTAMP`` for ``None``, empty text and the null words (``NULL``...);
``BAD_TIMESTAMP`` for anything not in the forms above (including non-ASCII digits);
``TIMESTAMP_TOO_OLD`` when the UTC year is before ``ValidationConfig.min_year``;
``TIMESTAMP_IN_FUTURE`` when it is more than ``ValidationConfig.max_future_skew_s`` seconds after
``now``. Messages quote the timestamp text (cut to 40 characters), never a weight.

Speed: the common zone-less text takes one ``fromisoformat`` call, a conversion to UTC by
arithmetic (``datetime.replace(tzinfo=...)`` costs several times more) and two comparisons.
(Appending ``"Z"`` to parse straight to UTC would be faster still, but ``fromisoformat`` then
accepts junk such as ``2025-01-22 13:033``.) Everything else takes the slower path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from weightstream.config import ValidationConfig
from weightstream.ingest._problem import ASCII_WHITESPACE, NULL_TOKENS, RowProblem, quote_short
from weightstream.model import EPOCH, Reason

__all__ = ["parse_timestamp", "TimestampParser", "EPOCH_MS_THRESHOLD"]

#: Epoch numbers whose whole part is at least this are milliseconds (1e11 s is the year 5138).
EPOCH_MS_THRESHOLD: Final = 100_000_000_000

_FIELD: Final = "timestamp"
_SEPARATORS: Final = "Tt "
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)
_LATEST: Final = datetime.max.replace(tzinfo=UTC)
_EPOCH_NUMBER: Final = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?")
_fromisoformat: Final[Callable[[str], datetime]] = datetime.fromisoformat

_MISSING: Final = RowProblem(Reason.MISSING_TIMESTAMP, _FIELD, "timestamp is empty or null")


class TimestampParser:
    """:func:`parse_timestamp` with ``now`` and ``config`` bound, for hot loops.

    A naive ``now`` is taken as UTC.

    >>> parse = TimestampParser(now=datetime(2025, 3, 1, tzinfo=UTC), config=ValidationConfig())
    >>> parse("2025-01-22 13:03:37")
    datetime.datetime(2025, 1, 22, 13, 3, 37, tzinfo=datetime.timezone.utc)
    >>> parse("2025-01-22T13:03:37+02:00").hour
    11
    >>> parse("1737550000"), parse("1737550000000") == parse("1737550000")
    (datetime.datetime(2025, 1, 22, 12, 46, 40, tzinfo=datetime.timezone.utc), True)
    """

    __slots__ = ("now", "config", "_min_year", "_latest")

    def __init__(self, *, now: datetime, config: ValidationConfig) -> None:
        self.now = now
        self.config = config
        self._min_year = config.min_year
        utc_now = _to_utc(now)
        try:
            self._latest = utc_now + timedelta(seconds=config.max_future_skew_s)
        except OverflowError:
            self._latest = _LATEST

    def parse(self, text: str | None) -> datetime | RowProblem:
        """The UTC instant in ``text``, or a :class:`RowProblem` saying why not."""
        if text is None:
            return _MISSING
        try:
            parsed = _fromisoformat(text)
        except ValueError:
            return self._slow(text)
        if text[4] != "-":  # an ISO basic form, or all digits: an epoch number, not a date
            return self._slow(text)
        if parsed.tzinfo is not None or (len(text) > 10 and text[10] not in _SEPARATORS):
            return self._from_iso(parsed, text, text)
        # Naive = UTC; arithmetic is several times faster than replace(tzinfo=UTC).
        when = EPOCH + (parsed - _NAIVE_EPOCH)
        if when.year < self._min_year:
            return self._too_old(text)
        if when > self._latest:
            return self._in_future(text)
        return when

    __call__ = parse

    @property
    def latest(self) -> datetime:
        """The latest accepted instant (now plus the allowed skew), UTC."""
        return self._latest

    def _slow(self, text: str) -> datetime | RowProblem:
        """Texts with surrounding whitespace, an epoch number, a null word, or junk."""
        body = text.strip(ASCII_WHITESPACE)
        if len(body) <= 4 and body.lower() in NULL_TOKENS:
            return _MISSING
        if not body.isascii():
            return _bad(text, "non-ASCII characters")
        if _EPOCH_NUMBER.fullmatch(body):
            return self._from_epoch(body, text)
        try:
            parsed = _fromisoformat(body)
        except ValueError:
            return _bad(text, "not an ISO 8601 date-time, a date or an epoch number")
        return self._from_iso(parsed, body, text)

    def _from_iso(self, parsed: datetime, body: str, text: str) -> datetime | RowProblem:
        """Check the separator of ``body`` as ``fromisoformat`` read it, then convert to UTC."""
        if len(body) > 10 and body[10] not in _SEPARATORS and body[7] == "-":
            # fromisoformat takes any character between date and time, e.g. "2025-01-22x13:00".
            return _bad(text, "date and time must be separated by 'T' or a space")
        return self._instant(parsed, text)

    def instant(self, when: object) -> datetime | RowProblem:
        """A time given as a value, not a text (library, API): the same policy and reasons.

        A ``datetime`` is taken as a text in ISO form would be (naive = UTC, an offset is
        applied) and bounded the same way; anything else (a ``date``, a number, a text) is
        ``BAD_TIMESTAMP``. Messages quote ``when.isoformat()``.

        >>> parse = TimestampParser(now=datetime(2025, 3, 1, tzinfo=UTC), config=ValidationConfig())
        >>> parse.instant(datetime(2025, 1, 22, 13, 3))
        datetime.datetime(2025, 1, 22, 13, 3, tzinfo=datetime.timezone.utc)
        >>> [parse.instant(t).reason.value for t in (datetime(2999, 1, 1), "2025-01-22")]
        ['timestamp_in_future', 'bad_timestamp']
        """
        if not isinstance(when, datetime):
            kind = type(when).__name__
            return RowProblem(
                Reason.BAD_TIMESTAMP, _FIELD, f"timestamp is a {kind}, not a datetime"
            )
        try:
            text = when.isoformat()
        except (TypeError, ValueError, OverflowError):  # a tzinfo that does not work
            return _bad("?", "its time zone gives no valid offset")
        return self._instant(when, text)

    def _instant(self, parsed: datetime, text: str) -> datetime | RowProblem:
        try:
            when = _to_utc(parsed)
        except OverflowError:
            return self._too_old(text) if parsed.year < 5000 else self._in_future(text)
        return self._check(when, text)

    def _from_epoch(self, body: str, text: str) -> datetime | RowProblem:
        """An epoch number in seconds, or in milliseconds at or above the threshold."""
        negative = body[0] == "-"
        whole, _, fraction = body.lstrip("+-").partition(".")
        if len(whole) > 18:
            return self._too_old(text) if negative else self._in_future(text)
        magnitude = int(whole)
        if magnitude >= EPOCH_MS_THRESHOLD:
            micros = magnitude * 1_000 + int(fraction[:3].ljust(3, "0"))
        else:
            micros = magnitude * 1_000_000 + int(fraction[:6].ljust(6, "0"))
        try:
            when = EPOCH + timedelta(microseconds=-micros if negative else micros)
        except OverflowError:
            return self._too_old(text) if negative else self._in_future(text)
        return self._check(when, text)

    def _check(self, when: datetime, text: str) -> datetime | RowProblem:
        """``when`` if it lies between ``min_year`` and ``now`` plus the allowed skew."""
        if when.year < self._min_year:
            return self._too_old(text)
        if when > self._latest:
            return self._in_future(text)
        return when

    def _too_old(self, text: str) -> RowProblem:
        return RowProblem(
            Reason.TIMESTAMP_TOO_OLD,
            _FIELD,
            f"timestamp {quote_short(text)} is before the year {self._min_year}",
        )

    def _in_future(self, text: str) -> RowProblem:
        return RowProblem(
            Reason.TIMESTAMP_IN_FUTURE,
            _FIELD,
            f"timestamp {quote_short(text)} is more than "
            f"{self.config.max_future_skew_s:g} s after now",
        )


def _to_utc(when: datetime) -> datetime:
    """``when`` as aware UTC (naive = UTC), by arithmetic, which is faster than ``replace``."""
    if when.tzinfo is None:
        return EPOCH + (when - _NAIVE_EPOCH)
    return EPOCH + (when - EPOCH)


def _bad(text: str, why: str) -> RowProblem:
    return RowProblem(Reason.BAD_TIMESTAMP, _FIELD, f"timestamp {quote_short(text)}: {why}")


_cached: tuple[datetime, ValidationConfig, Callable[[str | None], datetime | RowProblem]] | None
_cached = None


def parse_timestamp(
    text: str | None, *, now: datetime, config: ValidationConfig
) -> datetime | RowProblem:
    """The UTC instant in ``text``, or a :class:`RowProblem` (policy: see the module docstring).

    The parser for the last (``now``, ``config``) pair is kept, so calling this in a loop with
    the same two objects costs little more than a :class:`TimestampParser`.

    >>> now = datetime(2025, 3, 1, tzinfo=UTC)
    >>> parse_timestamp("2025-01-17", now=now, config=ValidationConfig()).isoformat()
    '2025-01-17T00:00:00+00:00'
    >>> parse_timestamp("1989-12-31", now=now, config=ValidationConfig()).reason.value
    'timestamp_too_old'
    """
    global _cached
    cached = _cached
    if cached is None or cached[0] is not now or cached[1] is not config:
        cached = _cached = (now, config, TimestampParser(now=now, config=config).parse)
    return cached[2](text)
