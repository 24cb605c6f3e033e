"""One user's export rows and truth in file order, and the public generators.

:func:`_user` draws a user from the person model and the trouble injectors, in a fixed order
of draws from the one ``rng``, writes each reading as its source would, then lays the rows out
like a real export: grouped by source (a random source order per user), newest first, each
duplicate right after its original. :func:`iter_users` yields users one at a time and
:func:`generate` collects them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime

from weightstream.synth.options import (
    EXPECTED,
    SynthData,
    SynthOptions,
    SynthRow,
    TruthRow,
    _Plan,
    _plan,
)
from weightstream.synth.person import Readings, draw_person, noise_sds, readings_of
from weightstream.synth.sources import (
    _DAY_MS,
    _EPOCH_DATE,
    _MANUAL_STEPS,
    _STEPS_PER_KG,
    _THREE,
    _clock_texts,
    _date_text,
    _hex_id,
    _ingest_lag_ms,
    _lb_text,
    _stamp_text,
    _step_text,
)
from weightstream.synth.trouble import (
    duplicate_counts,
    inject,
    place_duplicates,
    place_twice,
    row_kinds,
    twice_counts,
)

__all__ = ["generate", "iter_users"]


def _user(
    rng: random.Random,
    plan: _Plan,
    opts: SynthOptions,
    start_day: int,
    per_user: int,
    ids: bool,
    first_row: int,
) -> tuple[list[SynthRow], list[TruthRow]]:
    """Exactly ``per_user`` rows of one user, in file order, and their truth."""
    user_id = _hex_id(rng)
    # Duplicates take slots: per_user = distinct readings + duplicates.
    n_dup_id, n_dup_content = duplicate_counts(rng.random, plan, per_user)
    n_unit = n_shift = 0
    if plan.dup_unit or plan.dup_shift:
        n_unit, n_shift = twice_counts(rng.random, plan, per_user - n_dup_id - n_dup_content)
    m = per_user - n_dup_id - n_dup_content - n_unit - n_shift
    person = draw_person(rng, plan, m)
    sds = noise_sds(opts)
    readings = readings_of(rng, plan, opts, person, start_day, m, sds)
    kinds, outlier_kg = row_kinds(
        rng, plan, opts, readings.srcs, person.main_source, readings.true_kg, sds
    )
    rows, texts, ingest_ms = _reading_rows(
        rng, readings, kinds, outlier_kg, person.h2, user_id, ids
    )
    dups = place_duplicates(rng.random, kinds, n_dup_id, n_dup_content)
    shift_hours = 0
    if n_unit or n_shift:
        place_twice(rng.random, kinds, n_unit, n_shift, dups)
        # One user, one zone: the UTC copy is 1-14 hours after or before the local time.
        shift_hours = rng.randint(1, 14) * (1 if rng.random() < 0.5 else -1)
    return _in_file_order(rng, readings, rows, texts, ingest_ms, dups, ids, first_row, shift_hours)


def _reading_rows(
    rng: random.Random,
    r: Readings,
    kinds: list[str],
    outlier_kg: dict[int, float],
    h2: float,
    user_id: str,
    ids: bool,
) -> tuple[list[SynthRow], list[tuple[str, float, str]], list[int]]:
    """Each reading's export row, its (intended effective, measured kg, kind) and its ingest
    time (ms after the start of its event's day), in reading order."""
    rand, clock = rng.random, _clock_texts()
    m = len(kinds)
    srcs, days, secs, measured, start_day = r.srcs, r.days, r.secs, r.measured, r.start_day
    # Ids are drawn in one go (a third of the cost of one at a time).
    step_text, steps_per_kg, manual_steps = _step_text, _STEPS_PER_KG, _MANUAL_STEPS
    id_text = rng.getrandbits(128 * m).to_bytes(16 * m, "big").hex().upper() if m else ""
    reading_rows: list[SynthRow] = []
    reading_truth: list[tuple[str, float, str]] = []  # (intended effective, measured, kind)
    ingest_ms = [0] * m
    for i in range(m):
        src, kind, m_kg = srcs[i], kinds[i], measured[i]
        abs_day = start_day + days[i]
        event_date = _date_text(abs_day)
        effective = event_date + " " + clock[secs[i]]
        ingest = secs[i] * 1000 + _ingest_lag_ms(rand, src)
        ingest_ms[i] = ingest
        extra, ms = divmod(ingest, _DAY_MS)
        stamp = (
            (_date_text(abs_day + extra) if extra else event_date)
            + " "
            + clock[ms // 1000]
            + "."
            + _THREE[ms % 1000]
        )
        if kind == "clean":
            text, value = step_text(src, round(m_kg * steps_per_kg.get(src, manual_steps)))
            unit, row_effective = "kg", effective
        else:
            text, value, unit, row_effective = inject(
                rng, kind, src, m_kg, r.true_kg[i], outlier_kg.get(i), h2, effective
            )
        # tuple.__new__: a NamedTuple's own __new__ costs twice as much, in the hot loop.
        reading_rows.append(
            tuple.__new__(
                SynthRow,
                (
                    id_text[32 * i : 32 * i + 32] if ids else "",
                    user_id,
                    stamp,
                    row_effective,
                    src,
                    text,
                    unit,
                ),
            )
        )
        reading_truth.append((effective, value, kind))
    return reading_rows, reading_truth, ingest_ms


def _in_file_order(
    rng: random.Random,
    r: Readings,
    reading_rows: list[SynthRow],
    reading_truth: list[tuple[str, float, str]],
    ingest_ms: list[int],
    dups: dict[int, list[str]],
    ids: bool,
    first_row: int,
    shift_hours: int = 0,
) -> tuple[list[SynthRow], list[TruthRow]]:
    """The rows as the export lists them, duplicates added, and the truth row for each.

    A copy follows its original, except a clock-shifted copy, which stands where its shifted
    time puts it among its source's rows (newest first), as a real export lists it.
    """
    rand, clock = rng.random, _clock_texts()
    srcs, times, true_kg, trend = r.srcs, r.times, r.true_kg, r.trend
    # File order: by source (a random order per user), newest first.
    order_of_sources = list(dict.fromkeys(srcs))
    rng.shuffle(order_of_sources)
    rank = {s: k for k, s in enumerate(order_of_sources)}
    order = sorted(range(len(srcs)), key=lambda i: (rank[srcs[i]], -times[i], -i))

    # (row, reading index, kind, time the row stands at in its source's run or None)
    entries: list[tuple[SynthRow, int, str, float | None]] = []
    shifted = False
    for i in order:
        row = reading_rows[i]
        entries.append((row, i, reading_truth[i][2], None))
        for dup_kind in dups.get(i, ()):
            at: float | None = None
            if dup_kind == "duplicate_content":
                new_id = _hex_id(rng)
                later = ingest_ms[i] + 1 + int(rand() * 50)
                row = row._replace(
                    id=new_id if ids else "",
                    timestamp=_stamp_text(clock, r.start_day + r.days[i], later),
                )
            elif dup_kind == "duplicate_unit":
                new_id = _hex_id(rng)
                later = ingest_ms[i] + 1 + int(rand() * 50)
                text, _ = _lb_text(srcs[i], reading_truth[i][1])
                row = reading_rows[i]._replace(
                    id=new_id if ids else "",
                    timestamp=_stamp_text(clock, r.start_day + r.days[i], later),
                    weight=text,
                    unit="[lb_ap]",
                )
            elif dup_kind == "clock_shift":
                new_id = _hex_id(rng)
                day, sec = divmod(r.secs[i] + shift_hours * 3600, 86_400)
                day += r.start_day + r.days[i]
                row = reading_rows[i]._replace(
                    id=new_id if ids else "",
                    timestamp=_stamp_text(
                        clock, r.start_day + r.days[i], ingest_ms[i] + shift_hours * 3_600_000
                    ),
                    effective=_date_text(day) + " " + clock[sec],
                )
                at, shifted = times[i] + shift_hours / 24.0, True
            else:
                row = entries[-1][0] if entries[-1][1] == i else row
            entries.append((row, i, dup_kind, at))
    if shifted:
        # A stable sort by (source, newest first): originals and their adjacent copies keep
        # their order; a shifted copy moves to its own time.
        entries.sort(key=lambda e: (rank[srcs[e[1]]], -(times[e[1]] if e[3] is None else e[3])))

    rows: list[SynthRow] = []
    truth: list[TruthRow] = []
    first_of: dict[int, int] = {}  # reading index -> line of its original row
    for k, (_row, i, kind, _at) in enumerate(entries):
        if i not in first_of and kind == reading_truth[i][2]:
            first_of[i] = first_row + k
    for k, (row, i, kind, _at) in enumerate(entries):
        row_no = first_row + k
        original = first_of.get(i, row_no)
        effective, value = reading_truth[i][0], reading_truth[i][1]
        rows.append(row)
        # tuple.__new__: a NamedTuple's own __new__ costs twice as much, in the hot loop.
        truth.append(
            tuple.__new__(
                TruthRow,
                (
                    row.id,
                    row.user_id,
                    effective,
                    row.source_type,
                    true_kg[i],
                    trend[i],
                    kind,
                    EXPECTED[kind],
                    row_no,
                    value,
                    r.offset_at(i),
                    original if original != row_no else 0,
                ),
            )
        )
    return rows, truth


def _check(users: int, per_user: int, start: datetime) -> int:
    if users < 0 or per_user < 0:
        raise ValueError("users and per_user must be >= 0")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return (start.astimezone(UTC).date() - _EPOCH_DATE).days


_DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)


def iter_users(
    users: int,
    per_user: int,
    seed: int,
    *,
    scenario: str = "mixed",
    ids: bool = True,
    start: datetime = _DEFAULT_START,
    options: SynthOptions | None = None,
) -> Iterator[tuple[list[SynthRow], list[TruthRow]]]:
    """One user at a time: (export rows in file order, truth rows), exactly ``per_user`` each.

    Concatenated, they are exactly :func:`generate`'s rows and truth. Arguments are checked
    at once (``ValueError``), not on the first ``next``.
    """
    opts = options if options is not None else SynthOptions()
    plan = _plan(scenario, opts)
    start_day = _check(users, per_user, start)
    return _users(random.Random(seed), plan, opts, start_day, users, per_user, ids)


def _users(
    rng: random.Random,
    plan: _Plan,
    opts: SynthOptions,
    start_day: int,
    users: int,
    per_user: int,
    ids: bool,
) -> Iterator[tuple[list[SynthRow], list[TruthRow]]]:
    first_row = 2
    for _ in range(users):
        rows, truth = _user(rng, plan, opts, start_day, per_user, ids, first_row)
        first_row += len(rows)
        yield rows, truth


def generate(
    users: int,
    per_user: int,
    seed: int,
    *,
    scenario: str = "mixed",
    ids: bool = True,
    start: datetime = _DEFAULT_START,
    options: SynthOptions | None = None,
) -> SynthData:
    """A synthetic export of ``users × per_user`` rows and its truth (see the module docs).

    ``start`` (a UTC date; naive means UTC) is the earliest day a user may begin. With
    ``ids=False`` the export has no ``id`` column and the truth identifies rows by ``row``.
    """
    rows: list[SynthRow] = []
    truth: list[TruthRow] = []
    for user_rows, user_truth in iter_users(
        users, per_user, seed, scenario=scenario, ids=ids, start=start, options=options
    ):
        rows.extend(user_rows)
        truth.extend(user_truth)
    extra = _plan(scenario, options if options is not None else SynthOptions()).extra_truth
    return SynthData(rows, truth, ids, extra)
