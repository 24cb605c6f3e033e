"""Where a synthetic reading comes from, and the text each source writes.

Every source records a weight in its own steps (``patient-device`` 0.2 lb, iglucose 0.1 kg,
connectivehealth 0.01 kg, manual sources whole pounds converted with a truncated factor),
and delivers it after its own delay; this module turns numbers into exactly that text.
Formatting is the generator's hot path, so the texts are memoised or built from tables.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from datetime import date, timedelta

from weightstream.clock import SECONDS_PER_DAY

__all__ = [
    "LB_KG",
    "DEVICE",
    "IGLUCOSE",
    "CONNECTIVE",
    "PATIENT_UPLOAD",
    "CARE_TEAM",
    "INTERNAL_Q",
    "INITIAL_Q",
    "SOURCE_MULTIPLIERS",
    "SOURCES",
    "MANUAL_SOURCES",
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


# ---------------------------------------------------------------------------------------------
# Text of times and ids

_EPOCH_DATE = date(1970, 1, 1)
_DAY_MS = SECONDS_PER_DAY * 1000
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


def _with_year(effective: str, year: str) -> str:
    text = year + effective[4:]
    return text.replace("-02-29", "-02-28", 1) if text[4:10] == "-02-29" else text


def _hex_id(rng: random.Random) -> str:
    """32 uppercase hex digits (the same text as ``f"{bits:032X}"``, twice as fast)."""
    return rng.getrandbits(128).to_bytes(16, "big").hex().upper()


# ---------------------------------------------------------------------------------------------
# Text of weights


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


def _ingest_lag_ms(rand: Callable[[], float], source: str) -> int:
    """How long after the event ``source`` delivers the reading, in milliseconds."""
    if source == DEVICE:
        if rand() < 0.85:  # minutes: exponential, mean 20 min, at least 5 s
            return 5000 + int(-math.log(1.0 - rand()) * 1_200_000)
        return 3_600_000 + int(rand() * 71 * 3_600_000)  # the scale synced late
    if source == IGLUCOSE:
        return 2_000 + int(rand() * 58_000)
    if source == CONNECTIVE:
        return _DAY_MS + int(rand() * 44 * _DAY_MS)
    if source in _DATE_ONLY:
        return 8 * 3_600_000 + int(rand() * 16 * 3_600_000)
    return 60_000 + int(rand() * 48 * 3_600_000)
