"""Timestamp texts: every accepted form, zones, epoch seconds vs ms, and the limits (G6)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightstream.config import ValidationConfig
from weightstream.ingest import RowProblem, parse_timestamp
from weightstream.ingest.timestamps import EPOCH_MS_THRESHOLD, TimestampParser
from weightstream.model import Reason

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CFG = ValidationConfig()
NO_FLOOR = ValidationConfig(min_year=1)  # parsing mechanics alone, without the 1990 floor


def parse(text: str | None, now: datetime = NOW, config: ValidationConfig = CFG) -> object:
    return parse_timestamp(text, now=now, config=config)


def reason(text: str | None, now: datetime = NOW, config: ValidationConfig = CFG) -> Reason:
    result = parse(text, now, config)
    assert isinstance(result, RowProblem), result
    assert result.field == "timestamp"
    return result.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-22 13:03:37", datetime(2025, 1, 22, 13, 3, 37)),
        ("2025-01-22T13:03:37", datetime(2025, 1, 22, 13, 3, 37)),
        ("2025-01-22 13:03:37.883", datetime(2025, 1, 22, 13, 3, 37, 883_000)),
        ("2025-01-22 13:03:37.123456789", datetime(2025, 1, 22, 13, 3, 37, 123_456)),
        ("2025-01-17T00:00:00Z", datetime(2025, 1, 17)),
        ("2025-01-17T00:00:00+00:00", datetime(2025, 1, 17)),
        ("2025-01-17", datetime(2025, 1, 17)),
        ("  2025-01-17\t", datetime(2025, 1, 17)),
        ("2025-01-22 13:03", datetime(2025, 1, 22, 13, 3)),
        ("2025-01-22T13:03:37+02:00", datetime(2025, 1, 22, 11, 3, 37)),
        ("2025-01-22T13:03:37-05:30", datetime(2025, 1, 22, 18, 33, 37)),
        ("2025-01-01T01:00:00+02:00", datetime(2024, 12, 31, 23, 0, 0)),
        ("2025-01-22T13:03:37+0200", datetime(2025, 1, 22, 11, 3, 37)),
        ("2025-W04-3", datetime(2025, 1, 22)),
    ],
)
def test_iso_forms_give_aware_utc(text: str, expected: datetime) -> None:
    """ISO 8601 forms, with or without zone, give the right instant as aware UTC."""
    result = parse(text)
    assert result == expected.replace(tzinfo=UTC)
    assert isinstance(result, datetime) and result.tzinfo is UTC


def test_naive_time_is_utc() -> None:
    """A time without an offset means UTC, not local time."""
    naive = parse("2025-03-01 08:00:00")
    explicit = parse("2025-03-01T08:00:00Z")
    assert naive == explicit
    assert isinstance(naive, datetime) and naive.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1737550000", datetime(2025, 1, 22, 12, 46, 40)),
        ("1737550000.25", datetime(2025, 1, 22, 12, 46, 40, 250_000)),
        ("1737550000123", datetime(2025, 1, 22, 12, 46, 40, 123_000)),
        ("1737550000123.5", datetime(2025, 1, 22, 12, 46, 40, 123_500)),
        (" 1737550000 ", datetime(2025, 1, 22, 12, 46, 40)),
        ("0", datetime(1970, 1, 1)),
        ("-86400", datetime(1969, 12, 31)),
        ("99999999999", datetime(1970, 1, 1) + timedelta(seconds=99_999_999_999)),
        ("100000000000", datetime(1973, 3, 3, 9, 46, 40)),
    ],
)
def test_epoch_seconds_and_milliseconds_told_apart_by_size(text: str, expected: datetime) -> None:
    """Epoch numbers below 1e11 are seconds, from 1e11 up milliseconds."""
    when = parse(text, now=datetime(9000, 1, 1, tzinfo=UTC), config=NO_FLOOR)
    assert when == expected.replace(tzinfo=UTC)


def test_epoch_threshold_is_documented_value() -> None:
    """The threshold is 1e11, which as seconds would be the year 5138."""
    assert EPOCH_MS_THRESHOLD == 10**11
    assert (datetime(1970, 1, 1) + timedelta(seconds=EPOCH_MS_THRESHOLD)).year == 5138


def test_milliseconds_are_not_read_as_seconds() -> None:
    """The same instant in seconds and in milliseconds parses to the same value."""
    assert parse("1737550000") == parse("1737550000000")


def test_all_digit_text_is_epoch_not_iso_basic() -> None:
    """'20250122' is an epoch number (1970-08-23), not the ISO basic date 2025-01-22."""
    result = parse("20250122", config=NO_FLOOR)
    assert isinstance(result, datetime) and result.date().isoformat() == "1970-08-23"


@pytest.mark.parametrize("text", [None, "", "   ", "NULL", "null", "None", "NA"])
def test_missing_timestamps(text: str | None) -> None:
    """None, empty text and null words are MISSING_TIMESTAMP."""
    assert reason(text) is Reason.MISSING_TIMESTAMP


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "22/01/2025",
        "01/22/2025 13:03",
        "2025-13-01",
        "2025-02-30",
        "2025-01-22T25:00:00",
        "2025-01-22x13:03:37",
        "2025-01-22\u00a013:03:37",
        "２０２５-01-22",
        "2025-01-22T13:03:37+25:00",
        "1.7e9",
        "0x65",
        "17375_50000",
        "2025-01-22 13:03:37 extra",
        "2025-01-22 13:033",  # fromisoformat accepts these when a "Z" is appended
        "2025-01-22T13:03:",
        "2025-01-22T13:03:37.",
    ],
)
def test_unparseable_timestamps(text: str) -> None:
    """Texts in none of the accepted forms are BAD_TIMESTAMP, quoting the text."""
    assert reason(text) is Reason.BAD_TIMESTAMP
    result = parse(text)
    assert isinstance(result, RowProblem) and repr(text)[:20] in result.message


@pytest.mark.parametrize(
    "text",
    [
        "1989-12-31T23:59:59Z",
        "1989-12-31",
        "1990-01-01T00:30:00+01:00",  # 1989-12-31T23:30 UTC
        "0001-01-01T00:00:00+01:00",  # would overflow when converted
        "-5000000000",
        "-" + "9" * 30,
    ],
)
def test_before_min_year_is_too_old(text: str) -> None:
    """Instants before 1 January of min_year (UTC) are TIMESTAMP_TOO_OLD."""
    assert reason(text) is Reason.TIMESTAMP_TOO_OLD


def test_min_year_boundary_and_config() -> None:
    """1990-01-01T00:00Z is accepted by default; min_year from config moves the limit."""
    assert parse("1990-01-01") == datetime(1990, 1, 1, tzinfo=UTC)
    assert parse("1899-12-31", config=ValidationConfig(min_year=1800)) == datetime(
        1899, 12, 31, tzinfo=UTC
    )
    assert reason("1999-12-31", config=ValidationConfig(min_year=2000)) is (
        Reason.TIMESTAMP_TOO_OLD
    )


@pytest.mark.parametrize(
    "text",
    [
        "2025-06-02T12:00:01Z",
        "2030-01-01",
        "9999-12-31T23:59:59-05:00",  # overflows when converted
        "1750000000000000",  # ms, year 57424
        "9" * 30,
    ],
)
def test_beyond_allowed_skew_is_in_future(text: str) -> None:
    """Instants more than max_future_skew_s after now are TIMESTAMP_IN_FUTURE."""
    assert reason(text) is Reason.TIMESTAMP_IN_FUTURE


def test_future_skew_boundary() -> None:
    """Exactly now + skew is accepted; one microsecond later is not; skew comes from config."""
    assert parse("2025-06-02T12:00:00Z") == NOW + timedelta(days=1)
    assert reason("2025-06-02T12:00:00.000001Z") is Reason.TIMESTAMP_IN_FUTURE
    tight = ValidationConfig(max_future_skew_s=0)
    assert reason("2025-06-01T12:00:01Z", config=tight) is Reason.TIMESTAMP_IN_FUTURE
    assert parse("2025-06-01T14:00:00+02:00", config=tight) == NOW


def test_future_check_applies_offset_first() -> None:
    """A local time ahead of UTC is compared after conversion, not by its wall-clock text."""
    tight = ValidationConfig(max_future_skew_s=0)
    assert parse("2025-06-01T15:00:00+03:00", config=tight) == NOW
    assert reason("2025-06-01T12:00:00-00:01", config=tight) is Reason.TIMESTAMP_IN_FUTURE


def test_naive_or_non_utc_now_is_handled() -> None:
    """A naive now is taken as UTC; an aware non-UTC now is converted."""
    naive_now = datetime(2025, 6, 1, 12, 0, 0)
    assert parse("2025-06-02T12:00:00", now=naive_now) == NOW + timedelta(days=1)
    tokyo_now = NOW.astimezone(timezone(timedelta(hours=9)))
    assert reason("2025-06-02T12:00:01", now=tokyo_now) is Reason.TIMESTAMP_IN_FUTURE


def test_huge_skew_does_not_overflow() -> None:
    """A skew too large for datetime arithmetic means 'no future limit', not an error."""
    config = ValidationConfig(max_future_skew_s=1e300)
    assert parse("9999-12-31T00:00:00", config=config) == datetime(9999, 12, 31, tzinfo=UTC)


def test_bound_parser_matches_function() -> None:
    """TimestampParser gives the same results as parse_timestamp."""
    bound = TimestampParser(now=NOW, config=CFG)
    for text in ("2025-01-22 13:03:37", "1737550000", "x", None, "2030-01-01"):
        assert bound(text) == parse(text)


@given(
    st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2025, 6, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    ).filter(lambda d: d.astimezone(UTC).year >= 1990),
    st.sampled_from(["T", " "]),
)
def test_isoformat_round_trips(when: datetime, separator: str) -> None:
    """Any aware datetime written by isoformat parses back to the same instant in UTC."""
    result = parse(when.isoformat(sep=separator))
    assert result == when
    assert isinstance(result, datetime) and result.tzinfo is UTC


@given(st.text(max_size=40))
def test_any_text_gives_utc_datetime_or_problem(text: str) -> None:
    """For any text the result is an aware UTC datetime in range or a RowProblem; nothing raises."""
    result = parse(text)
    if isinstance(result, datetime):
        assert result.tzinfo is UTC
        assert result.year >= 1900 and result <= NOW + timedelta(days=1)
    else:
        assert isinstance(result, RowProblem)


_ISO_BASES = ["2025-01-22T13:03:37.123+02:00", "2025-01-22 13:03:37", "2025-01-22", "2025-W03-1"]


@st.composite
def iso_mutations(draw: st.DrawFn) -> str:
    """A valid ISO text with a piece cut out and junk from the ISO alphabet put in."""
    base = draw(st.sampled_from(_ISO_BASES))
    start = draw(st.integers(0, len(base)))
    stop = draw(st.integers(start, len(base)))
    junk = draw(st.text(alphabet="0123456789-:T .+Z,W", max_size=3))
    return base[:start] + junk + base[stop:]


@given(iso_mutations())
def test_accepted_iso_text_is_exactly_what_fromisoformat_reads(text: str) -> None:
    """Whatever ISO-like text is accepted, fromisoformat reads the same instant from it."""
    result = parse(text, now=datetime(9999, 1, 1, tzinfo=UTC))
    body = text.strip()
    if isinstance(result, datetime) and not re.fullmatch(r"[+-]?[0-9]+(\.[0-9]*)?", body):
        expected = datetime.fromisoformat(body)
        if expected.tzinfo is None:
            expected = expected.replace(tzinfo=UTC)
        assert result == expected
        assert body[10:11] in ("", "T", "t", " ") or body[7:8] != "-"


@pytest.mark.parametrize("text", ["0", "-1", "20250122", "631151999", "1989-12-31T23:59:59Z"])
def test_epoch_mistakes_are_refused_by_the_default_floor(text: str) -> None:
    """Issue 10, epoch values: 0, -1 and 20250122 read as seconds are 1969-1970 dates; with the
    default floor (1990-01-01) they are TIMESTAMP_TOO_OLD, as is the last second before it.
    On the old main they parsed as 1970 dates."""
    assert CFG.min_year == 1990
    assert reason(text) is Reason.TIMESTAMP_TOO_OLD


def test_the_floor_itself_and_plausible_epoch_seconds_are_accepted() -> None:
    """631152000 (1990-01-01T00:00Z in seconds) and a 2025 epoch value pass the default floor."""
    assert parse("631152000") == datetime(1990, 1, 1, tzinfo=UTC)
    assert isinstance(parse("1737550000"), datetime)
