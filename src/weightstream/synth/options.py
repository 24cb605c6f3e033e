"""What the generator can be asked for, and what it gives back.

The row kinds and what an ideal processor should say about each (:data:`EXPECTED`), the
scenarios (:data:`SCENARIOS`, what the CLI's ``--scenario`` takes) and the kinds each can
produce, the rates and noise of :class:`SynthOptions`, the rows it returns (:class:`SynthRow`,
:class:`TruthRow`, :class:`SynthData`), and each scenario's plan: which source profiles,
which cadence, which path shape and which trouble.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

from weightstream.synth.sources import (
    CARE_TEAM,
    CONNECTIVE,
    DEVICE,
    IGLUCOSE,
    INITIAL_Q,
    INTERNAL_Q,
    PATIENT_UPLOAD,
)

__all__ = [
    "EXPORT_COLUMNS",
    "TRUTH_COLUMNS",
    "TRUTH_EXTRA_COLUMNS",
    "EXPECTED",
    "KINDS",
    "SCENARIOS",
    "SCENARIO_KINDS",
    "DEFAULT_SOURCE_OFFSETS",
    "TIME_OF_DAY_BANDS",
    "SynthOptions",
    "SynthRow",
    "TruthRow",
    "SynthData",
]

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
#: Columns the truth file adds for the scenarios with offsets or exported-twice readings
#: (``offsets``, ``duplicates``; the other scenarios' files are unchanged): the reading's true
#: offset in kg (source plus time of day: what the scale read above the true weight, before
#: noise) and the file line of the row this one repeats (0: none).
TRUTH_EXTRA_COLUMNS: tuple[str, ...] = ("true_offset_kg", "duplicate_of")

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
    # The same weighing exported twice (``duplicates``): a ``[lb_ap]`` row at the same instant,
    # and a copy with the clock shifted by whole hours (local time and UTC).
    "duplicate_unit": "duplicate",
    "clock_shift": "duplicate",
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
    "offsets",
    "duplicates",
)
_NEW_DUPLICATES = frozenset({"duplicate_unit", "clock_shift"})
#: The kinds each scenario can produce (``mixed``: all but the exported-twice ones).
SCENARIO_KINDS: dict[str, frozenset[str]] = {
    "mixed": frozenset(KINDS) - _NEW_DUPLICATES,
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
    "offsets": frozenset({"clean"}),
    "duplicates": frozenset({"clean", "duplicate_unit", "clock_shift"}),
}

#: True source offsets (kg a source reads above the true weight) of the ``offsets`` scenario:
#: integrations weigh people clothed (+0.5..+1.5 kg), questionnaires are under-reported by
#: 1-2 kg; home scales, uploads (a photo of the scale) and the clinic's scale read true.
DEFAULT_SOURCE_OFFSETS: tuple[tuple[str, float], ...] = (
    (IGLUCOSE, 1.0),
    (CONNECTIVE, 0.7),
    (INTERNAL_Q, -1.5),
    (INITIAL_Q, -1.5),
)
#: Local hour bands of the time-of-day offset, (name, first hour, end hour): the same default
#: bands as :data:`weightstream.offsets.DEFAULT_BANDS`, so a calibration's estimates compare
#: with the truth band for band. Morning is the reference (0 kg).
TIME_OF_DAY_BANDS: tuple[tuple[str, int, int], ...] = (
    ("morning", 4, 11),
    ("day", 11, 17),
    ("evening", 17, 4),
)
_OFFSET_FIELDS = frozenset({"source_offsets", "day_offset_kg", "evening_offset_kg"})

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
    #: Per reading (``duplicates``): the same weighing also exported in pounds (``[lb_ap]``) at
    #: the same instant, and a copy with its clock shifted by a whole number of hours (1-14,
    #: one shift per user: local time against UTC).
    duplicate_unit: float = 0.06
    clock_shift: float = 0.06
    #: The ``offsets`` scenario: each source's offset in kg (sources not listed: 0) and the
    #: time-of-day offset of the ``day`` and ``evening`` bands (:data:`TIME_OF_DAY_BANDS`)
    #: above the morning, within -5..5 kg. A reading with a date and no time has none.
    source_offsets: tuple[tuple[str, float], ...] = DEFAULT_SOURCE_OFFSETS
    day_offset_kg: float = 0.4
    evening_offset_kg: float = 0.8

    def __post_init__(self) -> None:
        for name, kg in (
            *self.source_offsets,
            ("day_offset_kg", self.day_offset_kg),
            ("evening_offset_kg", self.evening_offset_kg),
        ):
            if not isinstance(kg, int | float) or not -5.0 <= kg <= 5.0:
                raise ValueError(f"SynthOptions offset of {name} must be within [-5, 5] kg")
        for f in fields(self):
            if f.name in _OFFSET_FIELDS:
                continue
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
        if self.duplicate_unit + self.clock_shift > 0.5:
            raise ValueError("SynthOptions: the exported-twice rates add up to more than 0.5")

    def source_offset(self, source: str) -> float:
        """The true offset of ``source`` in the ``offsets`` scenario (kg)."""
        return dict(self.source_offsets).get(source, 0.0)

    def time_of_day_offset(self, second_of_day: int) -> float:
        """The true time-of-day offset (kg) of a reading at ``second_of_day`` (local clock);
        0 at exactly midnight, a date without a time."""
        if second_of_day == 0:
            return 0.0
        hour = second_of_day // 3600
        if 4 <= hour < 11:
            return 0.0
        return self.day_offset_kg if 11 <= hour < 17 else self.evening_offset_kg


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
    #: The reading's true offset (source and time of day, kg; ``offsets`` only, else 0).
    offset_kg: float = 0.0
    #: The file line of the row this row repeats (exported-twice kinds; 0: none).
    duplicate_of: int = 0


@dataclass(frozen=True, slots=True)
class SynthData:
    """A generated export (:attr:`rows`, in file order) and its truth, row for row."""

    rows: list[SynthRow]
    truth: list[TruthRow]
    ids: bool = True
    #: The truth file has :data:`TRUTH_EXTRA_COLUMNS` (the ``offsets`` and ``duplicates``
    #: scenarios).
    extra_truth: bool = False


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
_OFFSET_PROFILE = (
    (DEVICE, IGLUCOSE, CONNECTIVE, INTERNAL_Q, PATIENT_UPLOAD, CARE_TEAM),
    (0.55, 0.10, 0.10, 0.09, 0.08, 0.08),
)

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
    dup_unit: float = 0.0  # per reading: a [lb_ap] copy at the same instant
    dup_shift: float = 0.0  # per reading: a copy with the clock shifted by whole hours
    offsets: bool = False  # source and time-of-day offsets in what is measured

    @property
    def extra_truth(self) -> bool:
        """The truth file has the extra columns (offsets or exported-twice readings)."""
        return self.offsets or bool(self.dup_unit or self.dup_shift)


def _plan(scenario: str, o: SynthOptions) -> _Plan:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    profiles: tuple[_Profile, ...] = (_DEVICE_PROFILE,)
    profile_weights: tuple[float, ...] = (1.0,)
    cadence, path = "daily", "random"
    gap_rate = burst_rate = manual_off = dup_id = dup_content = initial_q = 0.0
    dup_unit = dup_shift = 0.0
    offsets = False
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
    elif scenario == "offsets":
        # Every source in use, mornings and evenings (the dense cadence), so that a
        # calibration can tell the offsets apart; half the users begin with a questionnaire.
        # No connectivehealth.io main source: its readings carry a date only, so its evening
        # readings would share the morning's instant.
        profiles = (_OFFSET_PROFILE, _DEVICE_PROFILE, _IGLUCOSE_PROFILE)
        profile_weights = (0.5, 0.3, 0.2)
        cadence, offsets, initial_q = "dense", True, 0.5
    elif scenario == "duplicates":
        profiles = (_DEVICE_PROFILE, _IGLUCOSE_PROFILE, _CONNECTIVE_PROFILE)
        profile_weights = (0.70, 0.15, 0.15)
        dup_unit, dup_shift = o.duplicate_unit, o.clock_shift
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
        dup_unit=dup_unit,
        dup_shift=dup_shift,
        offsets=offsets,
    )
