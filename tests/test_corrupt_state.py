"""A stored state row that does not decode or validate is one user's problem (issue 10, E2, I12).

Each corruption is written into one user's row of a real SQLite database through a second
connection, around our CHECK constraints, the way a bug, a hand edit or a disk could. Then
``weightstream process`` runs a file that touches that user and two others:

* exit 0, and the others' results are exactly those of a run on the uncorrupted database;
* the corrupt user is rebuilt from its history (its results are then exactly the control's
  too, since a rebuild equals live processing) or, with no history, quarantined: it starts
  fresh; either way with a recovery record naming the field, never a value;
* a later run loads the user without error and records nothing more (no crash loop).

On the old main each of these runs stopped for every user: a traceback and exit 1 (exit 75
after 4.5 s of retries for version 0).
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from weightstream.config import Config
from weightstream.errors import StateCorruptionError
from weightstream.processor import Processor
from weightstream.repair import QUARANTINED, REBUILT, load_checked
from weightstream.resets.validator import StateValidator
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FakeClock

USERS = ("a", "b", "c")
BASE = {"a": 80.0, "b": 95.0, "c": 60.0}

#: One user's row corrupted as in the issue: SQL run with CHECK constraints ignored.
CORRUPTIONS = {
    "buffer_not_json": "UPDATE user_states SET buffer = '[[1, 80.0, \"x\"' WHERE user_id = ?",
    "unknown_reset_type": "UPDATE user_states SET last_reset_type = 'sideways' WHERE user_id = ?",
    "text_in_numeric_column": "UPDATE user_states SET x0 = 'eighty' WHERE user_id = ?",
    "time_past_datetime_range": (
        "UPDATE user_states SET kalman_ts = 9223372036854775807 WHERE user_id = ?"
    ),
    "negative_count": "UPDATE user_states SET accepted_count = -3 WHERE user_id = ?",
    "version_zero": "UPDATE user_states SET version = 0 WHERE user_id = ?",
    "null_where_a_number_must_be": "UPDATE user_states SET x0 = NULL WHERE user_id = ?",
    "nan_p_as_null": "UPDATE user_states SET p00 = NULL WHERE user_id = ?",
}


def write_export(path: Path, first_day: int, days: int) -> Path:
    """Daily readings of users a, b, c (a small wobble around each base weight)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "user_id", "timestamp", "weight", "unit", "source"])
        for day in range(first_day, first_day + days):
            for user in USERS:
                weight = BASE[user] + 0.1 * (day % 4)
                out.writerow([f"{user}-{day}", user, f"2025-02-{day:02d}T07:30:00Z",
                              f"{weight:.1f}", "kg", "patient-device"])
    return path


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, cli_fast: Callable[..., Any]
) -> tuple[Path, Path, Path]:
    """(a database holding ten days of a, b, c; the next file; a later file)."""
    d = tmp_path_factory.mktemp("corrupt")
    db = d / "seed.db"
    first = cli_fast("process", write_export(d / "first.csv", 1, 10), "--db", db)
    assert first.returncode == 0, first.stdout + first.stderr
    return db, write_export(d / "next.csv", 11, 3), write_export(d / "later.csv", 14, 2)


def corrupt(db: Path, user: str, how: str) -> None:
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA ignore_check_constraints = ON")
    assert raw.execute(CORRUPTIONS[how], (user,)).rowcount == 1
    raw.commit()
    raw.close()


def results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def recoveries(db: Path, user: str) -> list[tuple[str, int, str]]:
    with sqlite3.connect(db) as raw:
        rows = raw.execute(
            "SELECT strategy, succeeded, detail FROM recovery_attempts WHERE user_id = ?",
            (user,),
        ).fetchall()
    raw.close()
    return rows


