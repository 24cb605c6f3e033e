"""A baseline a burst set is provisional (issue 13: ``outlier_bursts``).

Two ways another person's readings become a user's baseline, and how the person's own
readings win it back:

* one clean first reading, then a burst that took the filter over (a filter resting on one
  reading gives way to two): the takeover remembers the level it displaced, and the first
  reading back at that level restarts the filter there;
* the user's first readings are the burst: the burst's segment is provisional while it
  adapts and rests on fewer than ``rules.streak_established`` readings, so a streak that
  outnumbers it wins.

Every reading gets one verdict and is stored once; the file engine's compiled loop decides as
the step does.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from weightstream.config import Config
from weightstream.model import ResetType, Result, Verdict
from weightstream.pipeline import process_file
from weightstream.processor import Processor
from weightstream.resets.triggers import displaced
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import T0, MemoryStore, measurement

#: One clean reading, a burst of four 40 kg above, then the person again (kg, day).
AFTER_FIRST = [(71.0, 0.0)] + [(110.0 + 0.3 * i, 1.0 + i) for i in range(4)]
AFTER_FIRST += [(69.0 + 0.2 * i, 5.0 + i) for i in range(6)]
#: The first three readings are the burst, then the person.
BURST_FIRST = [(110.0 + 0.3 * i, float(i)) for i in range(3)]
BURST_FIRST += [(70.0 - 0.1 * i, 3.0 + i) for i in range(7)]


def _run(readings: list[tuple[float, float]]) -> tuple[Processor, list[Result]]:
    p = Processor(MemoryStore(), Config())
    return p, [p.process_one(measurement(kg, day)) for kg, day in readings]


def test_the_first_reading_back_after_a_burst_that_took_over_restarts_the_filter() -> None:
    """71, a burst of four at 110 (it takes over at its second reading), then 69: the 69 and
    every reading after it are accepted, and the filter is back near 69 at once (before: the
    first two were rejected against the burst's level)."""
    _, results = _run(AFTER_FIRST)
    burst, own = results[1:5], results[5:]
    assert any(r.reset_type is ResetType.HARD for r in burst)  # the burst took over
    assert [r.verdict for r in own] == [Verdict.ACCEPTED] * len(own)
    assert own[0].reset_type is ResetType.HARD
    assert own[0].filtered_weight is not None and abs(own[0].filtered_weight - 69.0) < 1.0


def test_the_takeover_remembers_the_displaced_level_and_the_return_forgets_the_burst() -> None:
    """After the takeover the state keeps the 71 before its reset; after the return it keeps
    only the returning reading (the burst is not a level to return to)."""
    p, _ = _run(AFTER_FIRST[:3])  # 71, then the burst's first two: the second takes over
    state = p.store.load_state("u1")
    assert state is not None
    assert [b.weight_kg for b in displaced(state)] == [71.0]
    p2, _ = _run(AFTER_FIRST[:6])  # ... and the first reading back
    after = p2.store.load_state("u1")
    assert after is not None and displaced(after) == ()
    assert [b.weight_kg for b in after.buffer] == [69.0]


def test_first_readings_a_burst_then_the_true_level_wins_by_majority() -> None:
    """Three readings at 110 first, then 70: the fourth 70 restarts the filter (one more
    than the burst's three; before, the sixth, after five rejections) and all after it are
    accepted."""
    _, results = _run(BURST_FIRST)
    own = results[3:]
    assert [r.verdict for r in own[:3]] == [Verdict.REJECTED] * 3
    assert own[3].verdict is Verdict.ACCEPTED and own[3].reset_type is ResetType.HARD
    assert all(r.verdict is Verdict.ACCEPTED for r in own[3:])


def test_an_established_filter_is_not_provisional() -> None:
    """Ten readings over ten days, then a burst of five: rejected, the filter stays."""
    _, results = _run(
        [(80.0, float(d)) for d in range(10)] + [(110.0, 10 + 0.2 * i) for i in range(5)]
    )
    assert all(r.verdict is Verdict.REJECTED for r in results[10:])


def test_every_reading_has_one_verdict_and_one_stored_row() -> None:
    """No reading is lost or stored twice across the takeover and the return."""
    p, results = _run(AFTER_FIRST)
    history = p.store.history("u1")
    assert len(history) == len(AFTER_FIRST) == len(results)
    assert len({h.measurement.reading_id for h in history}) == len(AFTER_FIRST)
    assert [h.result.verdict for h in history] == [r.verdict for r in results]
    state = p.store.load_state("u1")
    assert state is not None
    accepted = sum(r.verdict is Verdict.ACCEPTED for r in results)
    assert state.accepted_count == accepted


def _csv(path: Path, users: dict[str, list[tuple[float, float]]]) -> None:
    lines = ["id,user_id,timestamp,effectiveDateTime,source_type,weight,unit"]
    for user, readings in users.items():
        for n, (kg, day) in enumerate(readings):
            when = (T0.replace(tzinfo=None) + timedelta(days=day)).isoformat(" ")
            lines.append(f"{user}-{n},{user},{when},{when},patient-device,{kg},kg")
    path.write_text("\n".join(lines) + "\n")


def test_the_compiled_loop_decides_as_the_step(tmp_path: Path) -> None:
    """Both sequences (and an established user's burst) through the file engine, compiled and
    step by step: byte-identical results."""
    src = tmp_path / "in.csv"
    _csv(
        src,
        {
            "a": AFTER_FIRST,
            "b": BURST_FIRST,
            "c": [(80.0, float(d)) for d in range(10)] + [(110.0, 10 + 0.2 * i) for i in range(5)],
        },
    )
    outs = []
    for engine in ("compiled", "step"):
        out = tmp_path / f"{engine}.csv"
        config = Config(processing={"engine": engine})
        with SQLiteStore(tmp_path / f"{engine}.db") as store:
            process_file(src, store, config, out=out)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0].count(b"accepted") > 0


