"""Deterministic synthetic weight exports, with the ground truth behind every row.

Tests and the accuracy benchmark need exports shaped like the real ones (grouped by user and
source, newest first, pounds and BMIs mixed in, duplicates, junk) *and* the answer: the weight
each person really had, and what an ideal processor should say about each row.
:func:`generate` returns both in memory; :func:`write_stream` writes them one user at a time.
Everything comes from one ``random.Random(seed)``: the same arguments give byte-identical files
(on the same Python minor version; ``random``'s algorithms are stable across versions but not
promised to be).

>>> data = generate(2, 5, seed=1, scenario="steady_loss")
>>> len(data.rows), len(data.truth), {t.kind for t in data.truth}
(10, 10, {'clean'})

Row count
---------
Every user gets **exactly** ``per_user`` rows, so a file has exactly ``users × per_user`` data
lines (plus the header). Duplicate rows are *part of* ``per_user``: a user with ``d`` duplicates
has ``per_user − d`` distinct readings (``d ≤ per_user − 1``). Invalid rows (NULL weight, bad
timestamp, ...) replace a reading; they are never extra.

The model
---------
**True weight** (kg, the ``true_weight_kg`` column) is piecewise linear per user:

- start weight uniform 60-160 kg; a height is drawn so that the start BMI is 25-45 (people in
  a weight-loss program), height 1.50-1.95 m;
- phases: *loss* 0.5-1.5 kg/week, *plateau* -0.1..+0.1 kg/week, *regain* 0.3-1.0 kg/week,
  each lasting 14-56 days (first phase: loss 70%, plateau 20%, regain 10%; later phases loss
  45%, plateau 35%, regain 20%). ``true_trend_kg_week`` is the slope of the current phase;
- a loss stops (the phase turns into a plateau) at max(75% of the start weight, BMI 20.5); a
  regain stops at min(112% of the start weight, BMI 45). So BMIs stay within 20.5-45;
- a *gap* is 30-90 days with no reading; across it the weight moves linearly by 3-10 kg (up
  65% of the time, the other way if that would leave the bounds above; always >= 3 kg), so
  the first reading after the gap sits at a new level.

**Readings.** Event times (``effectiveDateTime``) start 0-27 days after ``start`` and step
1 day, plus one more day with probability ``missed_day_rate`` per extra day (at most 14 days
between readings). Device readings come at a personal morning hour (5:30-9:30, sd 40 min; 15%
at a random time of day); questionnaires and connectivehealth.io carry a date only
(``00:00:00``); uploads are entered in the daytime. The ingest ``timestamp`` is after the event:
seconds (iglucose), minutes to hours, 15% 1-72 h late (device), hours (questionnaires), days to
weeks (connectivehealth). Each user has a source profile: 70% device users (86% device, the
rest questionnaires, uploads, connectivehealth), 15% iglucose users (86% iglucose), 15%
connectivehealth users (82%). In ``mixed`` and ``manual_disagree`` half the users start with an
``initial-questionnaire`` row.

**Measurement noise** (the daily physiological wobble — water, meals, clothes — is part of it,
not of the truth): Gaussian, sd = ``device_sd_kg`` × √multiplier of the source:

========================== ========== ======= ===============================================
source                     multiplier sd (kg) recorded as
========================== ========== ======= ===============================================
care-team-upload           0.5        0.57    whole pounds × 0.453592 (as real exports do)
patient-upload             0.7        0.67    whole pounds × 0.453592
internal-/initial-quest.   0.8        0.72    whole pounds × 0.453592, date only
patient-device             1.0        0.80    0.2 lb steps × 0.45359237 (float noise kept)
connectivehealth.io        1.5        0.98    kg, 2 decimals, date only
api.iglucose.com           3.0        1.39    kg, 1 decimal
========================== ========== ======= ===============================================

``device_sd_kg`` defaults to 0.8 = √0.64, the filter's default measurement variance, which
also gives the ≈1.0 and ≈1.4 kg of connectivehealth and iglucose.

**Trouble** (the ``kind`` column; ``expected`` is what an ideal processor should say). Rates
are the ``mixed`` defaults of :class:`SynthOptions` (per row unless said otherwise):

================= ======== ========= =========================================================
kind              expected rate      what the row looks like
================= ======== ========= =========================================================
clean             valid    the rest  a reading of the true weight plus the source's noise
lb                valid    2%        pounds, unit ``[lb_ap]`` (70%) or ``lb``, correctly
                                     labelled: value × 0.45359237 = the reading in kg
manual_off        valid    10% of    a manual source (questionnaire, upload) off by 2-5 kg:
                           manual    still a real reading, it disagrees with the scale
outlier           outlier  1.2%      device/integration: another person on the scale (±15-40
                                     kg); manual: a typing error (77 → 177, 59 ↔ 95)
(outlier burst)   outlier  4% users  3-5 consecutive readings of the main source from another
                                     person (one consistent weight ± noise); kind ``outlier``
unit_error        outlier  0.4%      a pound value labelled ``kg`` (≈ 2.2046 × the weight)
bmi_as_kg         outlier  0.3%      the person's BMI (20.5-45) labelled ``kg``
bmi_unit          invalid  0.4%      the BMI with unit ``kg/m2``
bsa_unit          invalid  0.3%      body surface area (Mosteller, 1.6-2.6) with unit ``m2``
null              invalid  0.4%      empty weight, unit ``kg``
bad_timestamp     invalid  0.2%      unparseable ``effectiveDateTime`` (day 32, hour 25,
                                     ``0000-00-00 00:00:00``, text, empty)
future            invalid  0.1%      the event time with year 2099
ancient           invalid  0.1%      the event time with year 1850
bad_number        invalid  0.2%      ``72,5`` (decimal comma, 70%) or ``abc``/``n/a``/``#VALUE!``
duplicate_id      duplicate 0.4%     an exact copy of a clean row (same id), right after it
duplicate_content duplicate 0.6%     the same reading under a new id, ingested 1-50 ms later,
                                     right after it
================= ======== ========= =========================================================

Every outlier-kind value stays inside 30-400 kg and every BMI is ≥ 20.5, so none of them is
*invalid* under the default hard limits (20-500 kg): they are for the filter to catch.
Gaps: 8% of ``mixed`` users. Only ``clean`` rows are duplicated (any row of a user who has no
clean row), so the first copy in file order carries the original's kind.

**Truth rows.** One per export row, in the same order. ``true_weight_kg`` and
``true_trend_kg_week`` are at the *intended* event time, and the truth's
``effectiveDateTime`` is that intended time even where the export's is corrupted
(``bad_timestamp``, ``future``, ``ancient``). :attr:`TruthRow.measured_kg` (in memory only)
is the source's reading in kg after its rounding, before any trouble was applied.

**Scenarios** (:data:`SCENARIOS`): ``mixed`` has all of the above. Each other scenario has
clean readings plus only its own trouble (:data:`SCENARIO_KINDS`); ``scenario_rate`` sets
how much of it:

- ``steady_loss``, ``plateau``, ``loss_regain``: one fixed path shape (loss the whole time;
  flat; loss for 40-60% of the span, then regain);
- ``gap_level_change``: every user (with ≥ 2 readings) has one gap with a level change;
- ``dense_daily``: a reading every day, half the days a second one in the evening;
- ``sparse_weekly``: a reading every 5-9 days;
- ``noisy_integration``: every user is an iglucose user;
- ``lb_as_kg``: ``unit_error`` on ``scenario_rate`` of the rows;
- ``bmi_values``: ``bmi_unit`` and ``bmi_as_kg`` on ``scenario_rate / 2`` of the rows each;
- ``outlier_bursts``: max(1, round(``scenario_rate`` × readings / 4)) bursts per user;
- ``manual_disagree``: 40% of readings manual, min(1, 4 × ``scenario_rate``) of those off
  by 2-5 kg;
- ``sparse_clinical``: clinic-visit histories over years, clean readings only (below).

**The sparse clinical cohort** (``sparse_clinical``) is what a clinic's records look like: a
weight at each visit, about one a month, for years (50 readings span about four years).

- Sources: care-team-upload 80% (the visit's weighing), patient-upload 10%,
  internal-questionnaire 10% (date only); visits are in the daytime (08:00-21:00).
- Intervals: a follow-up visit 21-29 days after the last one, or, with probability
  ``clinical_long_gap`` (default 0.13), a long interval of 30-91 days (missed visits, a
  three-month review). A long interval is a HARD reset under the default
  ``resets.hard_gap_days`` of 30, so a file is mostly follow-ups: about 15% of its rows
  trigger a reset when processed with the default configuration (the first reading of each
  user, the long intervals, and a few soft resets of manual entries; measured in
  ``tests/test_synth.py``).
- The true path drifts slowly: phases of 60-360 days, loss 0.05-0.5 kg/week (first phase
  60%, later 35%), plateau -0.05..+0.05 kg/week (25%, 35%), regain 0.05-0.3 kg/week (15%,
  30%), within the same floor and ceiling as above; no level jumps.
- Placement: a history *ends* 1-28 days before ``start`` (it begins years before it), so
  that no reading of a long history lies in the future. Visits average about 30 days apart:
  from the default start, 50 a user begin around 2019, while beyond about 400 a user the
  first ones fall before 1990, which the default ``validation.min_year`` refuses.

**File order**, like real exports: grouped by user (in generation order); within a user
grouped by source (a random source order per user); within a source newest first; a
duplicate right after its original.
"""

