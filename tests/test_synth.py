"""Contracts of the synthetic export generator (``weightstream.synth``)."""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from weightstream.config import Config, SourceConfig
from weightstream.pipeline import process_file
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import (
    EXPECTED,
    EXPORT_COLUMNS,
    KINDS,
    LB_KG,
    MANUAL_SOURCES,
    SCENARIO_KINDS,
    SCENARIOS,
    SOURCE_MULTIPLIERS,
    SOURCES,
    TRUTH_COLUMNS,
    SynthData,
    SynthOptions,
    TruthRow,
    generate,
    iter_users,
    write,
    write_stream,
)
from weightstream.testing import FakeClock

EVENT_FORMAT = "%Y-%m-%d %H:%M:%S"
INGEST_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
TROUBLE_KINDS = {"clean", "lb", "manual_off"}


@pytest.fixture(scope="module")
def mixed() -> SynthData:
    return generate(200, 50, seed=0)


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _event(text: str) -> datetime:
    return datetime.strptime(text, EVENT_FORMAT)


def _noise_sd(source: str) -> float:
    return SynthOptions().device_sd_kg * math.sqrt(SOURCE_MULTIPLIERS[source])


# --- determinism and counts --------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    """The same arguments give byte-identical export and truth files; another seed does not."""
    paths = [(tmp_path / f"out{i}.csv", tmp_path / f"truth{i}.csv") for i in range(3)]
    for (out, truth), seed in zip(paths, (5, 5, 6), strict=True):
        write_stream(30, 20, seed, out, truth)
    assert paths[0][0].read_bytes() == paths[1][0].read_bytes()
    assert paths[0][1].read_bytes() == paths[1][1].read_bytes()
    assert paths[0][0].read_bytes() != paths[2][0].read_bytes()
    assert paths[0][1].read_bytes() != paths[2][1].read_bytes()


