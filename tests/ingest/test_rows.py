"""Rows to measurements: fixed order of checks, range after conversion, reading ids."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.config import Config, UnitConfig, ValidationConfig
from weightstream.ingest import MalformedRow, RawRow, RowProblem, open_csv, to_measurement
from weightstream.model import Measurement, Reason, content_key

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = Config()


def row(
    user: str = "u1",
    timestamp: str = "2025-01-22 13:03:37",
    weight: str = "80.5",
    unit: str | None = "kg",
    source: str | None = "patient-device",
    ident: str | None = "r1",
) -> RawRow:
    return RawRow(2, user, timestamp, weight, unit, source, ident)


def convert(raw: RawRow | MalformedRow, config: Config = CONFIG) -> Measurement | RowProblem:
    return to_measurement(raw, config=config, now=NOW)


def problem(raw: RawRow | MalformedRow, config: Config = CONFIG) -> RowProblem:
    result = convert(raw, config)
    assert isinstance(result, RowProblem), result
    return result


def test_good_row_becomes_measurement() -> None:
    """A good row gives a Measurement with trimmed fields, UTC time and kg weight."""
    result = convert(row(user=" u1 ", unit=" kg ", source=" patient-device ", ident=" r1 "))
    assert result == Measurement(
        reading_id="r1",
        user_id="u1",
        timestamp=datetime(2025, 1, 22, 13, 3, 37, tzinfo=UTC),
        value=80.5,
        unit="kg",
        weight_kg=80.5,
        source="patient-device",
    )


def test_pounds_keep_value_and_unit_and_convert_weight() -> None:
    """value and unit are as given; weight_kg is value x 0.45359237."""
    result = convert(row(weight="176.37", unit="lb"))
    assert isinstance(result, Measurement)
    assert (result.value, result.unit) == (176.37, "lb")
    assert result.weight_kg == 176.37 * 0.45359237


def test_lb_ap_follows_config() -> None:
    """The unit config reaches to_kg: [lb_ap] is a pound unless configured otherwise."""
    default = convert(row(weight="200", unit="[lb_ap]"))
    literal_config = Config(units=UnitConfig(lb_ap_is_pound=False))
    literal = convert(row(weight="200", unit="[lb_ap]"), literal_config)
    assert isinstance(default, Measurement) and default.weight_kg == 200 * 0.45359237
    assert isinstance(literal, Measurement) and literal.weight_kg == 200 * 0.3732417216


@pytest.mark.parametrize("user", ["", "   ", "NULL", "null", "NA"])
def test_missing_user(user: str) -> None:
    """An empty or null user id is MISSING_USER."""
    assert problem(row(user=user)).reason is Reason.MISSING_USER


def test_first_problem_in_fixed_order_wins() -> None:
    """With every field bad, the reason follows user, timestamp, weight, unit, range."""
    bad = {"user": "", "timestamp": "nope", "weight": "72,5", "unit": "kg/m2"}
    order = [
        ("user", Reason.MISSING_USER),
        ("timestamp", Reason.BAD_TIMESTAMP),
        ("weight", Reason.NOT_A_NUMBER),
        ("unit", Reason.UNIT_IS_BMI),
    ]
    for index, (_, expected) in enumerate(order):
        kwargs = {name: bad[name] for name, _ in order[index:]}
        assert problem(row(**kwargs)).reason is expected
    assert problem(row(weight="1200", unit="lb")).reason is Reason.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("weight", "unit", "reason"),
    [
        ("19.99", "kg", Reason.OUT_OF_RANGE),
        ("500.01", "kg", Reason.OUT_OF_RANGE),
        ("176", "kg", None),
        ("176", "lb", None),
        ("40", "lb", Reason.OUT_OF_RANGE),  # 18.1 kg
        ("1102.5", "lb", Reason.OUT_OF_RANGE),  # 500.08 kg
        ("20", "kg", None),
        ("500", "kg", None),
        ("80000", "g", None),
        ("80", "g", Reason.OUT_OF_RANGE),
    ],
)
def test_range_is_checked_in_kg_after_conversion(
    weight: str, unit: str, reason: Reason | None
) -> None:
    """The 20-500 kg hard range applies to the converted kg value, inclusive."""
    result = convert(row(weight=weight, unit=unit))
    if reason is None:
        assert isinstance(result, Measurement)
    else:
        assert isinstance(result, RowProblem) and result.reason is reason
        assert weight not in result.message


def test_range_comes_from_config() -> None:
    """min_weight_kg and max_weight_kg are read from the validation config."""
    narrow = Config(validation=ValidationConfig(min_weight_kg=40, max_weight_kg=200))
    assert problem(row(weight="39"), narrow).reason is Reason.OUT_OF_RANGE
    assert isinstance(convert(row(weight="39")), Measurement)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", Reason.MISSING_VALUE),
        ("NULL", Reason.MISSING_VALUE),
        ("nan", Reason.NON_FINITE),
        ("1e309", Reason.NON_FINITE),
        ("-80", Reason.NON_POSITIVE),
        ("７２", Reason.NOT_A_NUMBER),
    ],
)
def test_weight_problems_pass_through(text: str, reason: Reason) -> None:
    """The weight parser's reason is the row's reason."""
    assert problem(row(weight=text)).reason is reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", Reason.MISSING_TIMESTAMP),
        ("1850-01-01", Reason.TIMESTAMP_TOO_OLD),
        ("2030-01-01", Reason.TIMESTAMP_IN_FUTURE),
        ("22/01/2025", Reason.BAD_TIMESTAMP),
    ],
)
def test_timestamp_problems_pass_through(text: str, reason: Reason) -> None:
    """The timestamp parser's reason is the row's reason, judged against the given now."""
    assert problem(row(timestamp=text)).reason is reason


@pytest.mark.parametrize(
    ("unit", "reason"), [("m2", Reason.UNIT_IS_BSA), ("oz", Reason.UNKNOWN_UNIT)]
)
def test_unit_problems_pass_through(unit: str, reason: Reason) -> None:
    """The unit converter's reason is the row's reason."""
    assert problem(row(weight="1.9", unit=unit)).reason is reason


@pytest.mark.parametrize("ident", [None, "", "  ", "NULL"])
def test_reading_id_falls_back_to_content_key(ident: str | None) -> None:
    """Without a usable id, the reading id is content_key(user, ts, value, unit, source)."""
    result = convert(row(ident=ident))
    assert isinstance(result, Measurement)
    assert result.reading_id == content_key(
        "u1", datetime(2025, 1, 22, 13, 3, 37, tzinfo=UTC), 80.5, "kg", "patient-device"
    )
    assert result.reading_id == result.content_key


@pytest.mark.parametrize("source", [None, "", "   ", "null"])
def test_missing_source_is_unknown(source: str | None) -> None:
    """An absent, empty or null source is 'unknown'."""
    result = convert(row(source=source))
    assert isinstance(result, Measurement) and result.source == "unknown"


def test_absent_unit_is_kg_with_empty_unit_text() -> None:
    """Without a unit column the weight is kg and the unit is recorded as ''."""
    result = convert(row(unit=None, weight="81"))
    assert isinstance(result, Measurement) and (result.unit, result.weight_kg) == ("", 81.0)


def test_malformed_row_gives_its_problem() -> None:
    """A MalformedRow passed in returns its MALFORMED_ROW problem."""
    result = problem(MalformedRow(9, "NUL byte in the line"))
    assert (result.reason, result.field, result.message) == (
        Reason.MALFORMED_ROW,
        "row",
        "NUL byte in the line",
    )


def test_reader_and_rows_end_to_end(tmp_path: Path) -> None:
    """Every non-blank line of an export ends as exactly one Measurement or RowProblem."""
    lines = [
        "user_id,effectiveDateTime,value,units,source",
        "u1,2025-01-22 13:03:37,80.5,kg,patient-device",
        "u1,2025-01-23 13:03:37,177.5,[lb_ap],patient-upload",
        "",
        "u2,2025-01-23,27.1,kg/m2,care-team-upload",
        'u2,"2025-01-24",1.9,m2,',
        "u3,2025-01-24,NULL,kg,x",
        "u3,2025-01-24,80",
    ]
    path = tmp_path / "export.csv"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    results = [(raw.line, convert(raw)) for raw in open_csv(path)]
    reasons = {line: r.reason if isinstance(r, RowProblem) else "ok" for line, r in results}
    assert reasons == {
        2: "ok",
        3: "ok",
        5: Reason.UNIT_IS_BMI,
        6: Reason.UNIT_IS_BSA,
        7: Reason.MISSING_VALUE,
        8: Reason.MALFORMED_ROW,
    }


text_fields = st.one_of(st.text(max_size=30), st.sampled_from(["80", "2025-01-01", "lb", " "]))


@settings(max_examples=300)
@given(
    text_fields,
    text_fields,
    text_fields,
    st.none() | text_fields,
    st.none() | text_fields,
    st.none() | text_fields,
)
def test_any_row_gives_measurement_or_problem(
    user: str, timestamp: str, weight: str, unit: str | None, source: str | None, ident: str | None
) -> None:
    """Whatever the fields hold, the result is a valid Measurement or a RowProblem."""
    result = convert(RawRow(2, user, timestamp, weight, unit, source, ident))
    if isinstance(result, Measurement):
        assert 20.0 <= result.weight_kg <= 500.0
        assert result.timestamp.tzinfo is UTC and result.user_id and result.source
    else:
        assert isinstance(result, RowProblem)