from __future__ import annotations

import functools
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, NamedTuple

__all__ = [
    "EXPORT_COLUMNS",
    "TRUTH_COLUMNS",
    "KINDS",
    "EXPECTED",
    "SCENARIOS",
    "SCENARIO_KINDS",
    "SOURCES",
    "MANUAL_SOURCES",
    "SOURCE_MULTIPLIERS",
    "LB_KG",
    "SynthOptions",
    "SynthRow",
    "TruthRow",
    "SynthData",
    "generate",
    "iter_users",
    "write",
    "write_stream",
]

#: Kilograms per avoirdupois pound (exact).
LB_KG = 0.45359237
#: The truncated factor real questionnaire/upload rows are converted with.
_MANUAL_LB_KG = 0.453592

DEVICE = "patient-device"
IGLUCOSE = "https://api.iglucose.com"
CONNECTIVE = "https://connectivehealth.io"
PATIENT_UPLOAD = "patient-upload"
CARE_TEAM = "care-team-upload"
INTERNAL_Q = "internal-questionnaire"
INITIAL_Q = "initial-questionnaire"

#: Noise multipliers per source. They mirror the defaults of ``config.SourceConfig`` but are
#: kept apart on purpose: tuning the processor must never change the benchmark's data.
SOURCE_MULTIPLIERS: dict[str, float] = {
    CARE_TEAM: 0.5,
    PATIENT_UPLOAD: 0.7,
    INTERNAL_Q: 0.8,
    INITIAL_Q: 0.8,
    DEVICE: 1.0,
    CONNECTIVE: 1.5,
    IGLUCOSE: 3.0,
}
SOURCES: tuple[str, ...] = tuple(SOURCE_MULTIPLIERS)
MANUAL_SOURCES: frozenset[str] = frozenset({CARE_TEAM, PATIENT_UPLOAD, INTERNAL_Q, INITIAL_Q})
_DATE_ONLY: frozenset[str] = frozenset({INTERNAL_Q, INITIAL_Q, CONNECTIVE})