#: sha256 (first 16 hex digits) of 20 users x 30 rows, seed 3, with and without ids: export then
#: truth. Taken from the single-module synth.py before it became a package; a change here is a
#: change to every benchmark's data (or a Python whose ``random`` draws differently).
GOLDEN = {
    "mixed": "b3b8d5434487b758",
    "steady_loss": "f4653ba0b1fef599",
    "plateau": "4ccacc8d54e683fc",
    "loss_regain": "0baa78047e9fbfdc",
    "gap_level_change": "8d62032b75f2d779",
    "dense_daily": "003fb62e7c372ca1",
    "sparse_weekly": "fc73d870ddbbf767",
    "noisy_integration": "69f48f017cdd79c8",
    "lb_as_kg": "3938f9ad285968fb",
    "bmi_values": "f38fcbdd6e6ffb7d",
    "outlier_bursts": "53d00da15c9c9068",
    "manual_disagree": "5ff9c8a180a3b3a0",
    "sparse_clinical": "087f7c7bdb177147",
    "offsets": "8f66a509b287f4a9",
    "duplicates": "622c448ed614bb15",
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_writes_the_bytes_it_always_wrote(tmp_path: Path, scenario: str) -> None:
    """Same seed and options, same files, byte for byte, across refactors of the generator."""
    digest = hashlib.sha256()
    for ids in (True, False):
        write_stream(20, 30, 3, tmp_path / "e.csv", tmp_path / "t.csv", scenario=scenario, ids=ids)
        digest.update((tmp_path / "e.csv").read_bytes())
        digest.update((tmp_path / "t.csv").read_bytes())
    assert digest.hexdigest()[:16] == GOLDEN[scenario]
    assert set(GOLDEN) == set(SCENARIOS)


@pytest.mark.parametrize("ids", [True, False])
def test_write_stream_writes_the_same_bytes_as_write_generate(tmp_path: Path, ids: bool) -> None:
    """Streaming one user at a time writes exactly what generate() + write() writes."""
    write(generate(40, 25, 3, ids=ids), tmp_path / "a.csv", tmp_path / "a_truth.csv")
    count = write_stream(40, 25, 3, tmp_path / "b.csv", tmp_path / "b_truth.csv", ids=ids)
    assert count == 40 * 25
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a_truth.csv").read_bytes() == (tmp_path / "b_truth.csv").read_bytes()


def test_generation_does_not_touch_the_global_random_state() -> None:
    """The generator draws only from its own Random(seed), never the module-level one."""
    import random

    state = random.getstate()
    generate(5, 10, 1)
    assert random.getstate() == state


@pytest.mark.parametrize("scenario", ["mixed", "outlier_bursts", "dense_daily"])
@pytest.mark.parametrize(("users", "per_user"), [(0, 10), (3, 0), (7, 1), (7, 2), (25, 37)])
def test_every_user_gets_exactly_per_user_rows(scenario: str, users: int, per_user: int) -> None:
    """A file has exactly users × per_user data rows: per_user each, duplicates included."""
    data = generate(users, per_user, seed=11, scenario=scenario)
    assert len(data.rows) == len(data.truth) == users * per_user
    per_user_counts = Counter(row.user_id for row in data.rows)
    assert set(per_user_counts.values()) <= {per_user}
    assert len(per_user_counts) == (users if per_user else 0)


def test_duplicates_take_slots_within_per_user() -> None:
    """Duplicate rows count toward per_user: distinct readings = per_user − duplicates."""
    options = SynthOptions(duplicate_id=0.2, duplicate_content=0.2)
    data = generate(50, 10, seed=2, options=options)
    by_user: dict[str, Counter[str]] = defaultdict(Counter)
    for t in data.truth:
        by_user[t.user_id][t.expected] += 1
    assert sum(c["duplicate"] for c in by_user.values()) > 0
    for counts in by_user.values():
        assert sum(counts.values()) == 10
        assert counts["duplicate"] <= 9


def test_truth_file_has_one_row_per_export_row_in_the_same_order(tmp_path: Path) -> None:
    """The truth CSV has as many rows as the export, identified by the same id on the same line."""
    write_stream(60, 30, 9, tmp_path / "out.csv", tmp_path / "truth.csv")
    export, truth = _read(tmp_path / "out.csv"), _read(tmp_path / "truth.csv")
    assert tuple(export[0]) == EXPORT_COLUMNS
    assert tuple(truth[0]) == TRUTH_COLUMNS
    assert len(export) == len(truth) == 1 + 60 * 30
    for row, t in zip(export[1:], truth[1:], strict=True):
        assert row[0] == t[0] and row[1] == t[1] and row[4] == t[3]
        assert len(row) == len(EXPORT_COLUMNS) and len(t) == len(TRUTH_COLUMNS)


# --- kinds --------------------------------------------------------------------------------------


def test_mixed_has_every_kind(mixed: SynthData) -> None:
    """200 users × 50 readings of the mixed scenario contain every kind of row it lists."""
    assert {t.kind for t in mixed.truth} == set(SCENARIO_KINDS["mixed"])
    assert set(KINDS) - SCENARIO_KINDS["mixed"] == {"duplicate_unit", "clock_shift"}


def test_expected_verdict_follows_the_kind(mixed: SynthData) -> None:
    """Each truth row's expected verdict is the one its kind calls for."""
    assert {t.expected for t in mixed.truth} == {"valid", "invalid", "duplicate", "outlier"}
    for t in mixed.truth:
        assert t.expected == EXPECTED[t.kind]


def test_trouble_is_rare_in_mixed(mixed: SynthData) -> None:
    """In mixed, most rows are clean and the trouble kinds sit at low rates."""
    counts = Counter(t.kind for t in mixed.truth)
    total = len(mixed.truth)
    assert counts["clean"] / total > 0.85
    for kind in KINDS:
        if kind != "clean":
            assert counts[kind] / total < 0.04, kind


def test_rows_of_each_kind_look_like_their_kind(mixed: SynthData) -> None:
    """Every kind's export row has the shape the docstring promises (units, values, times)."""
    for row, t in zip(mixed.rows, mixed.truth, strict=True):
        if t.kind in ("clean", "manual_off", "outlier", "bmi_as_kg", "unit_error"):
            assert row.unit == "kg"
            assert 20.0 < float(row.weight) < 500.0  # never invalid by the hard limits
        if t.kind in ("clean", "manual_off"):
            assert float(row.weight) == pytest.approx(t.measured_kg, abs=1e-6)
        if t.kind == "lb":
            assert row.unit in ("[lb_ap]", "lb")
        elif t.kind == "bmi_unit":
            assert row.unit == "kg/m2" and 18.0 <= float(row.weight) <= 45.0
        elif t.kind == "bmi_as_kg":
            assert 18.0 <= float(row.weight) <= 45.0
        elif t.kind == "bsa_unit":
            assert row.unit == "m2" and 1.6 <= float(row.weight) <= 2.6
        elif t.kind == "null":
            assert row.weight == ""
        elif t.kind == "bad_number":
            with pytest.raises(ValueError):
                float(row.weight)
        elif t.kind == "future":
            assert row.effective.startswith("2099-") and _event(row.effective)
        elif t.kind == "ancient":
            assert row.effective.startswith("1850-") and _event(row.effective)
        elif t.kind == "bad_timestamp":
            with pytest.raises(ValueError):
                _event(row.effective)
        elif t.kind == "manual_off":
            assert t.source_type in MANUAL_SOURCES
            assert 1.5 <= abs(t.measured_kg - t.true_weight_kg) <= 5.5
        elif t.kind == "outlier":
            assert abs(float(row.weight) - t.true_weight_kg) > 10.0
        elif t.kind == "unit_error":
            assert float(row.weight) == pytest.approx(t.measured_kg / LB_KG, rel=0.01)
        if t.kind not in ("bad_timestamp", "future", "ancient"):
            assert row.effective == t.effective


def test_lb_rows_convert_back_to_the_reading(mixed: SynthData) -> None:
    """A correctly labelled pound value × 0.45359237 is the reading in kg, near the true weight."""
    lb_rows = [(r, t) for r, t in zip(mixed.rows, mixed.truth, strict=True) if t.kind == "lb"]
    assert lb_rows
    for row, t in lb_rows:
        assert float(row.weight) * LB_KG == pytest.approx(t.measured_kg, abs=1e-9)
        # within the pound rounding (≤ 0.5 lb) plus 5 sd of the source's noise
        assert abs(t.measured_kg - t.true_weight_kg) < 0.5 * LB_KG + 5 * _noise_sd(t.source_type)


def test_clean_readings_scatter_around_the_truth_by_the_source_noise(mixed: SynthData) -> None:
    """Clean readings minus truth have the documented sd per source (×√multiplier)."""
    residuals: dict[str, list[float]] = defaultdict(list)
    for t in mixed.truth:
        if t.kind == "clean":
            residuals[t.source_type].append(t.measured_kg - t.true_weight_kg)
    for source in ("patient-device", "https://api.iglucose.com"):
        values = residuals[source]
        assert len(values) > 300
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        assert abs(mean) < 0.1
        assert sd == pytest.approx(_noise_sd(source), rel=0.12)


def test_duplicates_sit_right_after_their_original(mixed: SynthData) -> None:
    """A duplicate_id row repeats the row before it; a duplicate_content row differs only in id
    and a later ingest time."""
    for k, t in enumerate(mixed.truth):
        if t.kind not in ("duplicate_id", "duplicate_content"):
            continue
        row, before = mixed.rows[k], mixed.rows[k - 1]
        if t.kind == "duplicate_id":
            assert row == before
        else:
            assert row.id != before.id
            assert row.timestamp > before.timestamp
            assert row._replace(id=before.id, timestamp=before.timestamp) == before


def test_ingest_time_follows_the_event(mixed: SynthData) -> None:
    """Every row's ingest timestamp is at or after its (intended) event time."""
    for row, t in zip(mixed.rows, mixed.truth, strict=True):
        assert datetime.strptime(row.timestamp, INGEST_FORMAT) >= _event(t.effective)


def test_questionnaires_carry_a_date_only(mixed: SynthData) -> None:
    """Questionnaire readings are recorded at midnight (a date without a time)."""
    times = {t.effective[11:] for t in mixed.truth if t.source_type.endswith("questionnaire")}
    assert times == {"00:00:00"}


def test_every_generated_source_is_known_to_the_config() -> None:
    """The generator's sources and multipliers are those of the processor's defaults."""
    config = SourceConfig()
    for source in SOURCES:
        assert config.multiplier(source) == SOURCE_MULTIPLIERS[source]
    assert set(MANUAL_SOURCES) <= set(config.manual)


# --- file order ---------------------------------------------------------------------------------


def test_file_order_groups_users_and_sources_newest_first(mixed: SynthData) -> None:
    """Rows are grouped by user, then by source, and run newest first within a source."""
    seen_users: set[str] = set()
    seen_groups: set[tuple[str, str]] = set()
    previous: TruthRow | None = None
    for t in mixed.truth:
        group = (t.user_id, t.source_type)
        if previous is None or previous.user_id != t.user_id:
            assert t.user_id not in seen_users
            seen_users.add(t.user_id)
        if previous is None or (previous.user_id, previous.source_type) != group:
            assert group not in seen_groups
            seen_groups.add(group)
        elif previous is not None:
            assert _event(t.effective) <= _event(previous.effective)
        previous = t


def test_truth_row_numbers_are_file_lines(mixed: SynthData) -> None:
    """Truth row numbers are the export's line numbers, the header being line 1."""
    assert [t.row for t in mixed.truth] == list(range(2, len(mixed.truth) + 2))


# --- no ids -------------------------------------------------------------------------------------


def test_no_id_mode_drops_the_id_column_and_numbers_the_truth(tmp_path: Path) -> None:
    """Without ids the export lacks the id column (otherwise the same rows) and the truth
    identifies each row by its line number."""
    write_stream(20, 15, 4, tmp_path / "ids.csv", tmp_path / "ids_truth.csv")
    write_stream(20, 15, 4, tmp_path / "no.csv", tmp_path / "no_truth.csv", ids=False)
    with_ids, without = _read(tmp_path / "ids.csv"), _read(tmp_path / "no.csv")
    assert tuple(without[0]) == EXPORT_COLUMNS[1:]
    assert [row[1:] for row in with_ids] == without
    truth = _read(tmp_path / "no_truth.csv")
    assert tuple(truth[0]) == (*TRUTH_COLUMNS, "row")
    assert [int(t[-1]) for t in truth[1:]] == list(range(2, len(without) + 1))
    assert all(t[0] == "" for t in truth[1:])
    ids_truth = _read(tmp_path / "ids_truth.csv")
    assert [t[1:] for t in ids_truth[1:]] == [t[1:-1] for t in truth[1:]]


# --- scenarios ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_produces_its_own_kinds_only(scenario: str) -> None:
    """Each scenario produces every kind it lists in SCENARIO_KINDS and no other."""
    data = generate(60, 40, seed=21, scenario=scenario)
    kinds = {t.kind for t in data.truth}
    assert kinds == SCENARIO_KINDS[scenario]


def _users(data: SynthData) -> dict[str, list[TruthRow]]:
    """Each user's truth rows in time order (oldest first)."""
    users: dict[str, list[TruthRow]] = defaultdict(list)
    for t in data.truth:
        users[t.user_id].append(t)
    return {u: sorted(rows, key=lambda t: (t.effective, t.row)) for u, rows in users.items()}


def test_steady_loss_only_loses_and_plateau_stays_flat() -> None:
    """steady_loss trends are losses of 0.5-1.5 kg/week (or 0 at the floor); plateau's are
    within ±0.1 kg/week."""
    loss = generate(40, 40, seed=1, scenario="steady_loss")
    trends = {round(t.true_trend_kg_week, 6) for t in loss.truth}
    assert all(-1.5 <= x <= -0.5 or x == 0 for x in trends)
    assert sum(1 for t in loss.truth if t.true_trend_kg_week < 0) > 0.9 * len(loss.truth)
    flat = generate(40, 40, seed=1, scenario="plateau")
    assert all(abs(t.true_trend_kg_week) <= 0.1 + 1e-9 for t in flat.truth)


def test_loss_regain_loses_then_regains() -> None:
    """In loss_regain every user's trend is negative first and positive later."""
    for rows in _users(generate(30, 60, seed=2, scenario="loss_regain")).values():
        assert rows[0].true_trend_kg_week < 0
        assert rows[-1].true_trend_kg_week >= 0
        assert any(t.true_trend_kg_week > 0 for t in rows)


def test_gap_level_change_has_a_long_gap_with_a_new_level() -> None:
    """Every gap_level_change user has one gap of at least 30 days and a level change of at
    least 3 kg across it."""
    for rows in _users(generate(40, 30, seed=3, scenario="gap_level_change")).values():
        pairs = list(zip(rows, rows[1:], strict=False))
        gaps = [(a, b) for a, b in pairs if (_event(b.effective) - _event(a.effective)).days >= 30]
        assert len(gaps) == 1
        before, after = gaps[0]
        assert abs(after.true_weight_kg - before.true_weight_kg) >= 3.0 - 1e-6


def test_mixed_gaps_are_rare_and_long() -> None:
    """In mixed only some users have a gap of 30 days or more."""
    users = _users(generate(300, 30, seed=4))
    with_gap = sum(
        1
        for rows in users.values()
        if any(
            (_event(b.effective) - _event(a.effective)).days >= 30
            for a, b in zip(rows, rows[1:], strict=False)
        )
    )
    assert 0 < with_gap < 0.2 * len(users)


def test_cadence_scenarios() -> None:
    """dense_daily has evening second readings; sparse_weekly's readings are 5-9 days apart."""
    dense = _users(generate(20, 40, seed=5, scenario="dense_daily"))
    days = [Counter(t.effective[:10] for t in rows) for rows in dense.values()]
    assert all(max(c.values()) == 2 for c in days)
    sparse = _users(generate(20, 20, seed=5, scenario="sparse_weekly"))
    for rows in sparse.values():
        for a, b in zip(rows, rows[1:], strict=False):
            assert 4 <= (_event(b.effective) - _event(a.effective)).days <= 10


def test_noisy_integration_is_mostly_iglucose() -> None:
    """noisy_integration users read mostly through api.iglucose.com."""
    data = generate(30, 40, seed=6, scenario="noisy_integration")
    sources = Counter(t.source_type for t in data.truth)
    assert sources["https://api.iglucose.com"] > 0.75 * len(data.truth)


def test_outlier_bursts_come_in_runs_of_three_to_five() -> None:
    """outlier_bursts users have consecutive outliers, 3-5 in a row within their main source."""
    data = generate(30, 40, seed=7, scenario="outlier_bursts")
    runs: list[int] = []
    run = 0
    previous: tuple[str, str] | None = None
    for t in data.truth:
        group = (t.user_id, t.source_type)
        if t.kind == "outlier" and group == previous:
            run += 1
        else:
            if run:
                runs.append(run)
            run = 1 if t.kind == "outlier" else 0
        previous = group
    if run:
        runs.append(run)
    assert runs and all(3 <= r <= 10 for r in runs)  # adjacent bursts may touch
    assert min(runs) >= 3


def test_manual_disagree_entries_are_off_by_two_to_five_kg() -> None:
    """manual_disagree's manual_off rows are manual entries 2-5 kg (± rounding) from the truth."""
    data = generate(40, 40, seed=8, scenario="manual_disagree")
    off = [t for t in data.truth if t.kind == "manual_off"]
    assert len(off) > 0.05 * len(data.truth)
    for t in off:
        assert t.source_type in MANUAL_SOURCES
        assert 2.0 - 0.3 <= abs(t.measured_kg - t.true_weight_kg) <= 5.0 + 0.3


# --- sparse clinical cohort ---------------------------------------------------------------------

CLINICAL_SEED = 31


def test_sparse_clinical_is_deterministic_by_seed(tmp_path: Path) -> None:
    """The clinical cohort gives byte-identical export and truth files for the same seed, and
    other files for another seed."""
    paths = [(tmp_path / f"out{i}.csv", tmp_path / f"truth{i}.csv") for i in range(3)]
    for (out, truth), seed in zip(paths, (CLINICAL_SEED, CLINICAL_SEED, 32), strict=True):
        write_stream(20, 30, seed, out, truth, scenario="sparse_clinical")
    assert paths[0][0].read_bytes() == paths[1][0].read_bytes()
    assert paths[0][1].read_bytes() == paths[1][1].read_bytes()
    assert paths[0][0].read_bytes() != paths[2][0].read_bytes()
    assert paths[0][1].read_bytes() != paths[2][1].read_bytes()


def test_sparse_clinical_visits_come_every_three_weeks_to_three_months() -> None:
    """Clinical readings are 21-91 days apart, about clinical_long_gap of the intervals 30 days
    or more; each history spans years and ends in the four weeks before start."""
    start = datetime(2024, 1, 1)
    data = generate(60, 50, seed=CLINICAL_SEED, scenario="sparse_clinical", start=start)
    intervals: list[int] = []
    for rows in _users(data).values():
        days = [_event(t.effective).date() for t in rows]
        intervals += [(b - a).days for a, b in zip(days, days[1:], strict=False)]
        assert (days[-1] - days[0]).days > 3 * 365
        assert 1 <= (start.date() - days[-1]).days <= 28
    assert min(intervals) >= 21 and max(intervals) <= 91
    long_share = sum(1 for d in intervals if d >= 30) / len(intervals)
    assert long_share == pytest.approx(SynthOptions().clinical_long_gap, abs=0.03)


def test_sparse_clinical_is_mostly_care_team_weighings_with_slow_drift() -> None:
    """Clinical rows are clean, mostly care-team uploads, and the true weight drifts by at most
    0.5 kg/week."""
    data = generate(60, 50, seed=CLINICAL_SEED, scenario="sparse_clinical")
    sources = Counter(t.source_type for t in data.truth)
    assert sources["care-team-upload"] > 0.7 * len(data.truth)
    assert set(sources) <= MANUAL_SOURCES
    assert {t.kind for t in data.truth} == {"clean"}
    assert all(abs(t.true_trend_kg_week) <= 0.5 + 1e-9 for t in data.truth)


def _reset_share(tmp_path: Path, options: SynthOptions | None = None) -> float:
    """Process a 40 × 50 clinical file with the default configuration; the share of result
    rows that carry a reset (initial, hard or soft)."""
    export, out = tmp_path / "clinical.csv", tmp_path / "results.csv"
    write_stream(40, 50, CLINICAL_SEED, export, scenario="sparse_clinical", options=options)
    store = SQLiteStore(tmp_path / "ws.db")
    try:
        process_file(export, store, Config(), out=out, clock=FakeClock())
    finally:
        store.close()
    with out.open(newline="", encoding="utf-8") as handle:
        results = list(csv.DictReader(handle))
    assert len(results) == 40 * 50
    assert sum(1 for r in results if r["verdict"] == "accepted") > 0.98 * len(results)
    return sum(1 for r in results if r["reset_type"]) / len(results)


def test_sparse_clinical_triggers_a_reset_on_about_fifteen_percent_of_rows(
    tmp_path: Path,
) -> None:
    """Processed with the default configuration, 10-20% of the clinical cohort's rows trigger a
    reset (the issue's "about 15%"), and nearly every row is accepted."""
    share = _reset_share(tmp_path)
    assert 0.10 <= share <= 0.20, share


@pytest.mark.parametrize(("long_gap", "low", "high"), [(0.0, 0.0, 0.10), (0.5, 0.30, 1.0)])
def test_the_reset_share_follows_clinical_long_gap(
    tmp_path: Path, long_gap: float, low: float, high: float
) -> None:
    """Without long intervals the reset share falls below the 10-20% band, with many it rises
    above it: the band above measures the cohort, not the processor alone."""
    share = _reset_share(tmp_path, SynthOptions(clinical_long_gap=long_gap))
    assert low <= share <= high, share


# --- arguments ----------------------------------------------------------------------------------


def test_bad_arguments_are_refused_at_once(tmp_path: Path) -> None:
    """Unknown scenarios, negative sizes and impossible rates raise ValueError before any work."""
    with pytest.raises(ValueError, match="scenario"):
        iter_users(1, 1, 0, scenario="nope")
    with pytest.raises(ValueError):
        generate(-1, 5, 0)
    with pytest.raises(ValueError):
        SynthOptions(outlier=1.5)
    with pytest.raises(ValueError):
        SynthOptions(device_sd_kg=0.0)
    with pytest.raises(ValueError):
        SynthOptions(outlier=0.3, lb=0.3)
    with pytest.raises(ValueError):
        write_stream(1, 1, 0, tmp_path / "x.csv", scenario="nope")
    assert not (tmp_path / "x.csv").exists()


def test_start_date_moves_the_whole_export() -> None:
    """Users begin within four weeks after start (a naive start counts as UTC)."""
    start = datetime(2021, 6, 1, tzinfo=UTC)
    for t in generate(20, 5, 1, start=datetime(2021, 6, 1)).truth:
        assert 0 <= (_event(t.effective) - start.replace(tzinfo=None)).days < 400
    first = min(_event(t.effective) for t in generate(50, 1, 1, start=start).truth)
    assert first >= start.replace(tzinfo=None)
