"""One weighing exported twice: the same reading in another unit, or with its clock shifted.

Real exports carry one weighing as two rows. Counted twice, it gets double weight in the
filter. Two rules find the second row; it becomes a ``duplicate`` with a reason and a message
naming the reading it repeats. Both are judged against the readings the user's state
remembers (the bounded buffer of accepted readings and the rejected ones since), so a step
stays a pure function of (state, reading), and the later of the two rows in processing order
(time, then content: :func:`weightstream.model.order_key`) is always the one called the copy,
whatever the order of the rows in the file.

**same_reading_other_unit** -- at the same instant, in another unit or from another source,
with the same weight within the two values' rounding. A value's rounding is half a unit of its
last written digit (``303.2`` lb: 0.05 lb; ``137.44`` kg: 0.005 kg; a float keeps no
trailing zero, so ``303.0`` is read as ``303``: 0.5 lb), converted to kg; the two weights may
differ by the sum of both. So a 137.44 kg row and a 303.0 ``[lb_ap]`` row
(137.4382 kg) are one reading.

*Near-equal values at the same instant, in the same unit and from the same source, are two
weighings* and both count: many rows carry a date without a time (``T00:00:00``), so one day's
readings share an instant, and 80.10 kg then 80.12 kg on one day are two real readings. (An
exactly equal row is already a ``duplicate_content``.)

**clock_shifted_copy** -- the same source and the same value to its last digit (the same
float), times a whole number of hours apart, from 1 to :data:`MAX_SHIFT_HOURS`: one reading
exported once in local time and once in UTC. A genuine repeat weighing must not be caught, so
one of two things must make a coincidence implausible:

- the value has at least :data:`MIN_SIGNIFICANT_DIGITS` significant digits. A scale shows
  0.1 kg or 0.1 lb (four significant digits at most for an adult) and a person typing a
  weight writes three or four; only a converted value (``137.43815035``) carries seven or
  more, so two independent weighings cannot agree to that;
- or the time is not on a whole minute (it has seconds): two independent weighings of the
  same value would then have to fall on the same second of the same minute, whole hours
  apart: about one chance in 3,600, times the chance of the same value (1 in 10 or less at
  0.1 kg steps), for each pair of readings of one source less than 14 hours apart.

- or one of the two is a date without a time (``00:00:00``) and the other the same value at a
  whole hour of a time nearby, with at least :data:`MIN_DATE_ONLY_DIGITS` significant digits
  (``101.05``): a source that writes dates only cannot have weighed at ``05:00:00``, so that row
  is the date-only one exported again with a time zone's hours.

A short value on a whole minute (``80.1`` at ``08:00`` and at ``16:00``) is never called a
copy: two real weighings look exactly like that.

**Offsets.** Both rules compare readings *as given*, never less their offsets (two rows of
one weighing carry different offsets when their sources differ, or their clocks do): a
remembered reading's weight as given is :func:`given_kg`, ``weight_kg + offset_kg``, which is
its stored weight exactly when its offset is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from weightstream.frozen import fast_init
from weightstream.model import BufferedReading, Measurement, Reason, to_micros

__all__ = [
    "Copy",
    "copy_of",
    "may_be_copy",
    "significant_digits",
    "given_kg",
    "rounding_kg",
    "MAX_SHIFT_HOURS",
    "MIN_SIGNIFICANT_DIGITS",
    "MIN_DATE_ONLY_DIGITS",
]

MAX_SHIFT_HOURS: Final = 14
MIN_SIGNIFICANT_DIGITS: Final = 7
MIN_DATE_ONLY_DIGITS: Final = 4
_HOUR_US: Final = 3_600_000_000
_MINUTE_US: Final = 60_000_000
_DAY_US: Final = 86_400_000_000
#: The rounding assumed for a remembered reading whose value was not kept: wider than any real
#: one, so the engine's pre-test still flags every possible copy.
_LEGACY_ROUNDING: Final = 10.0


@fast_init
@dataclass(frozen=True, slots=True)
class Copy:
    """Why a reading is a copy of ``original`` (a reading the state remembers)."""

    reason: Reason
    original: BufferedReading

    @property
    def message(self) -> str:
        ref = self.original.reading_id or "an earlier reading"
        if self.reason is Reason.SAME_READING_OTHER_UNIT:
            return f"the same weighing as {ref}, in another unit or from another source"
        return f"the same reading as {ref}, its clock shifted by whole hours"


def significant_digits(value: float) -> int:
    """Significant digits of ``value`` as Python writes it (``303.0``: 3; ``0.0451``: 3)."""
    text = repr(abs(value))
    if "e" in text or "n" in text:  # exponent form, inf, nan: treat as fully precise
        return 17
    digits = text.replace(".", "").lstrip("0")
    if text.endswith(".0"):
        digits = digits[:-1]
    return len(digits.rstrip("0")) or 1


def rounding_kg(value: float, weight_kg: float) -> float:
    """Half a unit of ``value``'s last written digit, in kg (``weight_kg`` is ``value`` in kg)."""
    text = repr(abs(value))
    if "e" in text or "n" in text or value == 0.0:
        return 0.0
    whole, _, fraction = text.partition(".")
    decimals = 0 if fraction == "0" else len(fraction)
    return 0.5 * 10.0**-decimals * abs(weight_kg / value)