EXPORT_COLUMNS: tuple[str, ...] = (
    "id",
    "user_id",
    "timestamp",
    "effectiveDateTime",
    "source_type",
    "weight",
    "unit",
)
TRUTH_COLUMNS: tuple[str, ...] = (
    "id",
    "user_id",
    "effectiveDateTime",
    "source_type",
    "true_weight_kg",
    "true_trend_kg_week",
    "kind",
    "expected",
)

#: Every row kind, and what an ideal processor should say about it.
EXPECTED: dict[str, str] = {
    "clean": "valid",
    "lb": "valid",
    "manual_off": "valid",
    "outlier": "outlier",
    "unit_error": "outlier",
    "bmi_as_kg": "outlier",
    "bmi_unit": "invalid",
    "bsa_unit": "invalid",
    "null": "invalid",
    "bad_timestamp": "invalid",
    "future": "invalid",
    "ancient": "invalid",
    "bad_number": "invalid",
    "duplicate_id": "duplicate",
    "duplicate_content": "duplicate",
}
KINDS: tuple[str, ...] = tuple(EXPECTED)

SCENARIOS: tuple[str, ...] = (
    "mixed",
    "steady_loss",
    "plateau",
    "loss_regain",
    "gap_level_change",
    "dense_daily",
    "sparse_weekly",
    "noisy_integration",
    "lb_as_kg",
    "bmi_values",
    "outlier_bursts",
    "manual_disagree",
    "sparse_clinical",
)
#: The kinds each scenario can produce (``mixed``: all of them).
SCENARIO_KINDS: dict[str, frozenset[str]] = {
    "mixed": frozenset(KINDS),
    "steady_loss": frozenset({"clean"}),
    "plateau": frozenset({"clean"}),
    "loss_regain": frozenset({"clean"}),
    "gap_level_change": frozenset({"clean"}),
    "dense_daily": frozenset({"clean"}),
    "sparse_weekly": frozenset({"clean"}),
    "noisy_integration": frozenset({"clean"}),
    "lb_as_kg": frozenset({"clean", "unit_error"}),
    "bmi_values": frozenset({"clean", "bmi_unit", "bmi_as_kg"}),
    "outlier_bursts": frozenset({"clean", "outlier"}),
    "manual_disagree": frozenset({"clean", "manual_off"}),
    "sparse_clinical": frozenset({"clean"}),
}

# Per-row trouble drawn by one uniform number; duplicates, manual_off and bursts are separate.
_ROW_KINDS: tuple[str, ...] = (
    "outlier",
    "unit_error",
    "bmi_as_kg",
    "lb",
    "bmi_unit",
    "bsa_unit",
    "null",
    "bad_timestamp",
    "future",
    "ancient",
    "bad_number",
)