def test_a_long_burst_that_took_over_an_established_filter_gives_way_to_the_first_reading_back() -> (
    None
):
    """Twenty readings at 80, a burst of seven at 110 (the sixth takes over), then 80 again:
    the first 80 restarts the filter (before: rejected until a streak of three)."""
    readings = [(80.0, float(d)) for d in range(20)]
    readings += [(110.0 + 0.1 * i, 20 + 0.5 * i) for i in range(7)]
    readings += [(80.0, 24.0 + i) for i in range(5)]
    _, results = _run(readings)
    assert any(r.reset_type is ResetType.HARD for r in results[20:27])  # the burst took over
    own = results[27:]
    assert [r.verdict for r in own] == [Verdict.ACCEPTED] * 5
    assert own[0].reset_type is ResetType.HARD


def test_two_people_sharing_a_scale_do_not_take_turns() -> None:
    """Another person's 95 first, the user's 70 daily, the other person every third day: the
    other person wins back the filter at most once (only the user's first segment is
    remembered); remembering every displaced segment let them take it at each visit (7 of 7
    of theirs accepted, 7 of 20 of the user's rejected)."""
    readings = [(95.0, 0.0)]
    for d in range(1, 21):
        readings.append((70.0, float(d)))
        if d % 3 == 0:
            readings.append((95.0, d + 0.5))
    _, results = _run(readings)
    theirs = [r for (kg, _), r in zip(readings, results, strict=True) if kg == 95.0]
    mine = [r for (kg, _), r in zip(readings, results, strict=True) if kg == 70.0]
    assert sum(r.verdict is Verdict.ACCEPTED for r in theirs) <= 2
    assert sum(r.verdict is Verdict.REJECTED for r in mine) <= 2
    assert all(r.verdict is Verdict.ACCEPTED for r in mine[-10:])