def run(cli_fast: Callable[..., Any], db: Path, export: Path, out: Path) -> None:
    res = cli_fast("process", export, "--db", db, "--out", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_corrupt_row_is_rebuilt_for_that_user_and_the_run_goes_on(
    seeded: tuple[Path, Path, Path], tmp_path: Path, how: str,
    cli_fast: Callable[..., Any],
) -> None:
    """One user's row corrupted (each example of issue 10): `process` exits 0, every result
    equals the uncorrupted run's (the others' untouched, the user's rebuilt equal to live),
    one state_rebuilt record names the field, and a later run needs no repair."""
    seed, nxt, later = seeded
    control, broken = tmp_path / "control.db", tmp_path / "broken.db"
    shutil.copyfile(seed, control)
    shutil.copyfile(seed, broken)
    corrupt(broken, "a", how)
    with pytest.raises(StateCorruptionError) as caught:  # detected on load, typed
        load_checked(SQLiteStore(broken), "a", StateValidator())
    assert caught.value.user_id == "a"

    run(cli_fast, control, nxt, tmp_path / "control.csv")
    run(cli_fast, broken, nxt, tmp_path / "broken.csv")

    assert results(tmp_path / "broken.csv") == results(tmp_path / "control.csv")
    records = recoveries(broken, "a")
    assert [(s, ok) for s, ok, _ in records] == [(REBUILT, 1)]
    field = CORRUPTIONS[how].split(" SET ")[1].split(" ")[0]
    said = {"x0": "x contains NaN", "p00": "P contains NaN"} if "null" in how else {}
    assert said.get(field, f"does not decode: {field}") in records[0][2]
    assert "eighty" not in records[0][2] and "80" not in records[0][2]
    assert recoveries(broken, "b") == recoveries(broken, "c") == []
    store = SQLiteStore(broken)
    assert store.load_state("a") is not None
    assert StateValidator().user_state_problems(store.load_state("a")) == []  # type: ignore[arg-type]
    assert store.integrity_check() == "ok"
    store.close()

    run(cli_fast, broken, later, tmp_path / "later.csv")  # no crash loop, no second repair
    assert len(recoveries(broken, "a")) == 1


def test_a_corrupt_user_without_history_is_quarantined_and_starts_fresh(
    seeded: tuple[Path, Path, Path], tmp_path: Path, cli_fast: Callable[..., Any]
) -> None:
    """No history to rebuild from: the row is replaced by an empty state with a
    state_quarantined record (succeeded 0); the user's next reading starts its filter again
    (an initial reset), the others' results equal the control's, and later loads are clean."""
    seed, nxt, later = seeded
    control, broken = tmp_path / "control.db", tmp_path / "broken.db"
    shutil.copyfile(seed, control)
    shutil.copyfile(seed, broken)
    with sqlite3.connect(broken) as raw:
        raw.execute("DELETE FROM readings WHERE user_id = 'a'")
    raw.close()
    corrupt(broken, "a", "buffer_not_json")

    run(cli_fast, control, nxt, tmp_path / "control.csv")
    run(cli_fast, broken, nxt, tmp_path / "broken.csv")

    mine, theirs = results(tmp_path / "broken.csv"), results(tmp_path / "control.csv")
    assert [r for r in mine if r["user_id"] != "a"] == [r for r in theirs if r["user_id"] != "a"]
    first_a = next(r for r in mine if r["user_id"] == "a")
    assert first_a["verdict"] == "accepted" and first_a["reset_type"] == "initial"
    assert [(s, ok) for s, ok, _ in recoveries(broken, "a")] == [(QUARANTINED, 0)]
    store = SQLiteStore(broken)
    state = store.load_state("a")
    assert state is not None and state.accepted_count == 3  # the three new readings only
    store.close()
    run(cli_fast, broken, later, tmp_path / "later.csv")
    assert len(recoveries(broken, "a")) == 1


def test_batch_prefetch_decodes_each_row_alone(
    seeded: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """load_states (the batch prefetch) leaves out the one row that does not decode and
    returns the others; the corrupt user alone raises, when loaded alone."""
    db = tmp_path / "e.db"
    shutil.copyfile(seeded[0], db)
    corrupt(db, "b", "buffer_not_json")
    store = SQLiteStore(db)
    assert set(store.load_states(USERS)) == {"a", "c"}
    with pytest.raises(StateCorruptionError):
        store.load_state("b")
    store.close()


@pytest.mark.parametrize("how", ["buffer_not_json", "version_zero", "null_where_a_number_must_be"])
def test_estimate_only_reads_and_raises_the_typed_error(
    seeded: tuple[Path, Path, Path], tmp_path: Path, how: str
) -> None:
    """estimate() is read-only (issue 10): for a corrupt user it raises StateCorruptionError
    and the database is byte-for-byte what it was; other users' estimates still work. (On the
    old main it wrote a rebuild, or raised a raw JSONDecodeError.)"""
    db = tmp_path / "e.db"
    shutil.copyfile(seeded[0], db)
    corrupt(db, "a", how)
    before = db.read_bytes()
    store = SQLiteStore(db)
    processor = Processor(store, Config(), clock=FakeClock())
    with pytest.raises(StateCorruptionError):
        processor.estimate("a")
    with pytest.raises(StateCorruptionError):
        processor.estimate("a")  # nothing was cached or repaired by the first call
    assert processor.estimate("b") is not None
    store.close()
    assert db.read_bytes() == before


def test_a_repair_racing_another_repair_is_a_conflict_not_a_double_write(
    seeded: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The repair replaces the row only while its raw version is what was read: a second
    repairer that read the same corrupt row gets ConflictError and, redone, finds it valid."""
    from weightstream.errors import ConflictError
    from weightstream.repair import repair_user

    db = tmp_path / "e.db"
    shutil.copyfile(seeded[0], db)
    corrupt(db, "a", "version_zero")
    first, second = SQLiteStore(db), SQLiteStore(db)
    with pytest.raises(StateCorruptionError) as e1:
        first.load_state("a")
    with pytest.raises(StateCorruptionError) as e2:
        second.load_state("a")
    validator = StateValidator()
    repaired = repair_user(first, "a", Config(), e1.value, validator=validator)
    with pytest.raises(ConflictError):
        repair_user(second, "a", Config(), e2.value, validator=validator)
    assert second.load_state("a") == repaired
    assert len(recoveries(db, "a")) == 1
    first.close()
    second.close()


def test_recover_apply_repairs_a_row_that_does_not_decode(
    seeded: tuple[Path, Path, Path], tmp_path: Path, cli_fast: Callable[..., Any]
) -> None:
    """`recover USER --apply` on a state row that does not decode rebuilds it (was: exit 75)."""
    db = tmp_path / "copy.db"
    shutil.copy(seeded[0], db)
    corrupt(db, "b", "buffer_not_json")
    done = cli_fast("recover", "b", "--db", db, "--apply")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("state_rebuilt", 1) in [(s, ok) for s, ok, _ in recoveries(db, "b")]
    again = cli_fast("state", "b", "--db", db)
    assert again.returncode == 0, again.stdout + again.stderr