@dataclass(frozen=True, slots=True)
class SynthOptions:
    """Rates and noise of the generator. Row rates are per row of the ``mixed`` scenario."""

    #: Measurement sd of ``patient-device`` (kg); other sources scale it by √multiplier.
    device_sd_kg: float = 0.8
    #: Probability of each extra missed day between daily readings.
    missed_day_rate: float = 0.25
    #: Per user (``mixed``): one 30-90 day gap with a level change.
    gap_user_rate: float = 0.08
    #: Per user (``mixed``): one burst of 3-5 consecutive outliers.
    burst_user_rate: float = 0.04
    #: Per manual-source row (``mixed``): off by 2-5 kg.
    manual_off: float = 0.10
    outlier: float = 0.012
    unit_error: float = 0.004
    bmi_as_kg: float = 0.003
    lb: float = 0.02
    bmi_unit: float = 0.004
    bsa_unit: float = 0.003
    null: float = 0.004
    bad_timestamp: float = 0.002
    future: float = 0.001
    ancient: float = 0.001
    bad_number: float = 0.002
    duplicate_id: float = 0.004
    duplicate_content: float = 0.006
    #: How much of its own trouble a pure scenario has (see the module docstring).
    scenario_rate: float = 0.08
    #: Per visit interval (``sparse_clinical``): a long interval of 30-91 days instead of a
    #: 21-29 day follow-up. 0.13 makes about 15% of rows trigger a reset (module docstring).
    clinical_long_gap: float = 0.13

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"SynthOptions.{f.name} must be a finite number")
            if f.name != "device_sd_kg" and not 0.0 <= value <= 1.0:
                raise ValueError(f"SynthOptions.{f.name} must be within [0, 1], not {value}")
        if self.device_sd_kg <= 0:
            raise ValueError("SynthOptions.device_sd_kg must be positive")
        if sum(getattr(self, k) for k in _ROW_KINDS) > 0.5:
            raise ValueError("SynthOptions: the per-row trouble rates add up to more than 0.5")
        if self.duplicate_id + self.duplicate_content > 0.5:
            raise ValueError("SynthOptions: the duplicate rates add up to more than 0.5")


class SynthRow(NamedTuple):
    """One export row, every field exactly the text written (``id`` is ``""`` without ids)."""

    id: str
    user_id: str
    timestamp: str
    effective: str
    source_type: str
    weight: str
    unit: str


class TruthRow(NamedTuple):
    """The truth about the export row on line :attr:`row` of the file (header = line 1)."""

    id: str
    user_id: str
    #: The intended event time (even where the export's is corrupted).
    effective: str
    source_type: str
    true_weight_kg: float
    true_trend_kg_week: float
    kind: str
    expected: str
    row: int
    #: The source's reading in kg after its rounding, before any trouble (not in the CSV).
    measured_kg: float


@dataclass(frozen=True, slots=True)
class SynthData:
    """A generated export (:attr:`rows`, in file order) and its truth, row for row."""

    rows: list[SynthRow]
    truth: list[TruthRow]
    ids: bool = True


# ---------------------------------------------------------------------------------------------
# Scenario plans


_DEVICE_PROFILE = (
    (DEVICE, INTERNAL_Q, PATIENT_UPLOAD, CARE_TEAM, CONNECTIVE),
    (0.86, 0.04, 0.04, 0.03, 0.03),
)
_IGLUCOSE_PROFILE = (
    (IGLUCOSE, DEVICE, INTERNAL_Q, PATIENT_UPLOAD, CARE_TEAM),
    (0.86, 0.04, 0.04, 0.03, 0.03),
)
_CONNECTIVE_PROFILE = (
    (CONNECTIVE, INTERNAL_Q, PATIENT_UPLOAD, CARE_TEAM),
    (0.82, 0.08, 0.05, 0.05),
)
_MANUAL_PROFILE = ((DEVICE, INTERNAL_Q, PATIENT_UPLOAD, CARE_TEAM), (0.60, 0.15, 0.15, 0.10))
_CLINIC_PROFILE = ((CARE_TEAM, PATIENT_UPLOAD, INTERNAL_Q), (0.80, 0.10, 0.10))

_Profile = tuple[tuple[str, ...], tuple[float, ...]]


def _cumulative(weights: tuple[float, ...]) -> tuple[float, ...]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return tuple(c / total for c in out)


@dataclass(frozen=True, slots=True)
class _Plan:
    profiles: tuple[_Profile, ...]
    profile_cum: tuple[float, ...]
    cadence: str  # "daily" | "dense" | "weekly" | "clinical"
    path: str  # "random" | "steady_loss" | "plateau" | "loss_regain" | "clinical"
    gap_rate: float
    burst_rate: float  # per-user probability of one burst ("mixed")
    burst_scenario: bool  # outlier_bursts: max(1, round(rate × readings / 4)) bursts
    kind_names: tuple[str, ...]
    kind_cum: tuple[float, ...]  # cumulative per-row rates, aligned with kind_names
    manual_off: float
    dup_id: float
    dup_content: float
    initial_q: float


