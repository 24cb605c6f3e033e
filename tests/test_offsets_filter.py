"""The filter subtracts the configured offsets before it updates, and shows them (issue 13, 2).

A reading's offset (:mod:`weightstream.offsets`) is set once where it comes in; every decision
uses the reading less its offset (``Measurement.filter_kg``); the history keeps the reading as
given and its offset, so a replay decides as live did; the results file and ``state`` show the
offsets. The copy rules compare readings as given, whatever their offsets.
"""

from __future__ import annotations

import csv
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config, OffsetConfig
from weightstream.ingest.units import KG_PER_LB
from weightstream.model import BufferedReading, Measurement, Reason, Result, UserState, Verdict
from weightstream.offsets import from_config, offset_kg
from weightstream.pipeline import process_file
from weightstream.processor import Processor
from weightstream.replay import rebuild_user
from weightstream.store import codec, schema, sqlite
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import generate
from weightstream.synth.options import DEFAULT_SOURCE_OFFSETS
from weightstream.testing import FakeClock

IGLUCOSE = "https://api.iglucose.com"
QUESTIONNAIRE = "internal-questionnaire"
#: synth's true offsets of the ``offsets`` scenario, as a configuration would hold them.
TRUE_OFFSETS = OffsetConfig(
    reference="care-team-upload",
    sources=dict(DEFAULT_SOURCE_OFFSETS),
    time_of_day={"day": 0.4, "evening": 0.8},
)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _readings(users: int = 12, per_user: int = 40, seed: int = 5) -> list[Measurement]:
    """synth's ``offsets`` scenario as readings (processing order per user)."""
    data = generate(users, per_user, seed=seed, scenario="offsets")
    out = []
    for k, row in enumerate(data.rows):
        when = datetime.fromisoformat(row.effective.replace(" ", "T")).replace(tzinfo=UTC)
        value = float(row.weight)
        kg = value if row.unit == "kg" else value * KG_PER_LB
        out.append(
            Measurement(row.id or f"r{k}", row.user_id, when, value, row.unit, kg, row.source_type)
        )
    return sorted(out, key=lambda m: (m.user_id, m.timestamp, m.source, m.reading_id))


def _run(readings: list[Measurement], config: Config) -> list[Result]:
    p = Processor(MemoryStore(), config, clock=FakeClock(NOW))
    return [p.process_one(m) for m in readings]


