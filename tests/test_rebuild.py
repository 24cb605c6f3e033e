"""Rebuild from history (RELIABILITY.md E1, E2, E3, I7) and the ``weightstream recover`` command.

* E1: for random histories (duplicates, gaps of 30+ days, manual entries, out-of-order
  readings), replaying the stored history gives the live state bit for bit;
* E2: a state row corrupted behind our back (NULL, NaN stored as NULL, P <= 0) is detected on
  load and rebuilt for that user alone, without a crash loop;
* E3: a rebuild applied after a concurrent write conflicts instead of losing the write.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config, ProcessingConfig
from weightstream.errors import ConflictError, StateCorruptionError
from weightstream.model import Measurement, UserState, Verdict
from weightstream.processor import Batch, Processor
from weightstream.replay import apply_rebuild, rebuild_user, replay
from weightstream.resets.validator import StateValidator
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import T0, FakeClock, measurement

CFG = Config()
VALIDATOR = StateValidator()
MANUAL = ("patient-upload", "care-team-upload")
HEAL_LOG = "rebuilt from history"


def open_store(path: Path) -> SQLiteStore:
    return SQLiteStore(path)


# -- E1: rebuild equals live ------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> list[Measurement]:
    """Readings of users u and v in arrival order, with every kind of trouble mixed in."""
    out: list[Measurement] = []
    clock = {"u": T0, "v": T0 + timedelta(hours=5)}
    level = {"u": 80.0, "v": 110.0}
    for i in range(draw(st.integers(min_value=2, max_value=22))):
        user = draw(st.sampled_from(["u", "u", "v"]))
        kind = draw(st.sampled_from(
            ["step", "step", "step", "gap", "manual", "outlier", "late", "dup_key",
             "dup_content", "same_time"]))
        mine = [m for m in out if m.user_id == user]
        if kind in ("dup_key", "dup_content", "late", "same_time") and not mine:
            kind = "step"
        if kind == "dup_key":  # the same reading sent again
            out.append(draw(st.sampled_from(mine)))
            continue
        if kind == "dup_content":  # the same content under another id
            old = draw(st.sampled_from(mine))
            out.append(replace(old, reading_id=f"{user}-{i}-again"))
            continue
        source, when = "patient-device", clock[user]
        weight = level[user] + draw(st.floats(min_value=-1.0, max_value=1.0))
        if kind == "step":
            when += timedelta(minutes=draw(st.integers(min_value=30, max_value=6 * 24 * 60)))
        elif kind == "gap":
            when += timedelta(days=draw(st.integers(min_value=30, max_value=400)))
            weight += draw(st.floats(min_value=-8.0, max_value=8.0))
        elif kind == "manual":
            when += timedelta(hours=draw(st.integers(min_value=1, max_value=120)))
            source = draw(st.sampled_from(MANUAL))
            weight += draw(st.sampled_from([-6.0, -3.5, 0.0, 3.0, 5.0]))
        elif kind == "outlier":
            when += timedelta(hours=draw(st.integers(min_value=1, max_value=48)))
            weight = draw(st.sampled_from([weight * 2.20462, weight / 2.20462, weight + 25.0]))
        elif kind == "late":  # older than the user's last reading
            when -= timedelta(minutes=draw(st.integers(min_value=1, max_value=40 * 24 * 60)))
            source = draw(st.sampled_from(["patient-device", *MANUAL]))
        # same_time: another value at the instant of the user's last reading
        weight = round(weight, 2)
        out.append(Measurement(f"{user}-{i}", user, when, weight, "kg", weight, source))
        if kind != "late":
            clock[user] = when
            if kind not in ("outlier", "manual"):
                level[user] = weight
    return out


_db_names = itertools.count()


def process_live(store: SQLiteStore, readings: list[Measurement], cfg: Config,
                 group: int) -> None:
    """Live ingest: one commit per reading (group 1) or group commits of ``group`` readings."""
    p = Processor(store, cfg, clock=FakeClock())
    if group == 1:
        for m in readings:
            assert p.process_one(m).reading_id == m.reading_id
        return
    for start in range(0, len(readings), group):
        batch = Batch(p, "live")
        chunk = readings[start:start + group]
        batch.prefetch(chunk)
        for row, m in enumerate(chunk, start=start):
            batch.process(m, row=row)
        batch.commit(position=("live", start + len(chunk)))


@seed(20250917)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(readings=histories(), policy=st.sampled_from(["replay", "reject_late"]),
       group=st.sampled_from([1, 1, 5]))
def test_rebuild_equals_live_for_random_histories(
    tmp_path: Path, readings: list[Measurement], policy: str, group: int
) -> None:
    """Whatever the history, rebuilding each user from the stored readings gives exactly the
    stored live state, and re-decides every stored reading the same way."""
    cfg = Config(processing=ProcessingConfig(late_policy=policy))  # type: ignore[arg-type]
    store = open_store(tmp_path / f"e1-{next(_db_names)}.db")
    try:
        process_live(store, readings, cfg, group)
        for user in {m.user_id for m in readings}:
            keys = [row.measurement.reading_id for row in store.history(user)]
            assert len(keys) == len(set(keys))
            rebuild = rebuild_user(store, user, cfg)
            live = store.load_state(user)
            assert rebuild.rebuilt == live
            assert rebuild.changed == []
            assert rebuild.differences() == []
            assert live is not None and VALIDATOR.user_state_problems(live) == []
    finally:
        store.close()


def test_rebuild_notices_a_state_that_is_not_the_replay(tmp_path: Path) -> None:
    """Control for E1: a live state that is off by one accepted reading is reported as different."""
    store = open_store(tmp_path / "control.db")
    process_live(store, [measurement(80.0 + 0.1 * i, i) for i in range(5)], CFG, 1)
    live = store.load_state("u1")
    assert live is not None
    tampered = replace(live, accepted_count=live.accepted_count + 1)
    with sqlite3.connect(tmp_path / "control.db") as raw:
        raw.execute("UPDATE user_states SET accepted_count = ? WHERE user_id = 'u1'",
                    (tampered.accepted_count,))
    raw.close()
    rebuild = rebuild_user(store, "u1", CFG)
    assert rebuild.rebuilt != store.load_state("u1")
    assert rebuild.differences() == ["accepted_count"]
    store.close()


# -- E2: a corrupt state row is detected on load and rebuilt for that user alone --------------

CORRUPTIONS = {
    "p00_null": "UPDATE user_states SET p00 = NULL WHERE user_id = ?",
    "x0_nan_as_null": "UPDATE user_states SET x0 = NULL WHERE user_id = ?",
    "p00_negative": "UPDATE user_states SET p00 = -0.25 WHERE user_id = ?",
    "p00_zero": "UPDATE user_states SET p00 = 0.0 WHERE user_id = ?",
}


def user_readings(user: str, base: float, n: int = 10) -> list[Measurement]:
    """Daily readings with a hard-reset gap and a manual entry in the middle."""
    out = []
    day = 0.0
    for i in range(n):
        day += 35.0 if i == 5 else 1.0
        source = MANUAL[0] if i == 7 else "patient-device"
        out.append(measurement(base + 0.1 * (i % 4), day, user=user, source=source))
    return out


def raw_rows(db: Path, user: str) -> dict[str, list[str]]:
    """Every stored row of ``user``, as the repr of what sqlite returns (exact for floats)."""
    with sqlite3.connect(db) as raw:
        out = {
            table: [repr(row) for row in raw.execute(
                f"SELECT * FROM {table} WHERE user_id = ? ORDER BY 1", (user,))]
            for table in ("user_states", "last_good_states", "readings", "reset_audit",
                          "recovery_attempts")
        }
    raw.close()
    return out


def corrupt(db: Path, user: str, how: str) -> None:
    """Write an invalid state row the way a bug or a disk could: around our constraints."""
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA ignore_check_constraints = ON")
    raw.execute(CORRUPTIONS[how], (user,))
    raw.commit()
    raw.close()


@pytest.fixture(scope="module")
def three_users_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("e2") / "template.db"
    store = open_store(db)
    readings = [*user_readings("a", 80.0), *user_readings("b", 95.0), *user_readings("c", 60.0)]
    process_live(store, readings, CFG, 1)
    store.close()  # the last connection closing checkpoints the WAL into the file
    return db


@pytest.fixture
def three_users(three_users_template: Path, tmp_path: Path) -> Path:
    """A database of users a, b, c with ten readings each (a copy per test)."""
    db = tmp_path / "e2.db"
    shutil.copyfile(three_users_template, db)
    return db


def expected_after(user: str, base: float, extra: list[Measurement]) -> UserState:
    state, _ = replay([*user_readings(user, base), *extra], CFG)
    assert state is not None
    return state


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
@pytest.mark.parametrize("path", ["process_one", "batch"])
def test_corrupt_state_row_is_rebuilt_for_that_user_alone(
    three_users: Path, how: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The corrupt row is caught on load, rebuilt from history before the next reading is
    applied, the other users' rows stay byte-equal, and the next readings go through."""
    db = three_users
    others = {u: raw_rows(db, u) for u in ("b", "c")}
    corrupt(db, "a", how)
    store = open_store(db)
    bad = store.load_state("a")
    assert bad is not None and VALIDATOR.user_state_problems(bad) != []
    nxt = [measurement(80.2, 48.0, user="a"), measurement(80.1, 49.0, user="a")]
    caplog.set_level(logging.WARNING, logger="weightstream.repair")
    for m in nxt:  # twice in a row, each time with a fresh processor: no crash loop
        p = Processor(store, CFG, clock=FakeClock())
        if path == "process_one":
            result = p.process_one(m)
        else:
            batch = Batch(p, f"in-{m.reading_id}")
            batch.prefetch([m])
            result = batch.process(m, row=1)
            batch.commit(position=(f"in-{m.reading_id}", 1))
        assert result.verdict is Verdict.ACCEPTED
    healed = store.load_state("a")
    assert healed is not None and VALIDATOR.user_state_problems(healed) == []
    expected = expected_after("a", 80.0, nxt)
    assert replace(healed, version=0) == replace(expected, version=0)
    assert healed.version > bad.version
    assert sum(HEAL_LOG in r.getMessage() for r in caplog.records) == 1
    for user, rows in others.items():
        assert raw_rows(db, user) == rows
    assert store.integrity_check() == "ok"
    store.close()


