"""synth's offsets and duplicates scenarios: the truth behind issue 13's troubles."""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from weightstream.synth import (
    LB_KG,
    TRUTH_COLUMNS,
    SynthData,
    SynthOptions,
    generate,
    write_stream,
)
from weightstream.synth.options import TRUTH_EXTRA_COLUMNS

FORMAT = "%Y-%m-%d %H:%M:%S"


@pytest.fixture(scope="module")
def dups() -> SynthData:
    return generate(60, 40, seed=31, scenario="duplicates")


@pytest.fixture(scope="module")
def offs() -> SynthData:
    return generate(60, 60, seed=32, scenario="offsets")


def test_default_offsets_are_in_the_issues_ranges() -> None:
    """Integrations read heavy by 0.5-1.5 kg, questionnaires light by 1-2 kg, the evening
    heavier than the morning by 0.5-1 kg."""
    o = SynthOptions()
    for source in ("https://api.iglucose.com", "https://connectivehealth.io"):
        assert 0.5 <= o.source_offset(source) <= 1.5
    for source in ("internal-questionnaire", "initial-questionnaire"):
        assert -2.0 <= o.source_offset(source) <= -1.0
    assert 0.5 <= o.evening_offset_kg <= 1.0
    assert o.source_offset("patient-device") == 0.0


def test_offsets_are_in_what_was_measured(offs: SynthData) -> None:
    """Each row's true offset is its source's plus its time of day's, and the readings sit
    that far from the true weight on average (noise aside)."""
    o = SynthOptions()
    residual: dict[tuple[str, float], list[float]] = defaultdict(list)
    for row, t in zip(offs.rows, offs.truth, strict=True):
        when = datetime.strptime(row.effective, FORMAT)
        second = when.hour * 3600 + when.minute * 60 + when.second
        assert t.offset_kg == pytest.approx(
            o.source_offset(t.source_type) + o.time_of_day_offset(second)
        )
        residual[(t.source_type, t.offset_kg)].append(t.measured_kg - t.true_weight_kg)
    offsets_seen = {k[1] for k in residual}
    assert {-1.5, 0.0, 0.8, 1.0, 1.8} <= {round(x, 3) for x in offsets_seen}
    for (source, offset), values in residual.items():
        if len(values) >= 200:
            assert statistics.fmean(values) == pytest.approx(offset, abs=0.15), source


def test_options_change_the_offsets() -> None:
    """Offsets are configurable; zero offsets give zero in every truth row."""
    none = SynthOptions(source_offsets=(), day_offset_kg=0.0, evening_offset_kg=0.0)
    assert all(
        t.offset_kg == 0.0 for t in generate(5, 40, 1, scenario="offsets", options=none).truth
    )
    with pytest.raises(ValueError, match="offset"):
        SynthOptions(evening_offset_kg=9.0)


def test_pound_copies_repeat_a_kg_row_at_the_same_instant(dups: SynthData) -> None:
    """A duplicate_unit row is a [lb_ap] row of the same user, source and instant as the kg
    row it names, the same weight within the pound's rounding."""
    by_line = {t.row: (r, t) for r, t in zip(dups.rows, dups.truth, strict=True)}
    n = 0
    for row, t in zip(dups.rows, dups.truth, strict=True):
        if t.kind != "duplicate_unit":
            continue
        n += 1
        orig, ot = by_line[t.duplicate_of]
        assert ot.kind == "clean" and orig.unit == "kg" and row.unit == "[lb_ap]"
        assert (row.user_id, row.source_type, row.effective) == (
            orig.user_id,
            orig.source_type,
            orig.effective,
        )
        assert row.id != orig.id
        assert float(row.weight) * LB_KG == pytest.approx(float(orig.weight), abs=0.05 * LB_KG)
        assert t.duplicate_of == by_line[t.duplicate_of][1].row
    assert n >= 60


def test_clock_shifted_copies_repeat_the_value_hours_apart(dups: SynthData) -> None:
    """A clock_shift row has the same user, source, unit and weight text, its time a whole
    number of hours (1-14) away, one shift per user."""
    by_line = {t.row: (r, t) for r, t in zip(dups.rows, dups.truth, strict=True)}
    shifts: dict[str, set[float]] = defaultdict(set)
    for row, t in zip(dups.rows, dups.truth, strict=True):
        if t.kind != "clock_shift":
            continue
        orig, ot = by_line[t.duplicate_of]
        assert ot.kind == "clean"
        assert (row.user_id, row.source_type, row.unit, row.weight) == (
            orig.user_id,
            orig.source_type,
            orig.unit,
            orig.weight,
        )
        hours = (
            datetime.strptime(row.effective, FORMAT) - datetime.strptime(orig.effective, FORMAT)
        ).total_seconds() / 3600
        assert hours == int(hours) and 1 <= abs(hours) <= 14
        assert t.effective == ot.effective  # the truth keeps the intended time
        shifts[row.user_id].add(hours)
    assert len(shifts) >= 20
    assert all(len(s) == 1 for s in shifts.values())


def test_every_user_keeps_its_row_count(dups: SynthData) -> None:
    """Copies take slots: exactly per_user rows a user."""
    counts: dict[str, int] = defaultdict(int)
    for t in dups.truth:
        counts[t.user_id] += 1
    assert set(counts.values()) == {40}


def test_truth_file_marks_the_pairs(tmp_path: Path) -> None:
    """The duplicates and offsets truth files add true_offset_kg and duplicate_of; the line a
    copy names is its original's."""
    out, truth = tmp_path / "e.csv", tmp_path / "t.csv"
    write_stream(10, 40, 5, out, truth, scenario="duplicates")
    with truth.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == (*TRUTH_COLUMNS, *TRUTH_EXTRA_COLUMNS)
    with out.open(newline="", encoding="utf-8") as handle:
        export = list(csv.DictReader(handle))
    for line, t in enumerate(rows, start=2):
        if t["expected"] == "duplicate":
            original = export[int(t["duplicate_of"]) - 2]
            assert original["user_id"] == export[line - 2]["user_id"]
            assert rows[int(t["duplicate_of"]) - 2]["kind"] == "clean"
        else:
            assert t["duplicate_of"] == "0"
