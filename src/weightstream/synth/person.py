"""The person model: a body, a weighing habit, a true weight path and what the scale reads.

Each user is drawn as a :class:`Person` (start weight, height, the bounds of their weight,
a source profile, a morning habit, maybe one long gap); :func:`readings_of` then gives their
:class:`Readings`: :func:`schedule` draws when each reading happens and from which source,
:func:`true_weights` the weight they really had at those times (a piecewise-linear path of
loss, plateau and regain phases), and :func:`measure` what each source read (the truth plus
the source's noise). The numbers are
in the package docstring. Every draw comes from the one ``rng``, in a fixed order: changing
the order changes every file generated after it.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from weightstream.clock import SECONDS_PER_DAY
from weightstream.synth.options import SynthOptions, _cumulative, _Plan
from weightstream.synth.sources import (
    _DATE_ONLY,
    DEVICE,
    IGLUCOSE,
    INITIAL_Q,
    SOURCE_MULTIPLIERS,
    SOURCES,
)

__all__ = ["Person", "Readings", "draw_person", "readings_of", "noise_sds"]


@dataclass(frozen=True, slots=True)
class Person:
    """One user's body and habits, drawn before any reading."""

    start_kg: float
    h2: float  # height², m²
    floor: float  # a loss stops here
    ceiling: float  # a regain stops here
    sources: tuple[str, ...]  # the profile's sources, the main one first
    source_cum: tuple[float, ...]  # their cumulative weights
    habit: float  # the usual weighing time, seconds after midnight
    use_initial: bool  # the first reading is an initial questionnaire
    gap_at: int  # index of the first reading after the gap (-1: no gap)
    gap_days: int

    @property
    def main_source(self) -> str:
        return self.sources[0]


