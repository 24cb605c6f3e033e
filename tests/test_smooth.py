"""The RTS smoother over stored history: exact for its model, better than the live filter."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from weightstream import kalman, synth
from weightstream.config import Config
from weightstream.ingest import RawRow, to_measurement
from weightstream.model import Measurement, Verdict
from weightstream.processor import Processor
from weightstream.smooth import rts, smooth_rows, smoothed_history
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SEED = 4242
T0 = datetime(2025, 1, 1, 7, 0, tzinfo=UTC)


def _reference(
    times: list[float],
    values: list[float],
    variances: list[float],
    prior: tuple[kalman.Vec, kalman.Mat],
    q_w: float,
    q_t: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The posterior mean and covariance of every state at once: the joint Gaussian of
    x_0..x_n-1 given every reading, solved as one linear system (information form)."""
    n = len(times)
    dim = 2 * n
    info = np.zeros((dim, dim))
    vec = np.zeros(dim)
    m0, p0 = np.array(prior[0]), np.array(prior[1])
    p0i = np.linalg.inv(p0)
    info[0:2, 0:2] += p0i
    vec[0:2] += p0i @ m0
    for k in range(1, n):
        dt = times[k] - times[k - 1]
        F = np.array(kalman.transition(dt))
        Q = np.array(kalman.process_noise(dt, q_w, q_t))
        Qi = np.linalg.inv(Q)
        a, b = slice(2 * k - 2, 2 * k), slice(2 * k, 2 * k + 2)
        # -log p(x_k | x_k-1) = 1/2 (x_k - F x_k-1)^T Q^-1 (x_k - F x_k-1)
        info[a, a] += F.T @ Qi @ F
        info[a, b] -= F.T @ Qi
        info[b, a] -= Qi @ F
        info[b, b] += Qi
    for k in range(n):
        info[2 * k, 2 * k] += 1.0 / variances[k]
        vec[2 * k] += values[k] / variances[k]
    cov = np.linalg.inv(info)
    return cov @ vec, cov


def test_rts_equals_the_joint_posterior() -> None:
    """The smoother's means and variances equal the batch posterior to 1e-9 (relative)."""
    rng = np.random.default_rng(SEED)
    times = list(np.cumsum(rng.uniform(0.2, 5.0, 25)))
    values = [90.0 - 0.1 * t + rng.normal(0.0, 0.8) for t in times]
    variances = list(rng.uniform(0.3, 2.0, 25))
    prior = ((values[0], 0.0), ((2.0, 0.0), (0.0, 0.01)))
    out = rts(times, values, variances, prior, 0.02, 5e-5)
    mean, cov = _reference(times, values, variances, prior, 0.02, 5e-5)
    for k, (x, P) in enumerate(out):
        assert x[0] == pytest.approx(mean[2 * k], rel=1e-9)
        assert x[1] == pytest.approx(mean[2 * k + 1], rel=1e-9, abs=1e-9)
        assert P[0][0] == pytest.approx(cov[2 * k, 2 * k], rel=1e-7)
        assert P[0][1] == P[1][0]


def test_last_smoothed_state_is_the_filtered_one() -> None:
    """At the last reading the smoother knows no more than the filter."""
    times, values, variances = [0.0, 1.0, 3.0], [80.0, 79.0, 79.5], [0.64] * 3
    prior = ((80.0, 0.0), ((2.0, 0.0), (0.0, 0.01)))
    x, P = prior
    for k in range(3):
        if k:
            x, P = kalman.predict(x, P, times[k] - times[k - 1], 0.02, 5e-5)
        upd = kalman.update(x, P, values[k], variances[k])
        x, P = upd.x, upd.P
    assert rts(times, values, variances, prior, 0.02, 5e-5)[-1] == (x, P)


def _processed(
    scenario: str, users: int, per_user: int, seed: int
) -> tuple[MemoryStore, synth.SynthData, Config]:
    config = Config()
    data = synth.generate(users, per_user, seed, scenario=scenario)
    readings = []
    for pos, row in enumerate(data.rows):
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
        if isinstance(m, Measurement):
            readings.append(m)
    readings.sort(key=lambda m: (m.user_id, m.timestamp))
    store = MemoryStore()
    proc = Processor(store, config)
    for m in readings:
        proc.process_one(m)
    return store, data, config