def test_an_offset_reading_is_filtered_on_the_reference_scale() -> None:
    """Raw readings with the offsets configured decide as the readings less their offsets
    without any: the same verdicts, filtered weights, trends and std (1e-9)."""
    readings = _readings()
    offsets = from_config(TRUE_OFFSETS)
    shifted = []
    for m in readings:
        kg = m.weight_kg - offset_kg(offsets, m.source, m.timestamp)
        shifted.append(Measurement(m.reading_id, m.user_id, m.timestamp, kg, "kg", kg, m.source))
    plain = _run(shifted, Config())
    with_offsets = _run(readings, Config(offsets=TRUE_OFFSETS))
    assert sum(1 for m in readings if offset_kg(offsets, m.source, m.timestamp)) > 100
    for a, b, m in zip(plain, with_offsets, readings, strict=True):
        assert (a.verdict, a.reason, a.reset_type) == (b.verdict, b.reason, b.reset_type)
        for name in ("filtered_weight", "trend_kg_week", "std_kg"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                assert abs(x - y) <= 1e-9, name
        assert a.offset_kg is None  # none configured
        assert b.offset_kg == offset_kg(offsets, m.source, m.timestamp)
        assert b.weight_kg == m.weight_kg  # the reading as given
    # and not trivially: without the offsets the raw readings filter differently
    raw = _run(readings, Config())
    assert any(
        r.filtered_weight is not None
        and b.filtered_weight is not None
        and abs(r.filtered_weight - b.filtered_weight) > 0.1
        for r, b in zip(raw, with_offsets, strict=True)
    )


def test_the_history_keeps_the_reading_as_given_and_a_rebuild_decides_as_live(
    tmp_path: Path,
) -> None:
    """Stored: weight as given and its offset; a rebuild from history equals the live state."""
    config = Config(offsets=TRUE_OFFSETS)
    readings = [m for m in _readings(users=4) if m.user_id == _readings(users=4)[0].user_id]
    with SQLiteStore(tmp_path / "w.db") as store:
        p = Processor(store, config, clock=FakeClock(NOW))
        for m in readings:
            p.process_one(m)
        user = readings[0].user_id
        history = store.history(user)
        offsets = from_config(TRUE_OFFSETS)
        for row in history:
            expected = offset_kg(offsets, row.measurement.source, row.measurement.timestamp)
            assert row.measurement.offset_kg == expected
        assert {r.measurement.weight_kg for r in history} == {m.weight_kg for m in readings}
        rebuilt = rebuild_user(store, user, config)
        assert rebuilt.equal and not rebuilt.changed
        state = store.load_state(user)
        assert state is not None
        assert any(b.offset_kg for b in state.buffer)
        for b in state.buffer:  # less its offset; as given = weight_kg + offset_kg
            assert b.weight_kg == next(
                m.weight_kg - b.offset_kg for m in readings if m.reading_id == b.reading_id
            )


def test_a_late_reading_replays_with_the_stored_offsets(tmp_path: Path) -> None:
    """A reading sent late is replayed into place: results equal those of sorted input."""
    config = Config(offsets=TRUE_OFFSETS)
    user = _readings(users=3)[0].user_id
    readings = [m for m in _readings(users=3) if m.user_id == user][:25]
    in_order = _run(readings, config)
    late = readings[10]
    p = Processor(MemoryStore(), config, clock=FakeClock(NOW))
    for m in readings:
        if m is not late:
            p.process_one(m)
    p.process_one(late)
    history = {r.measurement.reading_id: r.result for r in p.store.history(user)}
    for m, want in zip(readings, in_order, strict=True):
        got = history[m.reading_id]
        assert (got.verdict, got.filtered_weight, got.std_kg) == (
            want.verdict,
            want.filtered_weight,
            want.std_kg,
        )


def test_buffer_entries_round_trip_with_their_offsets() -> None:
    """An entry with an offset is stored with it; one without is stored as before (6 fields)."""
    t = datetime(2025, 3, 1, 19, 5, 7, tzinfo=UTC)
    m = Measurement("r1", "u1", t, 81.3, "kg", 81.3, IGLUCOSE, offset_kg=1.8)
    with_offset = BufferedReading.of(m)
    assert with_offset.weight_kg == 81.3 - 1.8 and with_offset.offset_kg == 1.8
    plain = BufferedReading.of(replace(m, offset_kg=0.0))
    state = UserState("u1", buffer=(with_offset, plain), version=1)
    row = codec.state_to_row(state)
    packed = row[codec.STATE_COLUMNS.index("buffer")]
    assert packed.count("1.8]") == 1 and packed.endswith('"r1"]]')
    assert codec.row_to_state(row).buffer == (with_offset, plain)


def test_migration_4_adds_the_offset_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version 3 file gains readings.offset_kg (0 for its readings) and results.offset_kg
    (NULL for its results)."""
    db = tmp_path / "v3.db"
    monkeypatch.setattr(sqlite, "MIGRATIONS", schema.MIGRATIONS[:3])
    SQLiteStore(db).close()
    monkeypatch.undo()
    raw = sqlite3.connect(db)
    raw.execute(
        "INSERT INTO readings (key, content_key, user_id, ts, value, unit, weight_kg, "
        "source, verdict, reason, message) VALUES ('r1', 'h:1', 'u1', 1735718400000000, "
        "80.0, 'kg', 80.0, 's', 'accepted', 'ok', '')"
    )
    raw.execute(
        "INSERT INTO results (row, reading_id, user_id, verdict, reason, message) "
        "VALUES (2, 'r1', 'u1', 'accepted', 'ok', '')"
    )
    raw.commit()
    raw.close()
    with SQLiteStore(db) as store:
        (row,) = store.history("u1")
        assert row.measurement.offset_kg == 0.0 and row.result.offset_kg is None
        assert row.measurement.filter_kg == 80.0
        versions = [
            v
            for (v,) in store.connection.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            )
        ]
        assert versions[:4] == [1, 2, 3, 4]
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT offset_kg FROM results").fetchall() == [(None,)]
    raw.close()


# -- the results file and `state` -------------------------------------------------------------

HEADER = ["id", "user_id", "effectiveDateTime", "source_type", "weight", "unit"]
ROWS = [
    ["a", "u1", "2025-03-01 07:10:11", "care-team-upload", "80.2", "kg"],
    ["b", "u1", "2025-03-02 19:30:05", IGLUCOSE, "81.9", "kg"],
    ["c", "u1", "2025-03-03 00:00:00", QUESTIONNAIRE, "175", "[lb_ap]"],
    ["d", "u1", "2025-03-04 12:00:00", "patient-device", "80.5", "kg"],
    ["e", "u1", "2025-03-04 12:00:00", "patient-device", "80.5", "kg"],  # duplicate content
]
CONFIG_TOML = """
[offsets]
reference = "care-team-upload"
time_of_day = { day = 0.4, evening = 0.8 }

[offsets.sources]
"https://api.iglucose.com" = 1.0
"internal-questionnaire" = -1.5
"""


def _export(tmp_path: Path) -> Path:
    src = tmp_path / "export.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *ROWS])
    return src


@pytest.mark.parametrize("engine", ["compiled", "step"])
def test_the_results_file_shows_each_readings_offset(tmp_path: Path, engine: str) -> None:
    """offset_kg is the results file's last column: each reading's offset with offsets
    configured (0.0 included), an empty cell without."""
    src = _export(tmp_path)
    got = {}
    for name, offsets in (("none", OffsetConfig()), ("true", TRUE_OFFSETS)):
        config = Config(offsets=offsets, processing={"engine": engine})
        with SQLiteStore(tmp_path / f"{name}.db") as store:
            process_file(src, store, config, out=tmp_path / f"{name}.csv")
        with (tmp_path / f"{name}.csv").open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            got[name] = [dict(zip(header, r, strict=True)) for r in reader]
        assert header[-1] == "offset_kg"
    assert [r["offset_kg"] for r in got["none"]] == [""] * len(ROWS)
    assert [r["offset_kg"] for r in got["true"]] == ["0.0", "1.8", "-1.5", "0.4", "0.4"]
    assert got["true"][4]["verdict"] == "duplicate"
    # the weight shown is the reading as given, the filtered weight on the reference scale
    assert got["true"][1]["weight_kg"] == got["none"][1]["weight_kg"] == "81.9"


def test_state_shows_the_offsets_in_use(tmp_path: Path) -> None:
    """``weightstream state`` lists the configured offsets, or says there are none."""
    src = _export(tmp_path)
    config = tmp_path / "w.toml"
    config.write_text(CONFIG_TOML, encoding="utf-8")
    db = tmp_path / "w.db"
    runner = CliRunner()
    run = runner.invoke(
        app,
        [
            "process",
            str(src),
            "--db",
            str(db),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "r.csv"),
        ],
    )
    assert run.exit_code == 0, run.output
    shown = runner.invoke(
        app, ["state", "u1", "--db", str(db), "--config", str(config)], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.output
    assert "offsets" in shown.output
    assert "reference care-team-upload" in shown.output
    assert f"{IGLUCOSE} +1.00 kg" in shown.output
    assert "internal-questionnaire -1.50 kg" in shown.output
    assert "evening +0.80 kg" in shown.output
    assert "+1.80" in shown.output  # the iglucose evening reading's offset in the history
    plain = runner.invoke(app, ["state", "u1", "--db", str(db)], env={"COLUMNS": "200"})
    assert plain.exit_code == 0, plain.output
    assert any("offsets" in line and "none" in line for line in plain.output.splitlines())


# -- the copy rules compare readings as given -------------------------------------------------


def test_a_copy_in_pounds_from_a_source_with_another_offset_is_caught() -> None:
    """A kg row and its [lb_ap] copy at the same instant, from sources whose offsets differ
    (+1.0 and -1.5 kg): still one weighing, counted once."""
    t = datetime(2025, 3, 1, 8, 15, 42, tzinfo=UTC)
    kg = Measurement("a", "u1", t, 137.44, "kg", 137.44, IGLUCOSE)
    lb = Measurement("b", "u1", t, 303.0, "[lb_ap]", 303.0 * KG_PER_LB, QUESTIONNAIRE)
    for order in ((kg, lb), (lb, kg)):
        store = MemoryStore()
        p = Processor(store, Config(offsets=TRUE_OFFSETS), clock=FakeClock(NOW))
        for m in order:
            p.process_one(m)
        results = sorted((r.result for r in store.history("u1")), key=lambda r: r.verdict)
        assert [r.verdict for r in results] == [Verdict.ACCEPTED, Verdict.DUPLICATE]
        assert results[1].reason is Reason.SAME_READING_OTHER_UNIT
        state = store.load_state("u1")
        assert state is not None and state.accepted_count == 1


@pytest.mark.parametrize("engine", ["compiled", "step"])
def test_a_file_with_a_copy_across_offsets_counts_it_once(tmp_path: Path, engine: str) -> None:
    """The same pair in a file, through the compiled engine and the step: one is a copy."""
    src = tmp_path / "x.csv"
    rows = [
        ["p", "u1", "2025-02-27 08:00:03", "patient-device", "137.9", "kg"],
        ["q", "u1", "2025-02-28 08:00:03", "patient-device", "137.6", "kg"],
        ["a", "u1", "2025-03-01 08:15:42", IGLUCOSE, "137.44", "kg"],
        ["b", "u1", "2025-03-01 08:15:42", QUESTIONNAIRE, "303.0", "[lb_ap]"],
    ]
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *rows])
    config = Config(offsets=TRUE_OFFSETS, processing={"engine": engine})
    with SQLiteStore(tmp_path / "x.db") as store:
        process_file(src, store, config, out=tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(newline="") as fh:
        by_id = {r["reading_id"]: r for r in csv.DictReader(fh)}
    assert sorted(by_id[k]["reason"] for k in "ab") == ["ok", "same_reading_other_unit"]