def _plan(scenario: str, o: SynthOptions) -> _Plan:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    profiles: tuple[_Profile, ...] = (_DEVICE_PROFILE,)
    profile_weights: tuple[float, ...] = (1.0,)
    cadence, path = "daily", "random"
    gap_rate = burst_rate = manual_off = dup_id = dup_content = initial_q = 0.0
    rates: dict[str, float] = {}
    if scenario == "mixed":
        profiles = (_DEVICE_PROFILE, _IGLUCOSE_PROFILE, _CONNECTIVE_PROFILE)
        profile_weights = (0.70, 0.15, 0.15)
        gap_rate, burst_rate, manual_off = o.gap_user_rate, o.burst_user_rate, o.manual_off
        dup_id, dup_content, initial_q = o.duplicate_id, o.duplicate_content, 0.5
        rates = {k: getattr(o, k) for k in _ROW_KINDS}
    elif scenario in ("steady_loss", "plateau", "loss_regain"):
        path = scenario
    elif scenario == "gap_level_change":
        gap_rate = 1.0
    elif scenario == "dense_daily":
        cadence = "dense"
    elif scenario == "sparse_weekly":
        cadence = "weekly"
    elif scenario == "noisy_integration":
        profiles = (_IGLUCOSE_PROFILE,)
    elif scenario == "lb_as_kg":
        rates = {"unit_error": o.scenario_rate}
    elif scenario == "bmi_values":
        rates = {"bmi_unit": o.scenario_rate / 2, "bmi_as_kg": o.scenario_rate / 2}
    elif scenario == "manual_disagree":
        profiles = (_MANUAL_PROFILE,)
        manual_off, initial_q = min(1.0, 4 * o.scenario_rate), 0.5
    elif scenario == "sparse_clinical":
        profiles = (_CLINIC_PROFILE,)
        cadence = path = "clinical"
    names = tuple(k for k in _ROW_KINDS if rates.get(k, 0.0) > 0)
    cum, total = [], 0.0
    for k in names:
        total += rates[k]
        cum.append(total)
    return _Plan(
        profiles=profiles,
        profile_cum=_cumulative(profile_weights),
        cadence=cadence,
        path=path,
        gap_rate=gap_rate,
        burst_rate=burst_rate,
        burst_scenario=scenario == "outlier_bursts",
        kind_names=names,
        kind_cum=tuple(cum),
        manual_off=manual_off,
        dup_id=dup_id,
        dup_content=dup_content,
        initial_q=initial_q,
    )


# ---------------------------------------------------------------------------------------------
# Text of times and numbers

_EPOCH_DATE = date(1970, 1, 1)
_DAY_MS = 86_400_000
_TWO = tuple(f"{i:02d}" for i in range(100))
_THREE = tuple(f"{i:03d}" for i in range(1000))


@functools.cache
def _date_text(day: int) -> str:
    """``YYYY-MM-DD`` of a day number (days since 1970-01-01)."""
    return (_EPOCH_DATE + timedelta(days=day)).isoformat()


@functools.cache
def _clock_texts() -> tuple[str, ...]:
    """``HH:MM:SS`` of every second of a day (built once, ~5 MB: formatting is the hot path)."""
    return tuple(
        f"{_TWO[h]}:{_TWO[m]}:{_TWO[s]}" for h in range(24) for m in range(60) for s in range(60)
    )