def draw_person(rng: random.Random, plan: _Plan, m: int) -> Person:
    """A person who will have ``m`` distinct readings."""
    rand = rng.random
    start_kg = rng.uniform(60.0, 160.0)
    bmi0 = rng.uniform(max(25.0, start_kg / 1.95**2), min(45.0, start_kg / 1.50**2))
    h2 = start_kg / bmi0  # height², m²
    floor = max(0.75 * start_kg, 20.5 * h2)
    ceiling = min(1.12 * start_kg, 45.0 * h2)
    sources, weights = plan.profiles[bisect_right(plan.profile_cum, rand())]
    source_cum = _cumulative(weights)
    habit = rng.uniform(5.5 * 3600, 9.5 * 3600)
    use_initial = rand() < plan.initial_q
    gap_at, gap_days = -1, 0
    if m >= 2 and rand() < plan.gap_rate:
        gap_at = rng.randint(max(1, m * 3 // 10), max(1, m * 7 // 10))
        gap_days = rng.randint(30, 90)
    return Person(
        start_kg, h2, floor, ceiling, sources, source_cum, habit, use_initial, gap_at, gap_days
    )


@dataclass(frozen=True, slots=True)
class Readings:
    """One person's distinct readings, oldest first (lists aligned by reading)."""

    start_day: int  # the day ``days`` count from (days since 1970-01-01)
    days: list[int]
    secs: list[int]  # second of the day of the event
    srcs: list[str]
    times: list[float]  # days since ``start_day``, fractional
    true_kg: list[float]
    trend: list[float]  # true trend, kg/week
    measured: list[float]  # what the source measured, kg (before its rounding)
    #: The true offset in ``measured`` (source and time of day, kg; empty: none).
    offset: list[float] = field(default_factory=list)

    def offset_at(self, i: int) -> float:
        """The true offset of reading ``i`` (0 without offsets)."""
        return self.offset[i] if self.offset else 0.0


def readings_of(
    rng: random.Random,
    plan: _Plan,
    opts: SynthOptions,
    person: Person,
    start_day: int,
    m: int,
    sds: dict[str, float],
) -> Readings:
    """``m`` readings of ``person``: when and where (:func:`schedule`), the true weight then
    (:func:`true_weights`) and what was measured (:func:`measure`), drawn in that order; in
    the ``offsets`` scenario the source's and the time of day's offsets are added to it."""
    start_day, days, secs, srcs = schedule(rng, plan, opts, person, start_day, m)
    times, true_kg, trend = true_weights(rng, plan, person, days, secs)
    measured = measure(rng.random, sds, srcs, true_kg)
    offset: list[float] = []
    if plan.offsets:
        # Deterministic given the source and the clock: no draw, so no other file moves.
        offset = [opts.source_offset(srcs[i]) + opts.time_of_day_offset(secs[i]) for i in range(m)]
        measured = [measured[i] + offset[i] for i in range(m)]
    return Readings(start_day, days, secs, srcs, times, true_kg, trend, measured, offset)


def schedule(
    rng: random.Random, plan: _Plan, opts: SynthOptions, person: Person, start_day: int, m: int
) -> tuple[int, list[int], list[int], list[str]]:
    """When each of ``m`` readings happens and where it comes from, oldest first.

    Returns (the day readings count from, days after it, seconds of the day, sources). A
    clinical history is moved to end 1-28 days before ``start_day``.
    """
    rand = rng.random
    sources, source_cum, main_source = person.sources, person.source_cum, person.main_source
    habit, use_initial, gap_at, gap_days = (
        person.habit,
        person.use_initial,
        person.gap_at,
        person.gap_days,
    )
    # Event times and sources, oldest first.
    days = [0] * m
    secs = [0] * m
    srcs = [""] * m
    day = rng.randrange(28)
    miss = opts.missed_day_rate
    prev_morning = False
    cadence = plan.cadence
    jitter = _normals(rand, m)
    for i in range(m):
        evening = False
        if i:
            if cadence == "dense":
                if prev_morning and rand() < 0.5:
                    evening = True
                else:
                    day += 1
            elif cadence == "weekly":
                day += rng.randint(5, 9)
            elif cadence == "clinical":
                long_gap = rand() < opts.clinical_long_gap
                day += rng.randint(30, 91) if long_gap else rng.randint(21, 29)
            else:
                step = 1
                while step < 14 and rand() < miss:
                    step += 1
                day += step
            if i == gap_at:
                day += gap_days
                evening = False
        if evening:
            src = main_source
        elif i == 0 and use_initial:
            src = INITIAL_Q
        else:
            src = sources[bisect_right(source_cum, rand())]
        if src in _DATE_ONLY:
            sec = 0
        elif evening:
            sec = int(rng.uniform(18 * 3600, 22.5 * 3600))
        elif src in (DEVICE, IGLUCOSE):
            if cadence != "dense" and rand() < 0.15:
                sec = int(rand() * SECONDS_PER_DAY)
            else:
                sec = min(max(int(habit + 2400.0 * jitter[i]), 3 * 3600), 12 * 3600)
        else:
            sec = int(rng.uniform(8 * 3600, 21 * 3600))
        prev_morning = not evening and src == main_source
        days[i], secs[i], srcs[i] = day, sec, src

    if cadence == "clinical" and m:
        # A clinical history ends 1-28 days before ``start``: years of visits stay in the past.
        start_day -= days[-1] + 1 + rng.randrange(28)
    return start_day, days, secs, srcs


def true_weights(
    rng: random.Random, plan: _Plan, person: Person, days: list[int], secs: list[int]
) -> tuple[list[float], list[float], list[float]]:
    """(times in days, true weight kg, true trend kg/week) at each reading."""
    m = len(days)
    gap_at = person.gap_at
    times = [days[i] + secs[i] / SECONDS_PER_DAY for i in range(m)]
    span = (times[-1] if m else 0.0) + 1.0
    gap = (times[gap_at - 1], times[gap_at]) if gap_at > 0 else None
    segments = _true_path(rng, plan.path, span, gap, person.start_kg, person.floor, person.ceiling)
    true_kg = [0.0] * m
    trend = [0.0] * m
    j, n_seg = 0, len(segments)
    for i in range(m):
        t = times[i]
        while j + 1 < n_seg and segments[j + 1][0] <= t:
            j += 1
        t0, w0, rate = segments[j]
        true_kg[i] = w0 + rate * (t - t0)
        trend[i] = rate * 7.0
    return times, true_kg, trend


def noise_sds(opts: SynthOptions) -> dict[str, float]:
    """The measurement sd of each source (kg): ``device_sd_kg`` × √multiplier."""
    sd_base = opts.device_sd_kg
    return {s: sd_base * math.sqrt(SOURCE_MULTIPLIERS[s]) for s in SOURCES}


def measure(
    rand: Callable[[], float], sds: dict[str, float], srcs: list[str], true_kg: list[float]
) -> list[float]:
    """What each reading's source measured: the truth plus the source's Gaussian noise."""
    m = len(true_kg)
    noise = _normals(rand, m)
    return [true_kg[i] + sds[srcs[i]] * noise[i] for i in range(m)]


def _normals(rand: Callable[[], float], n: int) -> list[float]:
    """``n`` standard normal numbers (Box-Muller from ``rand``; a third of ``gauss``'s cost)."""
    out: list[float] = []
    two_pi, log, sqrt, cos, sin = 2.0 * math.pi, math.log, math.sqrt, math.cos, math.sin
    for _ in range((n + 1) // 2):
        radius = sqrt(-2.0 * log(1.0 - rand()))
        angle = two_pi * rand()
        out.append(radius * cos(angle))
        out.append(radius * sin(angle))
    del out[n:]
    return out


# ---------------------------------------------------------------------------------------------
# The true path


class _PhaseMix(NamedTuple):
    """How random phases are drawn: the chance of a loss and of loss-or-plateau (first phase,
    later phases), the rate ranges in kg/week (loss drawn positive, then negated) and the
    duration range in days."""

    first: tuple[float, float]
    later: tuple[float, float]
    loss: tuple[float, float]
    plateau: tuple[float, float]
    regain: tuple[float, float]
    days: tuple[float, float]


_WEIGHT_LOSS_PROGRAM = _PhaseMix(
    (0.7, 0.9), (0.45, 0.8), (0.5, 1.5), (-0.1, 0.1), (0.3, 1.0), (14.0, 56.0)
)
_CLINICAL_DRIFT = _PhaseMix(
    (0.60, 0.85), (0.35, 0.70), (0.05, 0.5), (-0.05, 0.05), (0.05, 0.3), (60.0, 360.0)
)


def _phases(rng: random.Random, shape: str, span: float) -> Iterator[tuple[float, float]]:
    """(rate kg/day, duration days) of successive phases, forever."""
    week = 7.0
    if shape == "steady_loss":
        yield -rng.uniform(0.5, 1.5) / week, math.inf
    elif shape == "plateau":
        yield rng.uniform(-0.1, 0.1) / week, math.inf
    elif shape == "loss_regain":
        yield -rng.uniform(0.5, 1.5) / week, span * rng.uniform(0.4, 0.6)
        yield rng.uniform(0.3, 1.0) / week, math.inf
    mix = _CLINICAL_DRIFT if shape == "clinical" else _WEIGHT_LOSS_PROGRAM
    first = True
    while True:
        r = rng.random()
        loss, flat = mix.first if first else mix.later
        first = False
        if r < loss:
            rate = -rng.uniform(*mix.loss)
        elif r < flat:
            rate = rng.uniform(*mix.plateau)
        else:
            rate = rng.uniform(*mix.regain)
        yield rate / week, rng.uniform(*mix.days)


def _true_path(
    rng: random.Random,
    shape: str,
    span: float,
    gap: tuple[float, float] | None,
    start_kg: float,
    floor: float,
    ceiling: float,
) -> list[tuple[float, float, float]]:
    """Segments (start day, weight at start, rate kg/day) covering days [0, span]."""
    phases = _phases(rng, shape, span)
    segments: list[tuple[float, float, float]] = []
    t, w = 0.0, start_kg
    rate, phase_end = 0.0, 0.0
    while t < span:
        if gap is not None and gap[0] <= t < gap[1]:
            # Across a gap the weight moves 3-10 kg (the range is >= 10.8 kg wide, so the
            # flipped and clamped change is still >= 3 kg).
            sign = 1.0 if rng.random() < 0.65 else -1.0
            delta = sign * rng.uniform(3.0, 10.0)
            if not floor <= w + delta <= ceiling:
                delta = -delta
            target = min(max(w + delta, floor), ceiling)
            # Starts just after the last reading before the gap, which keeps its own phase.
            segments.append((math.nextafter(t, math.inf), w, (target - w) / (gap[1] - t)))
            t, w, phase_end = gap[1], target, gap[1]
            continue
        if t >= phase_end:
            rate, duration = next(phases)
            phase_end = t + duration
        if (rate < 0.0 and w <= floor) or (rate > 0.0 and w >= ceiling):
            rate = 0.0  # the rest of this phase is a plateau
        end = phase_end
        if gap is not None and t < gap[0] < end:
            end = gap[0]
        bound = None
        if rate < 0.0 and t + (floor - w) / rate < end:
            end, bound = t + (floor - w) / rate, floor
        elif rate > 0.0 and t + (ceiling - w) / rate < end:
            end, bound = t + (ceiling - w) / rate, ceiling
        segments.append((t, w, rate))
        w = bound if bound is not None else w + rate * (end - t)
        t = end
    return segments or [(0.0, start_kg, 0.0)]
