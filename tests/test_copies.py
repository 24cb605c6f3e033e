"""One weighing exported twice is counted once (issue 13, part 1: weightstream.copies).

The rules themselves, then the same rows through ``process_one`` and through a file in both
orders, then synth's ``duplicates`` scenario against its truth file.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config
from weightstream.copies import copy_of, rounding_kg, significant_digits
from weightstream.ingest.units import KG_PER_LB
from weightstream.model import BufferedReading, Measurement, Reason, Verdict
from weightstream.pipeline import process_file
from weightstream.processor import Processor
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore

T0 = datetime(2025, 3, 1, 8, 15, 42, tzinfo=UTC)


def _m(value: float, unit: str = "kg", *, at: datetime = T0, source: str = "care-team-upload",
       rid: str = "r2") -> Measurement:
    kg = value * KG_PER_LB if unit != "kg" else value
    return Measurement(rid, "u1", at, value, unit, kg, source)


def _remembered(m: Measurement) -> tuple[BufferedReading, ...]:
    return (BufferedReading.of(m),)


@pytest.mark.parametrize(
    ("value", "digits"), [(303.0, 3), (137.44, 5), (0.0451, 3), (137.43815035, 11), (80.5, 3)]
)
def test_significant_digits(value: float, digits: int) -> None:
    assert significant_digits(value) == digits


def test_rounding_is_half_the_last_digit_in_kg() -> None:
    assert rounding_kg(137.44, 137.44) == pytest.approx(0.005)
    # a float does not keep a trailing zero: 303.0 may have been written "303"
    assert rounding_kg(303.0, 303.0 * KG_PER_LB) == pytest.approx(0.5 * KG_PER_LB)
    assert rounding_kg(303.2, 303.2 * KG_PER_LB) == pytest.approx(0.05 * KG_PER_LB)


def test_same_weighing_in_pounds_at_the_same_instant_is_a_copy() -> None:
    original = _m(137.44, rid="kg-row")
    found = copy_of(_remembered(original), (), _m(303.0, "[lb_ap]"))
    assert found is not None
    assert found.reason is Reason.SAME_READING_OTHER_UNIT
    assert "kg-row" in found.message  # names the reading it repeats


def test_a_rejected_reading_is_remembered_too() -> None:
    found = copy_of((), _remembered(_m(137.44, rid="kg-row")), _m(303.0, "[lb_ap]"))
    assert found is not None and found.reason is Reason.SAME_READING_OTHER_UNIT


def test_outside_the_rounding_it_is_another_reading() -> None:
    # 302.8 lb = 137.35 kg: 0.09 kg from 137.44, more than 0.005 + 0.023 of rounding
    assert copy_of(_remembered(_m(137.44)), (), _m(302.8, "[lb_ap]")) is None


def test_near_equal_same_unit_same_source_same_instant_are_two_weighings() -> None:
    """A date-only day with 80.10 then 80.12 kg from one scale: both count."""
    day = datetime(2025, 3, 1, tzinfo=UTC)
    assert copy_of(_remembered(_m(80.10, at=day)), (), _m(80.12, at=day)) is None
    assert copy_of(_remembered(_m(80.10, at=day)), (), _m(80.10, at=day, rid="other")) is None


def test_near_equal_from_another_source_at_the_same_instant_is_a_copy() -> None:
    original = _m(80.10, source="patient-device")
    found = copy_of(_remembered(original), (), _m(80.1, source="care-team-upload"))
    assert found is not None and found.reason is Reason.SAME_READING_OTHER_UNIT


@pytest.mark.parametrize("hours", [1, 5, 14])
def test_clock_shifted_long_value_is_a_copy(hours: int) -> None:
    first = _m(137.43815035, at=T0.replace(second=0))
    later = _m(137.43815035, at=T0.replace(second=0) + timedelta(hours=hours))
    found = copy_of(_remembered(first), (), later)
    assert found is not None and found.reason is Reason.CLOCK_SHIFTED_COPY


@pytest.mark.parametrize(
    "shift", [timedelta(hours=15), timedelta(hours=5, seconds=1), timedelta(minutes=30)]
)
def test_not_a_whole_number_of_hours_up_to_14_is_no_copy(shift: timedelta) -> None:
    first = _m(137.43815035)
    assert copy_of(_remembered(first), (), _m(137.43815035, at=T0 + shift)) is None


def test_short_value_on_a_whole_minute_is_a_genuine_repeat() -> None:
    """80.1 kg at 08:00 and at 13:00 from one scale: a plausible second weighing."""
    at = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert copy_of(_remembered(_m(80.1, at=at)), (), _m(80.1, at=at + timedelta(hours=5))) is None


def test_short_value_with_seconds_whole_hours_apart_is_a_copy() -> None:
    shifted = _m(80.1, at=T0 + timedelta(hours=5))
    found = copy_of(_remembered(_m(80.1)), (), shifted)
    assert found is not None and found.reason is Reason.CLOCK_SHIFTED_COPY


def test_other_source_or_value_is_no_clock_shifted_copy() -> None:
    later = T0 + timedelta(hours=3)
    assert copy_of(_remembered(_m(80.1)), (), _m(80.1, at=later, source="patient-device")) is None
    assert copy_of(_remembered(_m(80.1)), (), _m(80.2, at=later)) is None


def test_process_one_counts_the_weighing_once() -> None:
    """Sent one by one, in either order: the one that sorts later is the copy, as in a file."""
    for order in (("a", "b"), ("b", "a")):
        store = MemoryStore()
        p = Processor(store, Config())
        readings = {"a": _m(137.44, rid="a"), "b": _m(303.0, "[lb_ap]", rid="b")}
        for rid in order:
            p.process_one(readings[rid])
        history = {r.measurement.reading_id: r.result for r in store.history("u1")}
        # "[lb_ap]" sorts before "kg" at the same instant: the kg row is the copy
        assert history["b"].verdict is Verdict.ACCEPTED
        assert history["a"].verdict is Verdict.DUPLICATE
        assert history["a"].reason is Reason.SAME_READING_OTHER_UNIT
        assert history["a"].filtered_weight is None
        state = store.load_state("u1")
        assert state is not None and state.accepted_count == 1
        again = p.process_one(_m(137.44, rid="a"))  # sent again: a duplicate by its key
        assert again.reason is Reason.DUPLICATE_KEY


HEADER = ["id", "user_id", "effectiveDateTime", "source_type", "weight", "unit"]
ROWS = [
    ["a", "u1", "2025-03-01 08:15:42", "care-team-upload", "137.44", "kg"],
    ["b", "u1", "2025-03-01 08:15:42", "care-team-upload", "303.0", "[lb_ap]"],
    ["c", "u1", "2025-03-02 07:00:10", "patient-device", "137.2", "kg"],
    ["d", "u1", "2025-03-02 12:00:10", "patient-device", "137.2", "kg"],  # shifted copy of c
    ["e", "u1", "2025-03-03 00:00:00", "patient-device", "136.9", "kg"],
    ["f", "u1", "2025-03-03 00:00:00", "patient-device", "136.95", "kg"],  # two weighings
]


def _verdicts(tmp_path: Path, rows: list[list[str]], name: str) -> dict[str, tuple[str, str]]:
    src = tmp_path / f"{name}.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *rows])
    with SQLiteStore(tmp_path / f"{name}.db") as store:
        process_file(src, store, Config(), out=tmp_path / f"{name}.out.csv")
    with (tmp_path / f"{name}.out.csv").open(newline="") as fh:
        return {r["reading_id"]: (r["verdict"], r["reason"]) for r in csv.DictReader(fh)}


def test_a_file_in_either_order_marks_the_same_rows(tmp_path: Path) -> None:
    forward = _verdicts(tmp_path, ROWS, "forward")
    backward = _verdicts(tmp_path, ROWS[::-1], "backward")
    assert forward == backward
    reasons = Counter(reason for _, reason in forward.values())
    assert reasons["same_reading_other_unit"] == 1
    assert reasons["clock_shifted_copy"] == 1
    assert forward["d"] == ("duplicate", "clock_shifted_copy")  # the later one in time
    assert forward["e"][0] == forward["f"][0] == "accepted"


def test_synth_duplicates_scenario_every_copy_pair_counted_once(tmp_path: Path) -> None:
    """Each same-instant unit copy in synth's truth has exactly one row of its pair marked."""
    export, truth = tmp_path / "x.csv", tmp_path / "t.csv"
    run = CliRunner().invoke(app, ["synth", "--scenario", "duplicates", "--users", "30",
                                   "--per-user", "30", "--seed", "11", "--out", str(export),
                                   "--truth", str(truth)])
    assert run.exit_code == 0, run.output
    with SQLiteStore(tmp_path / "x.db") as store:
        process_file(export, store, Config(), out=tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(newline="") as fh:
        by_row = {int(r["row"]): r for r in csv.DictReader(fh)}
    with truth.open(newline="") as fh:
        kinds = list(csv.DictReader(fh))
    pairs = [(k + 2, int(t["duplicate_of"])) for k, t in enumerate(kinds)
             if t["kind"] in ("duplicate_unit", "clock_shift")]
    assert len({kinds[c - 2]["kind"] for c, _ in pairs}) == 2, "the scenario has both troubles"
    linked = Counter(r for pair in pairs for r in pair)
    alone = [p for p in pairs if linked[p[0]] == linked[p[1]] == 1]  # not part of a triple
    copy_reasons = ("same_reading_other_unit", "clock_shifted_copy")
    caught = 0
    for pair in alone:
        marked = [by_row[r]["reason"] in copy_reasons for r in pair]
        assert marked.count(True) <= 1, pair  # never both rows of a pair
        caught += marked.count(True)
    # unit copies are always caught; clock-shifted ones only with enough evidence (copies.py)
    units = [p for p in alone if kinds[p[0] - 2]["kind"] == "duplicate_unit"]
    assert all(any(by_row[r]["reason"] in copy_reasons for r in p) for p in units)
    assert caught >= 0.8 * len(alone)
    flagged = {r for r, res in by_row.items() if res["reason"] in copy_reasons}
    assert flagged <= set(linked), "a row that repeats no other was called a copy"


def test_the_engine_pretest_flags_every_copy_the_rules_find() -> None:
    """copies.may_be_copy is a superset of copy_of: the compiled loop never sees a copy."""
    from weightstream.copies import may_be_copy
    from weightstream.model import to_micros

    later = T0 + timedelta(hours=5)
    cases = [
        (_m(137.44, rid="a"), _m(303.0, "[lb_ap]")),
        (_m(80.10, source="patient-device"), _m(80.1)),
        (_m(137.43815035, at=T0.replace(second=0)),
         _m(137.43815035, at=T0.replace(second=0) + timedelta(hours=14))),
        (_m(80.1), _m(80.1, at=later)),
        (BufferedReading(T0, 80.0, "care-team-upload"), _m(80.3)),  # a value not kept: widest
    ]
    for original, m in cases:
        entry = original if isinstance(original, BufferedReading) else BufferedReading.of(original)
        assert copy_of((entry,), (), m) is not None or entry.value is None
        instants = {to_micros(entry.timestamp): [(entry.weight_kg, entry.value)]}
        values = {(entry.source, entry.weight_kg): [to_micros(entry.timestamp)]}
        assert may_be_copy(instants, values, to_micros(m.timestamp), m.weight_kg, m.value,
                           m.source)


def test_a_date_only_row_and_its_copy_at_a_whole_hour_of_that_date() -> None:
    """101.05 kg dated 2024-02-03 and 101.05 kg at 05:00:00 that date, one source: one reading."""
    day = datetime(2024, 2, 3, tzinfo=UTC)
    found = copy_of(_remembered(_m(101.05, at=day)), (), _m(101.05, at=day + timedelta(hours=5)))
    assert found is not None and found.reason is Reason.CLOCK_SHIFTED_COPY
    # a three-digit value could be a second weighing; two timed rows on whole hours too
    assert copy_of(_remembered(_m(80.5, at=day)), (), _m(80.5, at=day + timedelta(hours=5))) is None
    timed = day + timedelta(hours=7)
    assert copy_of(_remembered(_m(101.05, at=timed)), (),
                   _m(101.05, at=timed + timedelta(hours=5))) is None
