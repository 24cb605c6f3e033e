"""The library path applies the CSV rules (issue 10, invariants I6, I11; fault rows G2, G6).

``Processor.process_one`` holds a Measurement built in code to the same checks, in the same
order and with the same reasons, as a CSV row (:func:`weightstream.ingest.validate_reading`):
an invalid reading gets an ``invalid`` result, nothing of it is stored (no reading, no state,
no result row), and no raw TypeError or ValueError escapes. On the old main each case below was
stored, froze the user, hit a database constraint, or raised a raw TypeError.
"""

from __future__ import annotations

import csv
import itertools
import math
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from weightstream.config import Config
from weightstream.model import Measurement, Reason, Result, Verdict
from weightstream.pipeline import process_file
from weightstream.processor import Processor
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FakeClock

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def reading(
    weight: Any = 80.0,
    when: Any = NOW - DAY,
    *,
    user: Any = "u1",
    unit: Any = "kg",
    weight_kg: Any = None,
    source: Any = "patient-device",
    reading_id: Any = "",
) -> Measurement:
    """A Measurement as a library caller might build it (any field may be wrong)."""
    return Measurement(
        reading_id, user, when, weight, unit, weight if weight_kg is None else weight_kg, source
    )


def stored_nothing(db: Path) -> bool:
    with sqlite3.connect(db) as raw:
        counts = [
            raw.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("readings", "user_states", "results", "last_good_states")
        ]
    raw.close()
    return counts == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("case", "m", "reason"),
    [
        ("year 2999 (froze the user)", reading(when=datetime(2999, 1, 1, tzinfo=UTC)),
         Reason.TIMESTAMP_IN_FUTURE),
        ("inf weight (stored)", reading(math.inf), Reason.NON_FINITE),
        ("1e308 weight (stored)", reading(1e308), Reason.OUT_OF_RANGE),
        ("year 1 (stored)", reading(when=datetime(1, 1, 1, tzinfo=UTC)),
         Reason.TIMESTAMP_TOO_OLD),
        ("empty user id (stored)", reading(user=""), Reason.MISSING_USER),
        ("NaN weight (stopped by a DB constraint only)", reading(math.nan), Reason.NON_FINITE),
        ("negative weight (stopped by a DB constraint only)", reading(-80.0),
         Reason.NON_POSITIVE),
        ("str weight (raw TypeError)", reading("80"), Reason.NOT_A_NUMBER),
        ("epoch 0 as a date (accepted as 1970)", reading(when=datetime(1970, 1, 1, tzinfo=UTC)),
         Reason.TIMESTAMP_TOO_OLD),
        ("a BMI (kg/m2)", reading(27.0, unit="kg/m2"), Reason.UNIT_IS_BMI),
        ("weight_kg not the value in its unit", reading(176.0, unit="lb"),
         Reason.INCONSISTENT_WEIGHT),
        ("a date, not a datetime", reading(when=(NOW - DAY).date()), Reason.BAD_TIMESTAMP),
        ("a user id that is not text", reading(user=17), Reason.MISSING_USER),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_process_one_refuses_what_a_csv_row_refuses(
    tmp_path: Path, case: str, m: Measurement, reason: Reason
) -> None:
    """Each invalid library reading of issue 10 gets verdict invalid with the CSV's reason,
    raises nothing, and stores nothing at all in a real SQLite database."""
    db = tmp_path / "ws.db"
    store = SQLiteStore(db)
    result = Processor(store, Config(), clock=FakeClock(NOW)).process_one(m)
    store.close()
    assert (result.verdict, result.reason) == (Verdict.INVALID, reason), case
    assert "80" not in result.message  # no weight in the message
    assert stored_nothing(db)


def test_a_reading_from_2999_does_not_freeze_the_user(tmp_path: Path) -> None:
    """On the old main a reading dated 2999 became the state and every real reading after it
    was 'late'. Now it is invalid and the user's next real reading is accepted."""
    store = SQLiteStore(tmp_path / "ws.db")
    p = Processor(store, Config(), clock=FakeClock(NOW))
    assert p.process_one(reading(80.0, NOW - 3 * DAY, reading_id="r1")).accepted
    assert p.process_one(reading(80.1, datetime(2999, 1, 1, tzinfo=UTC))).verdict is (
        Verdict.INVALID
    )
    assert p.process_one(reading(80.2, NOW - DAY, reading_id="r3")).accepted
    estimate = p.estimate("u1")
    assert estimate is not None and estimate.timestamp == NOW - DAY
    store.close()


def test_a_naive_datetime_is_utc_as_in_files(tmp_path: Path) -> None:
    """A naive datetime raised a raw TypeError; now it is read as UTC (the files' policy) and
    the stored reading is the same one a CSV row with that text gives (same content key)."""
    naive = datetime(2025, 5, 30, 7, 30)
    store = SQLiteStore(tmp_path / "ws.db")
    result = Processor(store, Config(), clock=FakeClock(NOW)).process_one(reading(when=naive))
    assert result.accepted and result.timestamp == naive.replace(tzinfo=UTC)
    (row,) = store.history("u1")
    assert row.measurement.timestamp == naive.replace(tzinfo=UTC)
    assert row.measurement.reading_id == row.measurement.content_key
    store.close()


def test_the_invalid_result_reaches_observers_once() -> None:
    """An invalid library reading is counted like an invalid CSV row (observers see it)."""
    from weightstream.observe import Observer

    seen: list[Result] = []

    class Recorder(Observer):
        def reading_processed(self, result: Result, duration_s: float) -> None:
            seen.append(result)

    p = Processor(MemoryStore(), Config(), clock=FakeClock(NOW), observer=Recorder())
    p.process_one(reading(math.inf))
    assert [(r.verdict, r.reason) for r in seen] == [(Verdict.INVALID, Reason.NON_FINITE)]


# -- one set of rules: process_one and a CSV row agree on everything -------------------------

_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=8
)
USERS = st.one_of(
    st.sampled_from(["u1", "u1", "u1", " u2 ", "", "  ", "NULL", "n/a"]), _TEXT, _TEXT
)
SOURCES = st.one_of(st.sampled_from(["patient-device", "", " NULL ", "care-team-upload"]), _TEXT)
UNITS = st.sampled_from(
    ["kg", " KG ", "", "lb", "lbs", "g", "st", "[lb_ap]", "[lb_av]", "kg/m2", "m2", "bmi",
     "furlong", "NULL"]
)
#: kg per unit as the documentation states them (grams: value / 1000); None: not a mass.
FACTORS = {"kg": 1.0, "": 1.0, "lb": 0.45359237, "lbs": 0.45359237, "[lb_av]": 0.45359237,
           "[lb_ap]": 0.45359237, "st": 6.35029318, "g": 0.001}
WEIGHTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=15.0, max_value=520.0),
    st.floats(min_value=15.0, max_value=520.0),
    st.sampled_from([0.0, -0.0, 20.0, 500.0, 19.999999, 500.00001, 1e308, 5e-324, 80.0]),
)
OFFSETS = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))
_PLAUSIBLE = {"min_value": datetime(1985, 1, 1), "max_value": datetime(2025, 6, 3)}
INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),  # naive
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=OFFSETS),
    st.datetimes(**_PLAUSIBLE),
    st.datetimes(**_PLAUSIBLE),
    st.datetimes(**_PLAUSIBLE, timezones=OFFSETS),
    st.datetimes(**_PLAUSIBLE, timezones=OFFSETS),
)
_files = itertools.count()


def via_csv(tmp_path: Path, user: str, when: datetime, weight: float, unit: str,
            source: str) -> tuple[Result, MemoryStore]:
    path = tmp_path / f"one-{next(_files)}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["user_id", "timestamp", "weight", "unit", "source"])
        out.writerow([user, when.isoformat(), repr(weight), unit, source])
    store = MemoryStore()
    summary = process_file(path, store, Config(), clock=FakeClock(NOW))
    (result,) = store.results_for_input(summary.input_id)
    return result, store


@seed(20251010)
@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(user=USERS, when=INSTANTS, weight=WEIGHTS, unit=UNITS, source=SOURCES)
def test_process_one_and_a_csv_row_give_the_same_verdict_and_reason(
    tmp_path: Path, user: str, when: datetime, weight: float, unit: str, source: str
) -> None:
    """For arbitrary floats, naive and aware datetimes of any year and arbitrary texts, a
    reading through process_one and the same reading as a one-row CSV through process_file get
    the same verdict and reason; an invalid one stores nothing on either path, and a valid one
    stores the same reading (same user, time, weights, source and content key). Seeded."""
    factor = FACTORS.get(unit.strip().lower())
    weight_kg = weight if factor is None else (
        weight / 1000.0 if unit == "g" else weight * factor)
    library_store = MemoryStore()
    mine = Processor(library_store, Config(), clock=FakeClock(NOW)).process_one(
        reading(weight, when, user=user, unit=unit, weight_kg=weight_kg, source=source)
    )
    theirs, csv_store = via_csv(tmp_path, user, when, weight, unit, source)
    assert (mine.verdict, mine.reason) == (theirs.verdict, theirs.reason)
    event(f"{mine.verdict}: {mine.reason}")  # --hypothesis-show-statistics shows the spread
    if mine.verdict is Verdict.INVALID:
        assert library_store.users() == csv_store.users() == []
        for uid in {user, user.strip(" \t\n\r\x0b\x0c")}:
            assert library_store.history(uid) == csv_store.history(uid) == []
        return
    (uid,) = csv_store.users()
    assert library_store.users() == [uid]
    (a,), (b,) = library_store.history(uid), csv_store.history(uid)
    assert a.measurement == b.measurement
    assert math.isfinite(a.measurement.weight_kg)