def test_smoother_beats_the_live_filter_on_steady_loss() -> None:
    """On steady loss the smoothed weight is closer to the truth than the filtered one, at
    the accepted readings: RMSE at most 0.8 x the filter's (a lagging or noisier estimate
    fails this)."""
    store, data, config = _processed("steady_loss", 10, 80, SEED)
    truth = {t.id: t.true_weight_kg for t in data.truth}
    se_f = se_s = 0.0
    n = 0
    for user in store.users():
        for r in smoothed_history(store, user, config):
            if r.verdict != "accepted":
                continue
            assert r.filtered_weight is not None and r.smoothed_weight is not None
            se_f += (r.filtered_weight - truth[r.reading_id]) ** 2
            se_s += (r.smoothed_weight - truth[r.reading_id]) ** 2
            n += 1
    assert n > 700
    rmse_f, rmse_s = math.sqrt(se_f / n), math.sqrt(se_s / n)
    assert rmse_s <= 0.8 * rmse_f, (rmse_s, rmse_f)


def test_filtered_values_stay_as_decided_live() -> None:
    """The live columns are the stored results', untouched; rejected rows get no smoothed
    value; nothing is written to the store."""
    store, _, config = _processed("outlier_bursts", 4, 60, SEED)
    for user in store.users():
        before = store.history(user)
        rows = smoothed_history(store, user, config)
        assert store.history(user) == before
        assert [r.reading_id for r in rows] == [h.measurement.reading_id for h in before]
        for r, h in zip(rows, before, strict=True):
            if h.result.verdict is Verdict.ACCEPTED:
                assert r.filtered_weight == h.result.filtered_weight
                assert r.smoothed_weight is not None
            else:
                assert r.filtered_weight is None
                if r.smoothed_weight is not None:  # vindicated: a hard reset agreeing follows
                    after = next(x for x in rows[rows.index(r) :] if x.verdict == "accepted")
                    assert after.reset_type == "hard" and after.segment == r.segment
    assert any(
        r.verdict == "rejected" for u in store.users() for r in smoothed_history(store, u, config)
    )


def _series(store: MemoryStore, user: str, days: list[float], kg: list[float]) -> None:
    proc = Processor(store, Config())
    for i, (d, w) in enumerate(zip(days, kg, strict=True)):
        m = Measurement(f"r{i}", user, T0 + timedelta(days=d), w, "kg", w, "patient-device")
        proc.process_one(m)


def test_segments_end_at_resets() -> None:
    """A hard reset (a 60-day gap) splits the history: what comes after the reset never
    moves the smoothed values before it."""
    days = [float(d) for d in range(20)] + [80.0 + d for d in range(20)]
    kg = [90.0 - 0.1 * d for d in days[:20]] + [80.0 - 0.1 * (d - 80) for d in days[20:]]
    a, b = MemoryStore(), MemoryStore()
    _series(a, "u", days, kg)
    _series(b, "u", days[:20], kg[:20])
    ra, rb = smoothed_history(a, "u", Config()), smoothed_history(b, "u", Config())
    assert ra[20].reset_type == "hard" and ra[20].segment == 1 and ra[19].segment == 0
    assert [r.smoothed_weight for r in ra[:20]] == [r.smoothed_weight for r in rb]
    assert abs(ra[20].smoothed_weight - 80.0) < 1.0  # type: ignore[operator]


def test_readings_a_takeover_rejected_are_smoothed_with_the_level_that_won() -> None:
    """Another person's burst was the user's first readings; the person's own readings were
    rejected until a majority of them restarted the filter. Looking back they were right: they
    are smoothed with the segment their reset began (at their own level), and keep their
    rejected verdict."""
    store = MemoryStore()
    days = [0.0, 1.0, 2.0] + [3.0 + d for d in range(8)]
    kg = [110.0, 110.3, 110.6] + [69.0 + 0.1 * d for d in range(8)]
    _series(store, "u", days, kg)
    rows = smoothed_history(store, "u", Config())
    own = rows[3:]
    rejected = [r for r in own if r.verdict == "rejected"]
    assert rejected, [r.verdict for r in rows]  # the burst's baseline made the filter reject them
    reset = next(r for r in own if r.verdict == "accepted")
    assert reset.reset_type == "hard"
    for r in rejected:
        assert r.filtered_weight is None
        assert r.segment == reset.segment
        assert abs(r.smoothed_weight - 69.2) < 1.0  # type: ignore[operator]
    assert rows[2].smoothed_weight is not None and rows[2].smoothed_weight > 100.0


