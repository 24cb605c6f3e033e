"""Systematic offsets of a reading: by its source and by its local time of day (issue 13).

Readings differ between sources in a consistent way, not only in noise: integrations that weigh
people clothed read heavy, self-reported questionnaire weights read light, and an evening
weighing reads heavier than a morning one. :class:`Offsets` holds what is known of this (from
``weightstream calibrate``, :mod:`weightstream.calibrate`), and :func:`offset_kg` says how much
of a reading is offset: the filter subtracts it before it updates, so every source is read on
the reference source's morning scale.

Model::

    offset(source, t) = source_kg[source] + band_kg[band(local clock of t)]

* ``source_kg``: kg a source reads above the *reference* source (whose offset is 0; a source
  without an estimate reads as the reference does, 0).
* ``band_kg``: kg a local time-of-day band reads above the first band (the morning). The bands
  are hours of the local clock: ``band_starts`` (default 04, 11, 17: morning 04-11, day 11-17,
  evening 17-04; the last band runs round midnight to the first).

**How the local time of day is known.** A stored reading's time is UTC. The exports give
zone-less times (``2025-01-22 13:03:37``), which ingest reads as UTC exactly as written
(:mod:`weightstream.ingest.timestamps`, "naive = UTC"), so the stored clock *is* the clock the
export shows, which for the exports we know is the local clock of the weighing. The local clock
is therefore the stored UTC time plus ``local_utc_offset_hours`` (default 0: as written; set
it for an export written in UTC with a known zone). A time with an explicit offset in the
export is converted to UTC at ingest and its zone is not kept, so such a reading is read with
the same setting. **A reading at exactly 00:00:00.000000** (stored clock, before the local
shift) is taken for a date without a time (questionnaires, connectivehealth.io): its time of
day is unknown and it gets **no** time-of-day offset; its source offset still applies. (A real
weighing at exactly midnight to the microsecond loses a band offset of under 1 kg: harmless.)

Pure values and functions: no I/O, no clock. :func:`offset_kg` costs one dict lookup and a
little arithmetic; :func:`offset_kg_at` takes UTC microseconds (the file engine's form).

>>> o = Offsets(reference="care-team-upload", sources=(("https://api.iglucose.com",
...     OffsetEstimate(1.0, 0.8, 1.2, 300)),), time_of_day=(("evening",
...     OffsetEstimate(0.8, 0.6, 1.0, 900)),))
>>> from datetime import datetime, UTC
>>> offset_kg(o, "https://api.iglucose.com", datetime(2025, 1, 22, 19, 30, tzinfo=UTC))
1.8
>>> offset_kg(o, "https://api.iglucose.com", datetime(2025, 1, 22, tzinfo=UTC))  # date only
1.0
>>> offset_kg(o, "patient-device", datetime(2025, 1, 22, 7, 0, tzinfo=UTC))
0.0
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from weightstream.config import OffsetConfig
from weightstream.model import to_micros

__all__ = [
    "OffsetEstimate",
    "Offsets",
    "NO_OFFSETS",
    "DEFAULT_BANDS",
    "offset_kg",
    "offset_kg_at",
    "offset_kg_array",
    "source_offset_kg",
    "time_of_day_offset_kg",
    "band_of",
    "local_second_of_day",
    "from_config",
    "to_config",
]

_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_DEFAULT = OffsetConfig()
#: The default bands, (name, first local hour): morning 04-11, day 11-17, evening 17-04.
DEFAULT_BANDS: tuple[tuple[str, int], ...] = tuple(
    zip(_DEFAULT.band_names, _DEFAULT.band_starts, strict=True)
)


@dataclass(frozen=True, slots=True)
class OffsetEstimate:
    """One offset (kg) with its 95% interval and the readings it rests on."""

    kg: float
    low: float
    high: float
    count: int


@dataclass(frozen=True, slots=True)
class Offsets:
    """Per-source and time-of-day offsets, relative to ``reference`` and the first band.

    ``sources`` and ``time_of_day`` are (name, estimate) pairs, sorted by name; a name not
    listed has no offset. ``bands`` are (name, first local hour) in increasing hours.
    """

    reference: str = ""
    sources: tuple[tuple[str, OffsetEstimate], ...] = ()
    time_of_day: tuple[tuple[str, OffsetEstimate], ...] = ()
    bands: tuple[tuple[str, int], ...] = DEFAULT_BANDS
    local_utc_offset_hours: float = 0.0
    # Lookup tables built once from the fields above (not part of the value's identity).
    _source_kg: Mapping[str, float] = field(init=False, repr=False, compare=False, hash=False)
    _band_kg: tuple[float, ...] = field(init=False, repr=False, compare=False, hash=False)
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False, hash=False)
    _shift_us: int = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.bands:
            raise ValueError("Offsets need at least one band")
        starts = tuple(h for _, h in self.bands)
        if list(starts) != sorted(set(starts)) or not all(0 <= h <= 23 for h in starts):
            raise ValueError("band hours must be increasing within 0-23")
        names = [n for n, _ in self.bands]
        tod = dict(self.time_of_day)
        unknown = set(tod) - set(names)
        if unknown:
            raise ValueError(f"time_of_day names unknown bands: {', '.join(sorted(unknown))}")
        object.__setattr__(
            self, "_source_kg", MappingProxyType({s: e.kg for s, e in self.sources if e.kg})
        )
        object.__setattr__(self, "_band_kg", tuple(tod[n].kg if n in tod else 0.0 for n in names))
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_shift_us", round(self.local_utc_offset_hours * _HOUR_US))

    @property
    def empty(self) -> bool:
        """True when no reading has any offset (the default: results as without offsets)."""
        return not self._source_kg and not any(self._band_kg)

    def source(self, name: str) -> OffsetEstimate | None:
        """The estimate of source ``name``, or None."""
        return dict(self.sources).get(name)

    def band(self, name: str) -> OffsetEstimate | None:
        """The estimate of band ``name``, or None."""
        return dict(self.time_of_day).get(name)


#: No offsets at all.
NO_OFFSETS = Offsets()


def source_offset_kg(offsets: Offsets, source: str) -> float:
    """kg ``source`` reads above the reference (0 for the reference and unknown sources)."""
    return offsets._source_kg.get(source, 0.0)


def local_second_of_day(offsets: Offsets, micros: int) -> int | None:
    """The local clock's second of the day of UTC ``micros``; None for a date without a time
    (a stored time of exactly 00:00:00.000000)."""
    if micros % _DAY_US == 0:
        return None
    return ((micros + offsets._shift_us) % _DAY_US) // 1_000_000


def band_of(offsets: Offsets, second_of_day: int) -> int:
    """Index in ``offsets.bands`` of the band holding local ``second_of_day``.

    >>> band_of(NO_OFFSETS, 7 * 3600), band_of(NO_OFFSETS, 12 * 3600), band_of(NO_OFFSETS, 3600)
    (0, 1, 2)
    """
    i = bisect_right(offsets._starts, second_of_day // 3600) - 1
    return i if i >= 0 else len(offsets._starts) - 1  # before the first start: the last band


def time_of_day_offset_kg(offsets: Offsets, micros: int) -> float:
    """kg a reading at UTC ``micros`` reads above the first band (0 for a date only)."""
    second = local_second_of_day(offsets, micros)
    if second is None:
        return 0.0
    return offsets._band_kg[band_of(offsets, second)]


def offset_kg_at(offsets: Offsets, source: str, micros: int) -> float:
    """:func:`offset_kg` with the time as UTC microseconds (the file engine's form)."""
    return offsets._source_kg.get(source, 0.0) + time_of_day_offset_kg(offsets, micros)


def offset_kg_array(
    offsets: Offsets, sources: Sequence[str], micros: NDArray[np.int64]
) -> NDArray[np.float64]:
    """:func:`offset_kg_at` of many readings at once (the file engine's columns): ``sources``
    and ``micros`` aligned. Equal, reading for reading, to the scalar function.
    """
    n = len(sources)
    out = np.zeros(n, dtype=np.float64)
    if offsets.empty or n == 0:
        return out
    table = offsets._source_kg
    if table:
        out += np.fromiter((table.get(s, 0.0) for s in sources), dtype=np.float64, count=n)
    if any(offsets._band_kg):
        t = np.asarray(micros, dtype=np.int64)
        local = np.mod(t + offsets._shift_us, _DAY_US) // _HOUR_US
        # The band of each local hour: the last start at or before it, else the last band.
        hour_band = np.array(
            [offsets._band_kg[band_of(offsets, h * 3600)] for h in range(24)], dtype=np.float64
        )
        band = hour_band[local]
        band[np.mod(t, _DAY_US) == 0] = 0.0  # a date without a time
        out += band
    return out


def offset_kg(offsets: Offsets, source: str, when: datetime) -> float:
    """The offset (kg) of a reading from ``source`` at ``when`` (aware UTC, as stored).

    The filter updates with ``weight_kg - offset_kg(...)``.
    """
    return offset_kg_at(offsets, source, to_micros(when))


def from_config(config: OffsetConfig) -> Offsets:
    """The offsets a configuration's ``[offsets]`` section holds."""
    intervals = config.intervals

    def estimate(key: str, kg: float) -> OffsetEstimate:
        low, high, count = intervals.get(key, (kg, kg, 0))
        return OffsetEstimate(kg, low, high, count)

    return Offsets(
        reference=config.reference,
        sources=tuple(sorted((s, estimate(s, kg)) for s, kg in config.sources.items())),
        time_of_day=tuple(
            sorted((b, estimate(f"time_of_day.{b}", kg)) for b, kg in config.time_of_day.items())
        ),
        bands=tuple(zip(config.band_names, config.band_starts, strict=True)),
        local_utc_offset_hours=config.local_utc_offset_hours,
    )


def to_config(offsets: Offsets) -> OffsetConfig:
    """The ``[offsets]`` section that :func:`from_config` reads back to equal offsets.

    >>> from_config(to_config(NO_OFFSETS)) == NO_OFFSETS
    True
    """
    intervals: dict[str, tuple[float, float, int]] = {}
    for name, e in offsets.sources:
        intervals[name] = (e.low, e.high, e.count)
    for name, e in offsets.time_of_day:
        intervals[f"time_of_day.{name}"] = (e.low, e.high, e.count)
    return OffsetConfig(
        reference=offsets.reference,
        sources={name: e.kg for name, e in offsets.sources},
        band_starts=tuple(h for _, h in offsets.bands),
        band_names=tuple(n for n, _ in offsets.bands),
        time_of_day={name: e.kg for name, e in offsets.time_of_day},
        local_utc_offset_hours=offsets.local_utc_offset_hours,
        intervals=intervals,
    )
