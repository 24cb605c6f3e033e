"""Calibration: offsets learned from stored history recover the generator's true offsets.

The histories are synth's clean readings stored as accepted (what a perfect filter would keep),
so these tests hold the estimator to the truth, not to the filter's verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstream import synth
from weightstream.calibrate import CLINIC_SOURCE, Calibration, calibrate, write_offsets
from weightstream.config import Config, load_config
from weightstream.ingest import RawRow, to_measurement
from weightstream.model import Measurement, ResetType, Result, UserState, Verdict
from weightstream.offsets import from_config
from weightstream.store.base import StateStore, UnitOfWork
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SEED = 1313
OPTS = synth.SynthOptions()
IGLUCOSE = "https://api.iglucose.com"
CONNECTIVE = "https://connectivehealth.io"


def store_history(
    store: StateStore,
    data: synth.SynthData,
    keep: Callable[[synth.TruthRow], bool] = lambda t: t.expected == "valid",
) -> StateStore:
    """Store the rows ``keep`` selects as accepted readings (the first of a user a reset)."""
    config = Config()
    unit = UnitOfWork()
    seen: set[str] = set()
    readings: list[Measurement] = []
    for pos, (row, t) in enumerate(zip(data.rows, data.truth, strict=True)):
        if not keep(t):
            continue
        raw = RawRow(
            pos + 2,
            row.user_id,
            row.effective,
            row.weight,
            row.unit,
            row.source_type,
            row.id or None,
        )
        m = to_measurement(raw, config=config, now=NOW)
        assert isinstance(m, Measurement), m
        readings.append(m)
    readings.sort(key=lambda m: (m.user_id, m.timestamp))
    for m in readings:
        first = m.user_id not in seen
        seen.add(m.user_id)
        result = Result(
            m.reading_id,
            m.user_id,
            Verdict.ACCEPTED,
            timestamp=m.timestamp,
            source=m.source,
            weight_kg=m.weight_kg,
            filtered_weight=m.weight_kg,
            reset_type=ResetType.INITIAL if first else None,
        )
        unit.readings.append((m, result))
    for user in seen:
        unit.put_state(UserState(user_id=user, version=1), 0)
    store.commit(unit)
    return store


@pytest.fixture(scope="module")
def offsets_data() -> synth.SynthData:
    return synth.generate(30, 100, SEED, scenario="offsets")


@pytest.fixture(scope="module")
def calibrated(offsets_data: synth.SynthData) -> Calibration:
    return calibrate(store_history(MemoryStore(), offsets_data), Config())


def _true(name: str, reference: str) -> float:
    if name == "day":
        return OPTS.day_offset_kg
    if name == "evening":
        return OPTS.evening_offset_kg
    return OPTS.source_offset(name) - OPTS.source_offset(reference)


def test_calibration_recovers_the_true_offsets_within_its_intervals(
    calibrated: Calibration,
) -> None:
    """Every estimated offset's 95% interval holds the generator's true offset, and the
    intervals are narrow enough to tell the sources apart (under 0.5 kg each side)."""
    o = calibrated.offsets
    assert o.reference == CLINIC_SOURCE  # the clinic's scale has enough readings
    names = {n for n, _ in o.sources}
    assert {IGLUCOSE, CONNECTIVE, "internal-questionnaire", "patient-device"} <= names
    assert {n for n, _ in o.time_of_day} == {"day", "evening"}
    for name, e in (*o.sources, *o.time_of_day):
        truth = _true(name, o.reference)
        assert e.low <= truth <= e.high, (name, truth, e)
        assert e.high - e.kg < 0.5 and e.kg - e.low < 0.5, (name, e)
        assert e.count >= 30


def test_a_scenario_without_offsets_finds_none(offsets_data: synth.SynthData) -> None:
    """Negative control: the same kind of history without offsets gives intervals around 0,
    and the offsets scenario's big ones (questionnaire, evening) are far outside them."""
    plain = synth.SynthOptions(source_offsets=(), day_offset_kg=0.0, evening_offset_kg=0.0)
    data = synth.generate(30, 100, SEED, scenario="offsets", options=plain)
    cal = calibrate(store_history(MemoryStore(), data), Config())
    for name, e in (*cal.offsets.sources, *cal.offsets.time_of_day):
        assert e.low <= 0.0 <= e.high or abs(e.kg) < 0.1, (name, e)
    assert cal.offsets.band("evening") is not None
    assert cal.offsets.band("evening").high < 0.5  # type: ignore[union-attr]