def test_readings_back_after_a_burst_that_took_over_are_smoothed_at_their_level() -> None:
    """71, a burst of four that took the filter over, then the person again: the first reading
    back restarts the filter (the takeover remembered the 71), so none of the person's readings
    is rejected and each is smoothed at its own level."""
    store = MemoryStore()
    days = [0.0, 1.0, 2.0, 3.0, 4.0] + [5.0 + d for d in range(8)]
    kg = [71.0, 110.0, 110.3, 110.6, 110.9] + [69.0 + 0.1 * d for d in range(8)]
    _series(store, "u", days, kg)
    rows = smoothed_history(store, "u", Config())
    own = rows[5:]
    assert [r.verdict for r in own] == ["accepted"] * 8
    assert own[0].reset_type == "hard"
    assert all(abs(r.smoothed_weight - 69.35) < 1.0 for r in own)  # type: ignore[operator]


def test_a_rejected_reading_that_disagrees_with_the_next_reset_is_not_smoothed() -> None:
    """Rejected readings that do not agree with the hard reset after them stay unsmoothed."""
    store = MemoryStore()
    days = [float(d) for d in range(6)] + [6.5, 7.0, 70.0]
    kg = [80.0] * 6 + [120.0, 80.2, 81.0]  # an outlier, a reading, then a reset after a gap
    _series(store, "u", days, kg)
    rows = smoothed_history(store, "u", Config())
    assert rows[6].verdict == "rejected" and rows[6].smoothed_weight is None
    assert rows[8].reset_type == "hard"


def test_a_far_off_manual_entry_is_weighed_down_as_the_filter_weighs_it() -> None:
    """A care-team entry 4 kg off steady scale readings: the smoother raises its variance
    beyond rules.manual_robust_sigma as the live filter does, so the smoothed level around it
    moves far less than with the entry at face value."""
    store = MemoryStore()
    proc = Processor(store, Config())
    for d in range(20):
        src, kg = ("care-team-upload", 84.0) if d == 10 else ("patient-device", 80.0)
        proc.process_one(Measurement(f"r{d}", "u", T0 + timedelta(days=d), kg, "kg", kg, src))
    rows = store.history("u")
    assert rows[10].result.verdict is Verdict.ACCEPTED and rows[10].result.reset_type is None
    robust = smooth_rows(rows, Config())[10].smoothed_weight
    plain_config = Config(rules=Config().rules.model_copy(update={"manual_robust_sigma": 0.0}))
    plain = smooth_rows(rows, plain_config)[10].smoothed_weight
    assert robust is not None and plain is not None
    assert 80.0 < robust < 80.0 + 0.5 * (plain - 80.0), (robust, plain)


def test_configured_offsets_are_subtracted_before_smoothing() -> None:
    """A source offset in the config shifts that source's readings before the smoother."""
    store = MemoryStore()
    _series(store, "u", [float(d) for d in range(10)], [80.0] * 10)
    rows = store.history("u")
    plain = smooth_rows(rows, Config())
    shifted = smooth_rows(rows, Config(offsets={"sources": {"patient-device": 1.0}}))
    assert all(r.offset_kg == 1.0 for r in shifted)
    for p, s in zip(plain, shifted, strict=True):
        assert s.smoothed_weight == pytest.approx(p.smoothed_weight - 1.0)  # type: ignore[operator]


def test_history_command_csv_and_json(tmp_path: Path) -> None:
    """`weightstream history USER --smoothed` prints the live and smoothed columns as CSV or
    JSON; without --smoothed only the live ones; an unknown user is exit 1."""
    from weightstream.cli import app

    db = tmp_path / "w.db"
    store = SQLiteStore(db)
    try:
        proc = Processor(store, Config())
        for i in range(12):
            w = 90.0 - 0.1 * i
            when = T0 + timedelta(days=i)
            proc.process_one(Measurement(f"r{i}", "=cmd|u", when, w, "kg", w, "@src"))
    finally:
        store.close()
    runner = CliRunner()
    res = runner.invoke(app, ["history", "=cmd|u", "--db", str(db), "--smoothed"])
    assert res.exit_code == 0, res.output
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(table) == 12
    assert {"filtered_weight", "smoothed_weight", "smoothed_std", "segment"} <= set(table[0])
    assert table[0]["source"] == "'@src"  # a spreadsheet would run it: neutralised
    assert float(table[5]["smoothed_weight"]) == pytest.approx(89.5, abs=0.3)
    res = runner.invoke(app, ["history", "=cmd|u", "--db", str(db), "--format", "json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert len(records) == 12 and "smoothed_weight" not in records[0]
    assert records[0]["source"] == "@src" and records[0]["verdict"] == "accepted"
    res = runner.invoke(app, ["history", "nobody", "--db", str(db)])
    assert res.exit_code == 1 and "unknown user" in res.output
