"""A database written by an earlier version is migrated in place, its data intact.

Migration 2 identifies readings within their user (and leads every history index with the
user); migration 3 stores a result's input as a number and its quality components as three
numbers. A database at version 1, filled the way version 1 wrote it, is opened by today's store:
its history, results (components decoded from the old JSON), keys and positions read back as
they were, and new units commit on top of them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from weightstream.model import Result, Verdict
from weightstream.store import schema, sqlite
from weightstream.store.base import UnitOfWork
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import measurement

T = 1_735_718_400_000_000  # 2025-01-01T08:00:00Z in microseconds


def _version_1(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "MIGRATIONS", schema.MIGRATIONS[:1])
    SQLiteStore(db).close()
    monkeypatch.undo()
    raw = sqlite3.connect(db)
    reading = (
        "INSERT INTO readings (key, content_key, user_id, ts, value, unit, weight_kg, "
        "source, verdict, reason, message, filtered_weight, trend_kg_week, std_kg, "
        "reset_type, reset_outcome, quality) VALUES "
        "(?, ?, ?, ?, 80.0, 'kg', 80.0, 'patient-device', 'accepted', 'ok', '', 80.0, 0.0, "
        "0.7, 'initial', 'committed', 0.9)"
    )
    raw.execute(reading, ("r1", "h:1", "u1", T))
    raw.execute(reading, ("r2", "h:2", "u2", T))
    result = (
        "INSERT INTO results (input_id, row, reading_id, user_id, verdict, reason, message, "
        "ts, source, weight_kg, filtered_weight, trend_kg_week, std_kg, reset_type, "
        "reset_outcome, quality, quality_components) VALUES "
        "('in.csv', ?, ?, ?, 'accepted', 'ok', '', ?, 'patient-device', 80.0, 80.0, 0.0, "
        "0.7, 'initial', 'committed', 0.9, ?)"
    )
    raw.execute(result, (2, "r1", "u1", T, '[["innovation", 1.0], ["rate", 1.0], ["source", 1.0]]'))
    raw.execute(
        result, (3, "r2", "u2", T, '[["innovation", 0.5], ["rate", 0.25], ["source", 1.0]]')
    )
    raw.execute("INSERT INTO input_positions VALUES ('in.csv', 2, 0)")
    raw.commit()
    raw.close()


def test_a_version_1_database_is_migrated_with_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History, results (with components), keys and positions survive migrations 2 and 3."""
    db = tmp_path / "old.db"
    _version_1(db, monkeypatch)
    with SQLiteStore(db) as store:
        versions = [
            v
            for (v,) in store.connection.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            )
        ]
        assert versions == [m[0] for m in schema.MIGRATIONS]
        assert [h.measurement.reading_id for h in store.history("u1")] == ["r1"]
        results = list(store.results_for_input("in.csv"))
        assert [(r.row, r.reading_id, r.verdict) for r in results] == [
            (2, "r1", Verdict.ACCEPTED),
            (3, "r2", Verdict.ACCEPTED),
        ]
        assert results[1].quality_components == (
            ("innovation", 0.5),
            ("rate", 0.25),
            ("source", 1.0),
        )
        assert [row[1] for row in store.iter_result_rows("in.csv")] == ["r1", "r2"]
        assert store.existing_keys([("u1", "r1"), ("u2", "r1"), ("u2", "h:2")]) == {
            ("u1", "r1"),
            ("u2", "h:2"),
        }
        assert store.position("in.csv") == 2
        # New rows on top: the same input keeps its number; a reading id of u1 is new for u3.
        m = measurement(81.0, day=40, user="u3", reading_id="r1")
        unit = UnitOfWork(position=("in.csv", 3))
        r = Result(
            reading_id="r1",
            user_id="u3",
            verdict=Verdict.ACCEPTED,
            row=4,
            timestamp=m.timestamp,
            source=m.source,
            weight_kg=81.0,
            quality_components=(("innovation", 0.1), ("rate", 0.2), ("source", 0.3)),
        )
        unit.readings.append((m, r))
        unit.results.append(("in.csv", r))
        store.commit(unit)
        again = list(store.results_for_input("in.csv"))
        assert [x.row for x in again] == [2, 3, 4]
        assert again[2].quality_components == r.quality_components
        refs = store.connection.execute("SELECT count(*) FROM inputs").fetchone()[0]
        assert refs == 1