def test_a_source_with_too_little_data_gets_no_offset(calibrated: Calibration) -> None:
    """A source under the threshold (initial questionnaires: one a user at most) is skipped,
    with its count, and has no offset."""
    skipped = {name: (n, users) for name, n, users in calibrated.skipped}
    assert "initial-questionnaire" in skipped
    assert skipped["initial-questionnaire"][0] < calibrated.min_readings
    assert calibrated.offsets.source("initial-questionnaire") is None


def test_raising_the_threshold_drops_an_offset(offsets_data: synth.SynthData) -> None:
    """With a threshold above a source's comparable readings, that source gets no offset; the
    others still hold their truth."""
    store = store_history(MemoryStore(), offsets_data)
    full = calibrate(store, Config())
    counts = {n: e.count for n, e in full.offsets.sources}
    threshold = counts["patient-upload"] + 1
    assert threshold < counts["patient-device"]
    cal = calibrate(store, Config(), min_readings=threshold)
    assert cal.offsets.source("patient-upload") is None
    assert "patient-upload" in {n for n, _, _ in cal.skipped}
    e = cal.offsets.source(IGLUCOSE)
    assert e is not None and e.low <= _true(IGLUCOSE, CLINIC_SOURCE) <= e.high


def test_reference_can_be_chosen_and_defaults_to_the_most_used(
    offsets_data: synth.SynthData,
) -> None:
    """--reference sets what offsets are relative to; without the clinic's source the most
    used source is the reference."""
    store = store_history(MemoryStore(), offsets_data)
    cal = calibrate(store, Config(), reference="patient-device")
    assert cal.offsets.reference == "patient-device"
    e = cal.offsets.source(CLINIC_SOURCE)
    assert e is not None and e.low <= 0.0 - OPTS.source_offset("patient-device") <= e.high
    no_clinic = store_history(
        MemoryStore(),
        offsets_data,
        keep=lambda t: t.expected == "valid" and t.source_type != CLINIC_SOURCE,
    )
    assert calibrate(no_clinic, Config()).offsets.reference == "patient-device"


def test_written_offsets_load_into_the_filter_config(
    calibrated: Calibration, tmp_path: Path
) -> None:
    """--write-config keeps the file's other settings and adds the offsets section."""
    path = tmp_path / "w.toml"
    path.write_text("[resets]\nhard_gap_days = 21.0\n", encoding="utf-8")
    write_offsets(path, calibrated.offsets)
    loaded = load_config(path)
    assert loaded.resets.hard_gap_days == 21.0
    assert from_config(loaded.offsets) == calibrated.offsets


def test_calibrate_command_prints_and_writes(offsets_data: synth.SynthData, tmp_path: Path) -> None:
    """`weightstream calibrate --db` prints every offset with its interval and count, says
    which source got none, and --write-config writes a loadable file."""
    from weightstream.cli import app

    db = tmp_path / "w.db"
    store = SQLiteStore(db)
    try:
        store_history(store, offsets_data)
    finally:
        store.close()
    out = tmp_path / "offsets.toml"
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", "--db", str(db), "--write-config", str(out)])
    assert res.exit_code == 0, res.output
    assert "care-team-upload" in res.output and "evening" in res.output
    assert "no offset for initial-questionnaire: too little data" in res.output
    cfg = load_config(out)
    assert cfg.offsets.reference == CLINIC_SOURCE and IGLUCOSE in cfg.offsets.sources
    res = runner.invoke(app, ["calibrate", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert set(report["sources"][IGLUCOSE]) == {"kg", "low", "high", "readings", "users"}
    assert report["min_readings"] == 30
    res = runner.invoke(app, ["calibrate", "--db", str(db), "--write-config", str(db)])
    assert res.exit_code == 64 and "refusing" in res.output