def test_a_read_only_estimate_reports_corruption_and_writes_nothing(three_users: Path) -> None:
    """estimate() only reads (issue 10): a corrupt user raises StateCorruptionError, is not
    reported from NaN, and no row of the database changes; other users' estimates work."""
    corrupt(three_users, "a", "x0_nan_as_null")
    before = {u: raw_rows(three_users, u) for u in ("a", "b")}
    store = open_store(three_users)
    processor = Processor(store, CFG, clock=FakeClock())
    with pytest.raises(StateCorruptionError) as caught:
        processor.estimate("a")
    assert caught.value.user_id == "a"
    assert processor.estimate("b") is not None
    store.close()
    assert {u: raw_rows(three_users, u) for u in ("a", "b")} == before


# -- E3: a rebuild racing live ingest loses nothing --------------------------------------------


def test_rebuild_applied_after_a_concurrent_write_conflicts(three_users: Path) -> None:
    """Rebuild on one connection, a live reading committed on another, then apply: the apply
    raises ConflictError and the live write stays; redone, the rebuild includes it."""
    db = three_users
    rebuilder, live = open_store(db), open_store(db)
    rebuild = rebuild_user(rebuilder, "a", CFG)
    m = measurement(80.3, 48.0, user="a")
    assert Processor(live, CFG, clock=FakeClock()).process_one(m).verdict is Verdict.ACCEPTED
    after_live = live.load_state("a")
    with pytest.raises(ConflictError):
        apply_rebuild(rebuilder, rebuild)
    assert rebuilder.load_state("a") == after_live
    assert m.reading_id in {r.measurement.reading_id for r in rebuilder.history("a")}
    again = rebuild_user(rebuilder, "a", CFG)
    stored = apply_rebuild(rebuilder, again)
    assert stored is not None and stored.accepted_count == after_live.accepted_count  # type: ignore[union-attr]
    assert stored.buffer[-1].timestamp == m.timestamp
    rebuilder.close()
    live.close()


