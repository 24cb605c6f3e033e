"""The file engine decides every reading as the pure step does (issue 11, "one behaviour").

Each synthetic scenario is processed twice into fresh SQLite stores: with the compiled engine
(the default) and with ``processing.engine = "step"`` (every reading through
:func:`weightstream.step.step`, as ``process_one`` does). The results files must be
byte-identical, and so must every stored state, reading, last-known-good snapshot and audit
record (times of day and durations aside). It is run with chaos on (seeded), and on a
file whose rows are shuffled.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config, OffsetConfig
from weightstream.engine import kernel
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.pipeline import process_file
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth.options import DEFAULT_SOURCE_OFFSETS

SCENARIOS = ["mixed", "steady_loss", "outlier_bursts", "manual_disagree", "lb_as_kg",
             "bmi_values", "gap_level_change", "sparse_clinical", "noisy_integration",
             "duplicates", "offsets"]
_VOLATILE = {"seq", "id", "taken_at", "duration_s", "at", "updated_at"}
_ORDER = {
    "user_states": "user_id",
    "last_good_states": "user_id",
    "readings": "key",
    "results_full": "row",  # the results whole (a linked result's identity is its reading's)
    "reset_audit": "reading_id, reset_type, outcome",
    "recovery_attempts": "reading_id, strategy",
}


def _synth(path: Path, scenario: str, seed: int, users: int = 40, per_user: int = 30) -> None:
    args = ["synth", "--users", str(users), "--per-user", str(per_user), "--seed", str(seed),
            "--scenario", scenario, "--out", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def _run(src: Path, db: Path, out: Path, engine: str, chaos: str | None,
         offsets: OffsetConfig | None = None) -> dict[str, list[tuple[object, ...]]]:
    faults = (
        FaultPoints.from_environ({"WEIGHTSTREAM_CHAOS": chaos, "WEIGHTSTREAM_CHAOS_SEED": "13"})
        if chaos
        else NO_FAULTS
    )
    config = Config(processing={"engine": engine, "commit_group_size": 500},
                    offsets=offsets or OffsetConfig())
    with SQLiteStore(db) as store:
        process_file(src, store, config, out=out, faults=faults)
    conn = sqlite3.connect(db)
    tables = {}
    for table, order in _ORDER.items():
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in _VOLATILE]
        tables[table] = conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}").fetchall()
    conn.close()
    return tables


def _both(tmp: Path, src: Path, chaos: str | None = None,
          offsets: OffsetConfig | None = None) -> None:
    compiled = _run(src, tmp / "c.db", tmp / "c.csv", "compiled", chaos, offsets)
    step = _run(src, tmp / "s.db", tmp / "s.csv", "step", chaos, offsets)
    assert (tmp / "c.csv").read_bytes() == (tmp / "s.csv").read_bytes()
    for table in _ORDER:
        assert compiled[table] == step[table], table
    assert len(compiled["readings"]) > 0


def test_the_loop_is_compiled() -> None:
    """numba is installed and the loop is compiled (else the comparisons test Python twice)."""
    assert kernel.COMPILED


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_gives_the_same_results_both_ways(tmp_path: Path, scenario: str) -> None:
    """Compiled engine and pure step: identical results files and stored tables."""
    src = tmp_path / "export.csv"
    _synth(src, scenario, seed=101)
    _both(tmp_path, src)


@pytest.mark.parametrize("scenario", ["mixed", "outlier_bursts", "duplicates"])
def test_with_chaos_on_both_ways_agree(tmp_path: Path, scenario: str) -> None:
    """Reset and persist failures injected (seeded): the fallbacks agree too."""
    src = tmp_path / "export.csv"
    _synth(src, scenario, seed=202)
    _both(tmp_path, src, chaos="reset:0.3,persist:0.1")


#: synth's true offsets of the ``offsets`` scenario, as ``calibrate --write-config`` writes them.
TRUE_OFFSETS = OffsetConfig(
    reference="care-team-upload",
    sources=dict(DEFAULT_SOURCE_OFFSETS),
    time_of_day={"day": 0.4, "evening": 0.8},
)


@pytest.mark.parametrize(("scenario", "chaos"), [("offsets", None), ("offsets", "reset:0.3,persist:0.1"),
                                                 ("duplicates", None)])
def test_with_offsets_configured_both_ways_agree(tmp_path: Path, scenario: str,
                                                 chaos: str | None) -> None:
    """Offsets subtracted (synth's true ones): the engine and the step agree, offsets shown."""
    src = tmp_path / "export.csv"
    _synth(src, scenario, seed=505)
    _both(tmp_path, src, chaos=chaos, offsets=TRUE_OFFSETS)
    shown = sqlite3.connect(tmp_path / "c.db").execute(
        "SELECT count(*), count(offset_kg), sum(offset_kg != 0) FROM results "
        "WHERE verdict != 'invalid'").fetchone()
    assert shown[0] == shown[1] > 0 and shown[2] > 0.2 * shown[0]


def test_a_permuted_file_both_ways(tmp_path: Path) -> None:
    """The rows shuffled (seed 7): the engine and the step still agree."""
    src = tmp_path / "export.csv"
    _synth(src, "mixed", seed=303)
    lines = src.read_text(encoding="utf-8").splitlines()
    body = lines[1:]
    random.Random(7).shuffle(body)
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")
    _both(tmp_path, shuffled)


def test_most_readings_take_the_compiled_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an ordinary export the loop decides most readings (the fast path is really taken)."""
    src = tmp_path / "export.csv"
    _synth(src, "steady_loss", seed=404)
    seen = []
    real = kernel.run

    def counting(*args: object) -> int:
        stop = real(*args)
        seen.append(stop - args[5])  # type: ignore[operator]
        return stop

    monkeypatch.setattr(kernel, "run", counting)
    with SQLiteStore(tmp_path / "x.db") as store:
        summary = process_file(src, store, Config(), out=tmp_path / "x.csv")
    assert sum(seen) >= 0.8 * summary.verdicts["accepted"]