def _stamp_text(clock: tuple[str, ...], day: int, ms_of_day: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.fff``; ``ms_of_day`` may run past midnight."""
    extra, ms = divmod(ms_of_day, _DAY_MS)
    second, milli = divmod(ms, 1000)
    return _date_text(day + extra) + " " + clock[second] + "." + _THREE[milli]


def _hex_id(rng: random.Random) -> str:
    """32 uppercase hex digits (the same text as ``f"{bits:032X}"``, twice as fast)."""
    return rng.getrandbits(128).to_bytes(16, "big").hex().upper()


@functools.cache
def _step_text(source: str, steps: int) -> tuple[str, float]:
    """Text and value of ``steps`` recording steps of ``source`` (memoised: repr is slow)."""
    if source == DEVICE:  # 0.2 lb
        value = steps / 5.0 * LB_KG
    elif source == IGLUCOSE:  # 0.1 kg
        value = steps / 10.0
    elif source == CONNECTIVE:  # 0.01 kg
        value = steps / 100.0
    else:  # whole pounds, converted with the truncated factor
        value = round(steps * _MANUAL_LB_KG, 6)
    return repr(value), value


_STEPS_PER_KG = {DEVICE: 5.0 / LB_KG, IGLUCOSE: 10.0, CONNECTIVE: 100.0}
_MANUAL_STEPS = 1.0 / LB_KG


def _kg_text(source: str, kg: float) -> tuple[str, float]:
    """How ``source`` writes a reading of ``kg``: (text, the kg value that text says).

    >>> _kg_text("patient-device", 66.7)
    ('66.67807839000001', 66.67807839000001)
    >>> _kg_text("internal-questionnaire", 103.0)[0], _kg_text("https://api.iglucose.com", 98.04)[0]
    ('102.965384', '98.0')
    """
    return _step_text(source, round(kg * _STEPS_PER_KG.get(source, _MANUAL_STEPS)))


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


def _lb_text(source: str, kg: float) -> tuple[str, float]:
    """The same reading in pounds: (text, the kg value those pounds are)."""
    lb = kg / LB_KG
    if source == DEVICE:
        pounds = round(round(lb * 5.0) / 5.0, 1)
        text = repr(pounds)
    elif source in MANUAL_SOURCES:
        whole = round(lb)
        pounds, text = float(whole), str(whole)
    else:
        pounds = round(lb, 1)
        text = repr(pounds)
    return text, pounds * LB_KG


def _with_year(effective: str, year: str) -> str:
    text = year + effective[4:]
    return text.replace("-02-29", "-02-28", 1) if text[4:10] == "-02-29" else text


# ---------------------------------------------------------------------------------------------
# The true path


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
    first = True
    while shape == "clinical":
        r = rng.random()
        loss, flat = (0.60, 0.85) if first else (0.35, 0.70)
        first = False
        if r < loss:
            rate = -rng.uniform(0.05, 0.5)
        elif r < flat:
            rate = rng.uniform(-0.05, 0.05)
        else:
            rate = rng.uniform(0.05, 0.3)
        yield rate / week, rng.uniform(60.0, 360.0)
    while True:
        r = rng.random()
        loss, flat = (0.7, 0.9) if first else (0.45, 0.8)
        first = False
        if r < loss:
            rate = -rng.uniform(0.5, 1.5)
        elif r < flat:
            rate = rng.uniform(-0.1, 0.1)
        else:
            rate = rng.uniform(0.3, 1.0)
        yield rate / week, rng.uniform(14.0, 56.0)


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


# ---------------------------------------------------------------------------------------------
# One user


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
    rand = rng.random
    clock = _clock_texts()
    user_id = _hex_id(rng)

    # Duplicates take slots: per_user = distinct readings + duplicates.
    n_dup_id = n_dup_content = 0
    if plan.dup_id or plan.dup_content:
        a, b = plan.dup_id, plan.dup_id + plan.dup_content
        for _ in range(per_user):
            r = rand()
            if r < a:
                n_dup_id += 1
            elif r < b:
                n_dup_content += 1
        excess = n_dup_id + n_dup_content - max(per_user - 1, 0)
        if excess > 0:
            cut = min(excess, n_dup_content)
            n_dup_content -= cut
            n_dup_id -= excess - cut
    m = per_user - n_dup_id - n_dup_content

    # The person.
    start_kg = rng.uniform(60.0, 160.0)
    bmi0 = rng.uniform(max(25.0, start_kg / 1.95**2), min(45.0, start_kg / 1.50**2))
    h2 = start_kg / bmi0  # height², m²
    floor = max(0.75 * start_kg, 20.5 * h2)
    ceiling = min(1.12 * start_kg, 45.0 * h2)
    sources, weights = plan.profiles[bisect_right(plan.profile_cum, rand())]
    source_cum = _cumulative(weights)
    main_source = sources[0]
    habit = rng.uniform(5.5 * 3600, 9.5 * 3600)
    use_initial = rand() < plan.initial_q
    gap_at, gap_days = -1, 0
    if m >= 2 and rand() < plan.gap_rate:
        gap_at = rng.randint(max(1, m * 3 // 10), max(1, m * 7 // 10))
        gap_days = rng.randint(30, 90)

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
                sec = int(rand() * 86_400)
            else:
                sec = min(max(int(habit + 2400.0 * jitter[i]), 3 * 3600), 12 * 3600)
        else:
            sec = int(rng.uniform(8 * 3600, 21 * 3600))
        prev_morning = not evening and src == main_source
        days[i], secs[i], srcs[i] = day, sec, src

    if cadence == "clinical" and m:
        # A clinical history ends 1-28 days before ``start``: years of visits stay in the past.
        start_day -= days[-1] + 1 + rng.randrange(28)

    # The true path at each reading.
    times = [days[i] + secs[i] / 86_400 for i in range(m)]
    span = (times[-1] if m else 0.0) + 1.0
    gap = (times[gap_at - 1], times[gap_at]) if gap_at > 0 else None
    segments = _true_path(rng, plan.path, span, gap, start_kg, floor, ceiling)
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

    sd_base = opts.device_sd_kg
    sds = {s: sd_base * math.sqrt(SOURCE_MULTIPLIERS[s]) for s in SOURCES}
    noise = _normals(rand, m)
    measured = [true_kg[i] + sds[srcs[i]] * noise[i] for i in range(m)]

    # Trouble.
    kinds = ["clean"] * m
    outlier_kg: dict[int, float] = {}
    n_bursts = 0
    if plan.burst_scenario and opts.scenario_rate > 0:
        n_bursts = max(1, round(opts.scenario_rate * m / 4))
    elif plan.burst_rate and rand() < plan.burst_rate:
        n_bursts = 1
    if n_bursts:
        main_idx = [i for i in range(m) if srcs[i] == main_source]
        for _ in range(n_bursts):
            length = rng.randint(3, 5)
            if len(main_idx) < length:
                break
            k = rng.randrange(len(main_idx) - length + 1)
            run = main_idx[k : k + length]
            if any(kinds[i] != "clean" for i in run):
                continue
            offset = rng.uniform(15.0, 40.0)
            if true_kg[run[0]] - offset >= 35.0 and rand() < 0.5:
                offset = -offset
            for i in run:
                kinds[i] = "outlier"
                outlier_kg[i] = true_kg[i] + offset + rng.gauss(0.0, sds[srcs[i]])
    kind_cum, kind_names = plan.kind_cum, plan.kind_names
    total_rate = kind_cum[-1] if kind_cum else 0.0
    manual_off = plan.manual_off
    for i in range(m):
        if kinds[i] != "clean":
            continue
        if total_rate:
            r = rand()
            if r < total_rate:
                kinds[i] = kind_names[bisect_right(kind_cum, r)]
                continue
        if manual_off and srcs[i] in MANUAL_SOURCES and rand() < manual_off:
            kinds[i] = "manual_off"

    # Rows of the readings. Ids are drawn in one go (a third of the cost of one at a time).
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
        if src == DEVICE:
            if rand() < 0.85:  # minutes: exponential, mean 20 min, at least 5 s
                lag = 5000 + int(-math.log(1.0 - rand()) * 1_200_000)
            else:  # the scale synced late
                lag = 3_600_000 + int(rand() * 71 * 3_600_000)
        elif src == IGLUCOSE:
            lag = 2_000 + int(rand() * 58_000)
        elif src == CONNECTIVE:
            lag = _DAY_MS + int(rand() * 44 * _DAY_MS)
        elif src in _DATE_ONLY:
            lag = 8 * 3_600_000 + int(rand() * 16 * 3_600_000)
        else:
            lag = 60_000 + int(rand() * 48 * 3_600_000)
        ingest = secs[i] * 1000 + lag
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
            text, value, unit, row_effective = _trouble(
                rng, kind, src, m_kg, true_kg[i], outlier_kg.get(i), h2, effective
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

    # Duplicates (of clean readings when there are any), each right after its original.
    dups: dict[int, list[str]] = {}
    if n_dup_id or n_dup_content:
        pool = [i for i in range(m) if kinds[i] == "clean"] or list(range(m))
        for dup_kind in ["duplicate_id"] * n_dup_id + ["duplicate_content"] * n_dup_content:
            dups.setdefault(pool[int(rand() * len(pool))], []).append(dup_kind)

    # File order: by source (a random order per user), newest first.
    order_of_sources = list(dict.fromkeys(srcs))
    rng.shuffle(order_of_sources)
    rank = {s: k for k, s in enumerate(order_of_sources)}
    order = sorted(range(m), key=lambda i: (rank[srcs[i]], -times[i], -i))

    rows: list[SynthRow] = []
    truth: list[TruthRow] = []
    row_no = first_row
    for i in order:
        row = reading_rows[i]
        effective, value, kind = reading_truth[i]
        rows.append(row)
        truth.append(
            tuple.__new__(
                TruthRow,
                (
                    row.id,
                    user_id,
                    effective,
                    row.source_type,
                    true_kg[i],
                    trend[i],
                    kind,
                    EXPECTED[kind],
                    row_no,
                    value,
                ),
            )
        )
        row_no += 1
        for dup_kind in dups.get(i, ()):
            if dup_kind == "duplicate_content":
                new_id = _hex_id(rng)
                later = ingest_ms[i] + 1 + int(rand() * 50)
                row = row._replace(
                    id=new_id if ids else "",
                    timestamp=_stamp_text(clock, start_day + days[i], later),
                )
            rows.append(row)
            truth.append(
                TruthRow(
                    row.id,
                    user_id,
                    effective,
                    row.source_type,
                    true_kg[i],
                    trend[i],
                    dup_kind,
                    EXPECTED[dup_kind],
                    row_no,
                    value,
                )
            )
            row_no += 1
    return rows, truth


def _trouble(
    rng: random.Random,
    kind: str,
    source: str,
    kg: float,
    true_kg: float,
    other: float | None,
    h2: float,
    effective: str,
) -> tuple[str, float, str, str]:
    """A reading of ``kg`` with trouble ``kind``: (weight text, measured kg, unit, effective)."""
    text, value = _kg_text(source, kg)
    unit = "kg"
    if kind in ("lb", "unit_error"):
        text, value = _lb_text(source, kg)
        if kind == "lb":
            unit = "[lb_ap]" if rng.random() < 0.7 else "lb"
    elif kind == "manual_off":
        off = rng.uniform(2.0, 5.0) * (1.0 if rng.random() < 0.5 else -1.0)
        text, value = _kg_text(source, true_kg + off)
    elif kind == "outlier":
        text = _outlier_text(rng, source, kg, other)
    elif kind in ("bmi_as_kg", "bmi_unit"):
        text = repr(round(min(max(kg / h2, 20.5), 45.0), 1))
        if kind == "bmi_unit":
            unit = "kg/m2"
    elif kind == "bsa_unit":
        height_cm = 100.0 * math.sqrt(h2)
        bsa = min(max(math.sqrt(height_cm * kg / 3600.0), 1.6), 2.6)  # Mosteller
        text, unit = repr(round(bsa, 2)), "m2"
    elif kind == "null":
        text = ""
    elif kind == "bad_number":
        if rng.random() < 0.7:
            text = repr(round(kg, 1)).replace(".", ",")
        else:
            text = ("abc", "n/a", "#VALUE!")[rng.randrange(3)]
    elif kind == "future":
        effective = _with_year(effective, "2099")
    elif kind == "ancient":
        effective = _with_year(effective, "1850")
    elif kind == "bad_timestamp":
        choice = rng.randrange(5)
        if choice == 0:
            effective = effective[:8] + "32" + effective[10:]
        elif choice == 1:
            effective = effective[:11] + "25" + effective[13:]
        elif choice == 2:
            effective = "0000-00-00 00:00:00"
        elif choice == 3:
            effective = ("not a date", "N/A", "yesterday")[rng.randrange(3)]
        else:
            effective = ""
    else:  # pragma: no cover - every kind is handled above
        raise AssertionError(kind)
    return text, value, unit, effective


def _outlier_text(rng: random.Random, source: str, kg: float, other: float | None) -> str:
    """Another person's weight (bursts, devices) or a typing error (manual sources)."""
    if other is None and source in MANUAL_SOURCES:
        typed = round(kg, 1)
        whole = int(typed)
        tens, units = divmod(whole, 10)
        swapped = units * 10 + tens + (typed - whole)
        if whole < 100 and units >= 3 and abs(swapped - typed) >= 18 and rng.random() < 0.5:
            return repr(round(swapped, 1))  # 59 typed as 95
        return repr(round(typed + 100.0, 1))  # 77 typed as 177
    if other is None:
        offset = rng.uniform(15.0, 40.0)
        other = kg + offset if kg - offset < 35.0 or rng.random() < 0.5 else kg - offset
    return _kg_text(source, other)[0]


# ---------------------------------------------------------------------------------------------
# Public API


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
    return SynthData(rows, truth, ids)


def _export_header(ids: bool) -> tuple[str, ...]:
    return EXPORT_COLUMNS if ids else EXPORT_COLUMNS[1:]


def _truth_header(ids: bool) -> tuple[str, ...]:
    return TRUTH_COLUMNS if ids else (*TRUTH_COLUMNS, "row")


def _quoted(field: str) -> str:
    if "," in field or '"' in field or "\n" in field or "\r" in field:
        return '"' + field.replace('"', '""') + '"'
    return field


def _csv_lines(records: Iterable[Sequence[str]]) -> str:
    """CSV text of ``records``, quoted as ``csv.QUOTE_MINIMAL`` would, ``\n`` line ends.

    Written by hand: ``csv.writer`` costs ~7 µs a row here, a plain join a tenth of that.
    """
    lines = []
    for record in records:
        line = ",".join(record)
        if line.count(",") != len(record) - 1 or '"' in line or "\n" in line or "\r" in line:
            line = ",".join([_quoted(field) for field in record])
        lines.append(line)
    lines.append("")
    return "\n".join(lines)


def _export_text(rows: list[SynthRow], ids: bool) -> str:
    return _csv_lines(rows if ids else [row[1:] for row in rows])


def _truth_text(truth: list[TruthRow], ids: bool) -> str:
    # No field of a truth row can need quoting: hex ids, well-formed intended times, fixed
    # source and kind names, numbers.
    if ids:
        lines = [
            f"{i},{u},{e},{s},{w:.3f},{tr:.3f},{k},{x}\n" for i, u, e, s, w, tr, k, x, _, _ in truth
        ]
    else:
        lines = [
            f"{i},{u},{e},{s},{w:.3f},{tr:.3f},{k},{x},{r}\n"
            for i, u, e, s, w, tr, k, x, r, _ in truth
        ]
    return "".join(lines)


def _open(path: Path) -> IO[str]:
    return path.open("w", encoding="utf-8", newline="", buffering=1 << 20)


def write(data: SynthData, out: Path, truth: Path | None = None) -> None:
    """Write the export to ``out`` and, if given, its truth to ``truth`` (CSV, ``\\n`` ends)."""
    with _open(Path(out)) as handle:
        handle.write(_csv_lines([_export_header(data.ids)]))
        handle.write(_export_text(data.rows, data.ids))
    if truth is not None:
        with _open(Path(truth)) as handle:
            handle.write(_csv_lines([_truth_header(data.ids)]))
            handle.write(_truth_text(data.truth, data.ids))


def write_stream(
    users: int,
    per_user: int,
    seed: int,
    out: Path,
    truth: Path | None = None,
    *,
    scenario: str = "mixed",
    ids: bool = True,
    start: datetime = _DEFAULT_START,
    options: SynthOptions | None = None,
) -> int:
    """Like ``write(generate(...), out, truth)`` — the same bytes — holding one user at a time.

    Returns the number of data rows written (``users × per_user``).
    """
    users_iter = iter_users(
        users, per_user, seed, scenario=scenario, ids=ids, start=start, options=options
    )
    count = 0
    with _open(Path(out)) as out_handle:
        truth_handle = _open(Path(truth)) if truth is not None else None
        try:
            out_handle.write(_csv_lines([_export_header(ids)]))
            if truth_handle is not None:
                truth_handle.write(_csv_lines([_truth_header(ids)]))
            for rows, user_truth in users_iter:
                out_handle.write(_export_text(rows, ids))
                if truth_handle is not None:
                    truth_handle.write(_truth_text(user_truth, ids))
                count += len(rows)
        finally:
            if truth_handle is not None:
                truth_handle.close()
    return count