def test_self_heal_racing_a_writer_loses_nothing(three_users: Path) -> None:
    """A processor healing a corrupt row while another writer stores a reading for the same
    user gets a conflict on one side; retried, both readings are in history and state."""
    db = three_users
    corrupt(db, "a", "p00_negative")
    healer_store, writer_store = open_store(db), open_store(db)
    healer = Processor(healer_store, CFG, clock=FakeClock())
    rebuild = rebuild_user(healer_store, "a", CFG)  # the heal's first half, before the race
    # the other writer heals and writes first
    first = measurement(80.3, 48.0, user="a")
    Processor(writer_store, CFG, clock=FakeClock()).process_one(first)
    with pytest.raises(ConflictError):
        apply_rebuild(healer_store, rebuild)
    second = measurement(80.2, 49.0, user="a")
    assert healer.process_one(second).verdict is Verdict.ACCEPTED
    state = healer_store.load_state("a")
    assert state is not None and VALIDATOR.user_state_problems(state) == []
    assert state.accepted_count == expected_after("a", 80.0, [first, second]).accepted_count
    keys = [r.measurement.reading_id for r in healer_store.history("a")]
    assert keys.count(first.reading_id) == keys.count(second.reading_id) == 1
    healer_store.close()
    writer_store.close()


# -- the recover command ------------------------------------------------------------------


