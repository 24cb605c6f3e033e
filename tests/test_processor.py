"""The library shell: process_one / estimate, duplicates, late readings, rules, resets."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.config import Config
from weightstream.model import Reason, ResetType, UserState, Verdict
from weightstream.processor import Processor
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import MemoryStore, measurement

LB_KG = 0.45359237


def _processor(config: Config | None = None) -> Processor:
    return Processor(MemoryStore(), config or Config())


def _history(p: Processor, weights: list[float], start_day: float = 0.0) -> None:
    for i, w in enumerate(weights):
        r = p.process_one(measurement(w, start_day + i))
        assert r.verdict is Verdict.ACCEPTED, r


def _frozen(state: UserState | None) -> tuple:
    """The parts of a state that a rejected reading must not touch."""
    assert state is not None
    return (state.kalman, state.buffer, state.adaptation, state.accepted_count,
            state.last_accepted_at, state.last_reset_at, state.last_reset_type)


def test_clean_series_is_accepted_and_converges_to_truth():
    """A noisy clean series is all accepted and the filtered weight tracks the true weight."""
    seed = 4242
    print("seed", seed)
    rng = random.Random(seed)
    p = _processor()
    truth = [95.0 - 0.1 * d for d in range(90)]
    raw_err, filt_err = [], []
    for day, true_w in enumerate(truth):
        z = true_w + rng.gauss(0.0, 0.8)
        r = p.process_one(measurement(round(z, 2), day))
        assert r.verdict is Verdict.ACCEPTED, (day, r)
        if day >= 30:
            raw_err.append(abs(z - true_w))
            filt_err.append(abs(r.filtered_weight - true_w))
    est = p.estimate("u1")
    assert est is not None
    assert abs(est.weight_kg - truth[-1]) < 0.6
    assert abs(est.trend_kg_week - (-0.7)) < 0.35
    assert sum(filt_err) / len(filt_err) < 0.6 * sum(raw_err) / len(raw_err)


def test_estimate_changes_nothing(tmp_path, db_dump):
    """estimate() only reads: every table and the state version are unchanged."""
    store = SQLiteStore(tmp_path / "ws.db")
    try:
        p = Processor(store, Config())
        for day in range(5):
            p.process_one(measurement(80.0 + 0.1 * day, day))
        before, version = db_dump(tmp_path / "ws.db"), store.load_state("u1").version
        est = p.estimate("u1")
        assert est is not None and est.version == version == 5
        assert Processor(store, Config()).estimate("u1") == est  # a fresh processor agrees
        assert p.estimate("nobody") is None
        assert db_dump(tmp_path / "ws.db") == before
        assert store.load_state("u1").version == version
    finally:
        store.close()


def test_duplicates_by_key_and_by_content_leave_state_untouched():
    """Same id -> duplicate_key; same content under a new id -> duplicate_content; no effect."""
    p = _processor()
    first = measurement(80.0, 0, reading_id="r1")
    p.process_one(first)
    p.process_one(measurement(80.2, 1, reading_id="r2"))
    state, history = p.store.load_state("u1"), p.store.history("u1")

    again = p.process_one(measurement(81.0, 2, reading_id="r1"))  # same key, other content
    assert (again.verdict, again.reason) == (Verdict.DUPLICATE, Reason.DUPLICATE_KEY)
    copy = replace(first, reading_id="r-other")  # same user/time/value/unit/source
    assert copy.content_key == first.content_key
    same = p.process_one(copy)
    assert (same.verdict, same.reason) == (Verdict.DUPLICATE, Reason.DUPLICATE_CONTENT)
    assert p.store.load_state("u1") == state
    assert p.store.history("u1") == history


# ---------------------------------------------------------------------------------------------
# G7: late readings


@st.composite
def _late_histories(draw):
    n = draw(st.integers(2, 12))
    days = draw(st.lists(st.integers(0, 120), min_size=n, max_size=n, unique=True))
    users = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    base = draw(st.floats(50.0, 150.0))
    readings = []
    for i, (day, user) in enumerate(zip(days, users, strict=True)):
        kind = draw(st.sampled_from(["near", "near", "near", "near", "off", "lb"]))
        delta = draw(st.floats(-1.5, 1.5))
        w = base + delta - 0.05 * day
        if kind == "off":
            w += draw(st.sampled_from([-25.0, 25.0, 40.0]))
        elif kind == "lb":
            w /= LB_KG
        source = draw(st.sampled_from(["patient-device", "patient-device", "patient-upload"]))
        readings.append(measurement(round(w, 2), day + 0.3, user=user, source=source,
                                    reading_id=f"r{i}"))
    order = draw(st.permutations(range(n)))
    return readings, order


def _decisions(store: MemoryStore, user: str) -> list[tuple]:
    return [(row.measurement.reading_id, row.result.verdict, row.result.reason,
             row.result.filtered_weight) for row in store.history(user)]


@settings(max_examples=50, deadline=None)
@given(_late_histories())
def test_late_readings_replayed_equal_sorted_input(case):
    """With late_policy=replay any arrival order ends in the state and decisions of sorted input."""
    readings, order = case
    config = Config()
    arrived, ordered = _processor(config), _processor(config)
    for i in order:
        r = arrived.process_one(readings[i])
        assert r.verdict is not Verdict.LATE
    for m in sorted(readings, key=lambda m: m.timestamp):
        ordered.process_one(m)
    for user in {m.user_id for m in readings}:
        assert arrived.store.load_state(user) == ordered.store.load_state(user), user
        assert _decisions(arrived.store, user) == _decisions(ordered.store, user), user


def test_reject_late_marks_late_and_leaves_state_unchanged():
    """With late_policy=reject_late an older reading is `late` and the state does not move."""
    p = _processor(Config(processing={"late_policy": "reject_late"}))
    _history(p, [80.0, 80.2, 79.9, 80.1, 80.0])
    before = p.store.load_state("u1")
    r = p.process_one(measurement(80.3, 2.5))
    assert (r.verdict, r.reason) == (Verdict.LATE, Reason.LATE_READING)
    assert p.store.load_state("u1") == before
    assert any(h.result.verdict is Verdict.LATE for h in p.store.history("u1"))  # kept


# ---------------------------------------------------------------------------------------------
# G3 / G4 / G5 through process_one


@pytest.mark.parametrize(
    ("history", "value", "reasons"),
    [
        ([80.0] * 10, 80.0 / LB_KG, {Reason.PROBABLE_UNIT_ERROR}),  # 176.4 in an 80 kg history
        ([80.0] * 10, 80.0 * LB_KG, {Reason.PROBABLE_UNIT_ERROR}),  # 36.3 the other way
        ([95.0] * 10, 27.5, {Reason.PROBABLE_BMI}),  # a BMI-sized number
        ([77.0] * 10, 177.0, {Reason.RATE_OF_CHANGE, Reason.INNOVATION_OUTLIER}),  # 177 for 77
        ([95.0] * 10, 59.0, {Reason.RATE_OF_CHANGE, Reason.INNOVATION_OUTLIER}),  # 59 for 95
    ],
    ids=["lb-as-kg", "kg-as-lb", "bmi", "typo-177", "typo-59"],
)
def test_suspicious_values_are_rejected_with_reason_and_touch_nothing(history, value, reasons):
    """Unit errors, BMIs and typing errors are rejected with a reason; kalman/buffer unchanged."""
    p = _processor()
    _history(p, history)
    before = p.store.load_state("u1")
    r = p.process_one(measurement(value, len(history)))
    assert r.verdict is Verdict.REJECTED and r.reason in reasons, r
    after = p.store.load_state("u1")
    assert _frozen(after) == _frozen(before)
    assert after.rejected[-1].weight_kg == value and after.version == before.version + 1
    nxt = p.process_one(measurement(history[-1] + 0.2, len(history) + 1))
    assert nxt.verdict is Verdict.ACCEPTED  # the filter is still where it was


def test_long_gap_triggers_hard_reset():
    """A plausible reading after more than hard_gap_days restarts the filter (HARD reset)."""
    p = _processor()
    _history(p, [80.0, 80.1, 79.9, 80.0])
    r = p.process_one(measurement(84.0, 3 + 45))
    assert r.verdict is Verdict.ACCEPTED and r.reset_type is ResetType.HARD
    assert r.filtered_weight == pytest.approx(84.0)
    assert p.store.load_state("u1").last_reset_type is ResetType.HARD


@pytest.mark.parametrize(("value", "reason"), [
    (130.0, Reason.IMPLAUSIBLE_RESET),  # another person on the scale
    (28.0, Reason.PROBABLE_BMI),
    (80.0 / LB_KG, Reason.PROBABLE_UNIT_ERROR),
])
def test_implausible_reading_after_gap_does_not_become_baseline(value, reason):
    """After a long gap an implausible reading is rejected, not taken as the new baseline."""
    p = _processor()
    _history(p, [80.0, 80.1, 79.9, 80.0])
    before = p.store.load_state("u1")
    r = p.process_one(measurement(value, 3 + 45))
    assert (r.verdict, r.reason) == (Verdict.REJECTED, reason)
    assert _frozen(p.store.load_state("u1")) == _frozen(before)
    good = p.process_one(measurement(81.0, 3 + 46))
    assert good.verdict is Verdict.ACCEPTED and good.reset_type is ResetType.HARD
    assert good.filtered_weight == pytest.approx(81.0)


@pytest.mark.parametrize(
    ("first", "rejected"), [(125.0, 1), (29.0, 0)], ids=["other-person", "bmi"]
)
def test_wrong_first_reading_recovers_after_consistent_readings(first, rejected):
    """A wrong first reading is overruled: two consistent real readings reset the filter (one
    against one reading), and a BMI-sized first value at once (issue 13)."""
    p = _processor()
    assert p.process_one(measurement(first, 0)).reset_type is ResetType.INITIAL
    results = [p.process_one(measurement(80.0 + 0.1 * i, 1 + i)) for i in range(8)]
    verdicts = [(r.verdict, r.reset_type) for r in results]
    assert verdicts[:rejected] == [(Verdict.REJECTED, None)] * rejected, verdicts
    assert verdicts[rejected] == (Verdict.ACCEPTED, ResetType.HARD), verdicts
    assert all(v == (Verdict.ACCEPTED, None) for v in verdicts[rejected + 1 :]), verdicts
    est = p.estimate("u1")
    assert est is not None and abs(est.weight_kg - 80.7) < 1.0


def test_pounds_first_reading_is_overruled_by_the_next_reading():
    """A first reading in pounds labelled kg is corrected by the very next reading (x 1/2.2046)."""
    p = _processor()
    assert p.process_one(measurement(80.0 / LB_KG, 0)).reset_type is ResetType.INITIAL
    results = [p.process_one(measurement(80.0 + 0.1 * i, 1 + i)) for i in range(6)]
    assert results[0].verdict is Verdict.ACCEPTED and results[0].reset_type is ResetType.HARD
    assert all(r.verdict is Verdict.ACCEPTED and r.reset_type is None for r in results[1:])
    assert p.estimate("u1").weight_kg == pytest.approx(80.5, abs=1.0)


def test_consistent_pounds_after_a_good_history_are_still_refused():
    """Three consistent pounds-as-kg readings after a good history never reset the filter."""
    p = _processor()
    _history(p, [80.0, 80.1, 79.9, 80.0, 80.2])
    results = [p.process_one(measurement((80.0 + 0.1 * i) / LB_KG, 5 + i)) for i in range(5)]
    assert all((r.verdict, r.reason) == (Verdict.REJECTED, Reason.PROBABLE_UNIT_ERROR)
               for r in results), results
    assert p.estimate("u1").weight_kg == pytest.approx(80.0, abs=0.5)



def test_process_one_redoes_a_unit_that_met_another_writer():
    """A commit refused as a conflict is redone from fresh state; the reading is stored once."""
    from weightstream.errors import ConflictError
    from weightstream.testing import FaultyStore, MemoryStore

    inner = MemoryStore()
    calls = {"n": 0}

    def first_only(unit):
        calls["n"] += 1
        return calls["n"] == 1

    p = Processor(FaultyStore(inner, ConflictError("moved"), fail_when=first_only))
    result = p.process_one(measurement(80.0, 0))
    assert result.verdict is Verdict.ACCEPTED
    assert [row.measurement.reading_id for row in inner.history("u1")] == [result.reading_id]
    assert inner.load_state("u1").version == 1


def test_reading_stored_by_the_other_writer_comes_back_duplicate():
    """If the competing writer stored the same reading, the redo reports it as a duplicate."""
    from weightstream.errors import ConflictError
    from weightstream.testing import FaultyStore, MemoryStore

    inner = MemoryStore()
    other = Processor(inner)
    m = measurement(80.0, 0)

    def race(unit):
        if not inner.history("u1"):
            other.process_one(m)  # the other writer gets there first
            return True
        return False

    p = Processor(FaultyStore(inner, ConflictError("moved"), fail_when=race))
    assert p.process_one(m).verdict is Verdict.DUPLICATE
    assert len(inner.history("u1")) == 1


def test_refresh_drops_only_what_another_process_changed() -> None:
    """Two processors on one store: ``refresh`` keeps a cached state that is still the stored
    one (no load), drops one the other processor committed over, and forgets that a user
    had no state once the other processor stored one."""
    from weightstream.batch import Batch

    store = MemoryStore()
    ours, theirs = Processor(store, Config()), Processor(store, Config())
    ours.process_one(measurement(80.0, 0, user="a"))
    ours.preload(["a", "b"])  # "b": remembered as having no state
    kept = ours.load_state("a")
    ours.refresh(["a", "b"])
    assert ours.load_state("a") is kept
    for user in ("a", "b"):
        theirs.forget()
        batch = Batch(theirs, input_id=None)
        batch.process(measurement(80.5, 1, user=user))
        batch.commit()
    ours.refresh(["a", "b"])
    assert ours.load_state("a") == store.load_state("a") != kept
    assert ours.load_state("b") == store.load_state("b") is not None