def given_kg(original: BufferedReading) -> float:
    """The weight of a remembered reading as given (the buffer keeps it less its offset)."""
    return original.weight_kg + original.offset_kg


def _same_instant(original: BufferedReading, m: Measurement) -> bool:
    # A reading remembered before units were kept: its unit is unknown, so only its source
    # can tell it apart.
    other_unit = original.value is not None and original.unit != m.unit.strip().lower()
    if not (other_unit or original.source != m.source):
        return False
    kg = given_kg(original)
    mine = rounding_kg(m.value, m.weight_kg)
    theirs = mine if original.value is None else rounding_kg(original.value, kg)
    return abs(kg - m.weight_kg) <= mine + theirs + 1e-9


def _clock_shifted(original: BufferedReading, m: Measurement, micros: int) -> bool:
    """Whether ``m`` (at ``micros``) is ``original`` exported with its clock shifted; the two
    are known to share their source and their weight as given (:func:`copy_of`)."""
    if original.value is not None and original.value != m.value:
        return False
    shift = micros - to_micros(original.timestamp)
    hours, rest = divmod(abs(shift), _HOUR_US)
    if rest or not 1 <= hours <= MAX_SHIFT_HOURS:
        return False
    digits = significant_digits(m.value)
    if micros % _MINUTE_US != 0 or digits >= MIN_SIGNIFICANT_DIGITS:
        return True
    # A date without a time (00:00:00) and the same value at a whole hour of that date: a
    # date-only row and its copy exported with the hours of a time zone.
    date_only = (micros % _DAY_US == 0) != (to_micros(original.timestamp) % _DAY_US == 0)
    return date_only and digits >= MIN_DATE_ONLY_DIGITS


def copy_of(
    buffer: tuple[BufferedReading, ...], rejected: tuple[BufferedReading, ...], m: Measurement
) -> Copy | None:
    """The reading ``m`` repeats, among those a state remembers; None if it is a new one."""
    when, source, kg = m.timestamp, m.source, m.weight_kg
    micros: int | None = None
    for original in (*buffer, *rejected):
        if original.timestamp == when:
            if _same_instant(original, m):
                return Copy(Reason.SAME_READING_OTHER_UNIT, original)
        # The clock-shift rule's first test, here: it fails for nearly every remembered
        # reading, and this runs for every reading decided one by one.
        elif original.source == source and given_kg(original) == kg:
            if micros is None:
                micros = to_micros(when)
            if _clock_shifted(original, m, micros):
                return Copy(Reason.CLOCK_SHIFTED_COPY, original)
    return None


def may_be_copy(
    instants: dict[int, list[tuple[float, float | None]]],
    values: dict[tuple[str, float], list[int]],
    micros: int,
    weight_kg: float,
    value: float,
    source: str,
) -> bool:
    """A cheap superset of :func:`copy_of` over earlier readings indexed by time and by value.

    ``instants`` maps a time to the (kg, value as given) of the readings at it (value None:
    not known, for a reading remembered before values were kept), ``values`` a (source, kg)
    to the times of the readings with it. The file engine asks before each stretch of its
    compiled loop; a reading flagged here goes through the step, which applies the rules
    exactly. No copy is missed as long as every reading the state could remember is in the
    indexes (units and digits are not compared here, so more is flagged than caught).
    """
    at_instant = instants.get(micros)
    if at_instant:
        mine = rounding_kg(value, weight_kg)
        for kg, theirs in at_instant:
            bound = _LEGACY_ROUNDING if theirs is None else rounding_kg(theirs, kg)
            if abs(kg - weight_kg) <= mine + bound + 1e-9:
                return True
    for at in values.get((source, weight_kg), ()):
        shift = abs(micros - at)
        if shift % _HOUR_US == 0 and 0 < shift <= MAX_SHIFT_HOURS * _HOUR_US:
            return True
    return False