def recover(db: Path, user: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["recover", user, "--db", str(db), *extra])
    return result.exit_code, result.output


def test_recover_reports_equal_for_a_healthy_user(three_users: Path) -> None:
    """A healthy user replays to the stored state: 'equals', nothing written."""
    before = raw_rows(three_users, "b")
    code, out = recover(three_users, "b")
    assert code == 0, out
    assert "replayed 10 readings" in out and "equals" in out
    assert raw_rows(three_users, "b") == before
    code, out = recover(three_users, "b", "--apply")
    assert code == 0 and "applied" not in out
    assert raw_rows(three_users, "b") == before


def test_recover_shows_and_fixes_a_corrupt_user(three_users: Path) -> None:
    """A corrupt user differs; without --apply nothing changes; --apply stores the rebuilt
    state; afterwards the command reports it equal."""
    corrupt(three_users, "a", "p00_null")
    corrupted = raw_rows(three_users, "a")
    code, out = recover(three_users, "a")
    assert code == 0, out
    assert "differs in: kalman" in out and "equals" not in out
    assert raw_rows(three_users, "a") == corrupted
    code, out = recover(three_users, "a", "--apply")
    assert code == 0, out
    assert "applied: state version" in out
    store = open_store(three_users)
    fixed = store.load_state("a")
    assert fixed is not None and VALIDATOR.user_state_problems(fixed) == []
    assert replace(fixed, version=0) == replace(expected_after("a", 80.0, []), version=0)
    store.close()
    code, out = recover(three_users, "a")
    assert code == 0 and "equals" in out, out
    healed = raw_rows(three_users, "a")
    code, out = recover(three_users, "a", "--apply")  # nothing left to apply
    assert code == 0 and "applied" not in out, out
    assert raw_rows(three_users, "a") == healed


def test_recover_unknown_user_is_an_error(three_users: Path) -> None:
    """A user without stored readings: exit code 1 and a message, nothing written."""
    code, out = recover(three_users, "nobody")
    assert code == 1
    assert "no stored readings" in out
