"""Looking back: a fixed-interval Rauch-Tung-Striebel smoother over a user's stored history.

The live filter gives, at each reading, the best estimate *from the readings so far*. A care
team reviewing the last six months wants each day's best estimate *from all the readings*,
later ones included. The RTS smoother gives exactly that for the filter's own linear-Gaussian
model: a forward Kalman pass, then a backward pass that folds each later estimate back in::

    forward    x_k|k-1 = F_k x_k-1|k-1          P_k|k-1 = F_k P_k-1|k-1 F_k^T + Q_k
               x_k|k, P_k|k = update(x_k|k-1, P_k|k-1, z_k, R_k)
    backward   C_k     = P_k|k F_k+1^T P_k+1|k^-1
               x_k|N   = x_k|k + C_k (x_k+1|N - x_k+1|k)
               P_k|N   = P_k|k + C_k (P_k+1|N - P_k+1|k) C_k^T

F, Q, predict and update are :mod:`weightstream.kalman`'s (the same model as the filter; the
live filter's post-reset boost is a guard for the unknown, which a smoother that sees the whole
segment does not need). Its process noise is the filter's ``q_weight`` times
:data:`SMOOTH_Q_WEIGHT` and ``q_trend`` times :data:`SMOOTH_Q_TREND`: seeing the readings on
both sides of a change of pace, it can let the trend turn faster and the level wander less than
a live filter, which must also absorb what it cannot yet tell from a turn. Tuned on the tune
seeds of ``benchmarks/accuracy.py`` (3 replicates, with the band offsets below): smoothed RMSE
0.590 -> 0.576 times the oracle-fed plain filter; (1, 2), (0.75, 3), (0.25, 8) were within
0.005 of (0.5, 4); a quieter trend, (0.5, 1) or (0.25, 1), was worse than (1, 1). R is the
filter's measurement variance times the source's multiplier, and each reading is read less
its configured offset (:func:`weightstream.offsets.offset_kg`), as the filter reads it.

**Segments.** The history is smoothed reset segment by reset segment: a segment begins at each
accepted reading that carries a reset (initial, hard, soft), so a level change the live filter
reset across is never smeared across the reset. A segment starts from the prior the filter's
reset uses (the first reading, zero trend, the reset type's initial variance) and folds the
first reading in like the others.

A manual entry far from the forward prediction is weighed down as the live filter weighs it
(its variance raised beyond ``rules.manual_robust_sigma``, :func:`weightstream.step.robust_var`).

**The user's own time-of-day offsets.** An evening weighing reads heavier than a morning one
(clothes, meals, the day's water), and a configuration that ``weightstream calibrate`` did not
write knows none of it. Looking back, a user's own history shows it: the readings of each
local time-of-day band (:mod:`weightstream.offsets`' bands; the first, the morning, is the
reference) sit above or below the smoothed path by that band's offset. The smoother estimates
it from the residuals to its own smoothed path, shrunk towards 0 as if
``band_prior_readings`` readings had shown none (a few evening readings move it little),
subtracts it and smooths again, :data:`BAND_PASSES` times (backfitting the path and the
offsets). A date without a time gets none, as in :func:`weightstream.offsets.offset_kg`. The
offset used is shown in each row's ``offset_kg`` (the configured offset plus the learned one),
so nothing is hidden. Tuned on the tune seeds of ``benchmarks/accuracy.py``: smoothed RMSE
0.586 -> 0.576 times the oracle-fed plain filter overall, ``offsets`` (uncalibrated) 0.69 ->
0.55; 3 and 40 pseudo-readings gain less than 10 and 20.

Looking back also shows which rejections were wrong: a hard reset after a streak of readings
that agree with it (the filter, not they, was wrong) begins its segment with them, so the
rejected readings right before a hard reset that agree with its reading (within
``resets.soft_threshold_kg``) are smoothed with it (:func:`_vindicated`). Other rejected rows
and late rows keep their live columns and get no smoothed value; no verdict changes.
**Filtered values stay what was decided live**: the smoothed estimate is extra columns, never
a rewrite of a stored result, and nothing is written.

:func:`rts` is pure (floats in, floats out); :func:`smoothed_history` reads the store's public
``history`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from weightstream import kalman
from weightstream.clock import SECONDS_PER_DAY
from weightstream.config import Config
from weightstream.model import ResetType, Verdict, to_micros
from weightstream.offsets import Offsets, band_of, from_config, local_second_of_day, offset_kg
from weightstream.step import robust_var
from weightstream.store.base import HistoryRow, StateStore

__all__ = [
    "SmoothedReading",
    "SMOOTHED_FIELDS",
    "SMOOTH_Q_WEIGHT",
    "SMOOTH_Q_TREND",
    "BAND_PRIOR_READINGS",
    "BAND_PASSES",
    "rts",
    "band_offsets",
    "smooth_rows",
    "smoothed_history",
]

#: The smoother's process noise: the filter's q_weight and q_trend times these (module docs).
SMOOTH_Q_WEIGHT = 0.5
SMOOTH_Q_TREND = 4.0
#: How many readings' worth of "no time-of-day offset" a user's own band offset is shrunk
#: with (0: no per-user band offsets; see the module docs).
BAND_PRIOR_READINGS = 10.0
#: Smoothing passes after the first that re-estimate the user's band offsets.
BAND_PASSES = 3


@dataclass(frozen=True, slots=True)
class SmoothedReading:
    """One stored reading: what was decided live, and the smoothed estimate at its time."""

    reading_id: str
    timestamp: datetime
    source: str
    weight_kg: float
    verdict: str
    reason: str
    reset_type: str | None
    #: The offset subtracted from ``weight_kg`` for the smoother: the configured one plus the
    #: user's own time-of-day offset it learned (0 with neither).
    offset_kg: float
    #: The live filter's values as stored (None where the row was not accepted).
    filtered_weight: float | None
    filtered_std: float | None
    filtered_trend_kg_week: float | None
    #: Reset segment number (0, 1, ...) of an accepted reading; None otherwise.
    segment: int | None
    smoothed_weight: float | None
    smoothed_std: float | None
    smoothed_trend_kg_week: float | None


#: The field names of :class:`SmoothedReading`, in order (the history command's columns).
SMOOTHED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SmoothedReading))


def rts(
    times: Sequence[float],
    values: Sequence[float],
    variances: Sequence[float],
    prior: tuple[kalman.Vec, kalman.Mat],
    q_weight: float,
    q_trend: float,
    robust: Sequence[float] | None = None,
) -> list[tuple[kalman.Vec, kalman.Mat]]:
    """Smoothed (x, P) at each reading of one segment.

    ``times`` in days (non-decreasing), ``values`` in kg, ``variances`` R of each reading,
    ``prior`` the state before the first reading (at its time). ``robust``: for each reading
    the sigmas beyond which its variance is raised in the forward pass as the live filter
    raises it (:func:`weightstream.step.robust_var`; 0: not raised), so that a manual entry
    the filter weighed down is weighed down here too.

    With no process noise and a vague prior, the smoother is the least-squares line through
    the readings, at every reading (the filter alone has only the readings so far):

    >>> vague = ((80.0, 0.0), ((1e6, 0.0), (0.0, 1e6)))
    >>> out = rts([0.0, 1.0, 2.0], [80.0, 81.5, 82.0], [1.0] * 3, vague, 0.0, 0.0)
    >>> [round(x[0], 3) for x, _ in out], round(out[0][0][1], 3)
    ([80.167, 81.167, 82.167], 1.0)
    """
    n = len(times)
    if n == 0:
        return []
    priors: list[tuple[kalman.Vec, kalman.Mat]] = []
    posts: list[tuple[kalman.Vec, kalman.Mat]] = []
    x, P = prior
    for k in range(n):
        if k:
            dt = max(0.0, times[k] - times[k - 1])
            x, P = kalman.predict(x, P, dt, q_weight, q_trend)
        priors.append((x, P))
        r = variances[k]
        if robust is not None and robust[k] > 0.0:
            y, sk = values[k] - x[0], P[0][0] + r
            r = robust_var(robust[k], y, sk, P[0][0], r)
        upd = kalman.update(x, P, values[k], r)
        x, P = upd.x, upd.P
        posts.append((x, P))
    out = list(posts)
    for k in range(n - 2, -1, -1):
        xf, Pf = posts[k]
        xp, Pp = priors[k + 1]
        xs, Ps = out[k + 1]
        F = kalman.transition(max(0.0, times[k + 1] - times[k]))
        out[k] = _backward(xf, Pf, F, xp, Pp, xs, Ps)
    return out


def _backward(
    xf: kalman.Vec,
    Pf: kalman.Mat,
    F: kalman.Mat,
    xp: kalman.Vec,
    Pp: kalman.Mat,
    xs: kalman.Vec,
    Ps: kalman.Mat,
) -> tuple[kalman.Vec, kalman.Mat]:
    """One backward step of the RTS smoother (2x2, plain floats)."""
    (f00, f01), (f10, f11) = F
    (a00, a01), (a10, a11) = Pf
    (p00, p01), (p10, p11) = Pp
    det = p00 * p11 - p01 * p10
    if not det > 0.0:  # a degenerate prediction: keep the filtered estimate
        return xf, Pf
    # Pp^-1
    i00, i01, i10, i11 = p11 / det, -p01 / det, -p10 / det, p00 / det
    # B = Pf F^T
    b00 = a00 * f00 + a01 * f01
    b01 = a00 * f10 + a01 * f11
    b10 = a10 * f00 + a11 * f01
    b11 = a10 * f10 + a11 * f11
    # C = Pf F^T Pp^-1
    c00 = b00 * i00 + b01 * i10
    c01 = b00 * i01 + b01 * i11
    c10 = b10 * i00 + b11 * i10
    c11 = b10 * i01 + b11 * i11
    # x_s = x_f + C (x_s+1 - x_p+1)
    d0, d1 = xs[0] - xp[0], xs[1] - xp[1]
    x = (xf[0] + c00 * d0 + c01 * d1, xf[1] + c10 * d0 + c11 * d1)
    # P_s = P_f + C (P_s+1 - P_p+1) C^T
    e00, e01 = Ps[0][0] - p00, Ps[0][1] - p01
    e10, e11 = Ps[1][0] - p10, Ps[1][1] - p11
    g00 = c00 * e00 + c01 * e10
    g01 = c00 * e01 + c01 * e11
    g10 = c10 * e00 + c11 * e10
    g11 = c10 * e01 + c11 * e11
    s00 = a00 + g00 * c00 + g01 * c01
    s01 = a01 + g00 * c10 + g01 * c11
    s10 = a10 + g10 * c00 + g11 * c01
    s11 = a11 + g10 * c10 + g11 * c11
    off = 0.5 * (s01 + s10)
    return x, ((s00, off), (off, s11))


def _segments(
    rows: Sequence[HistoryRow], offs: Sequence[float], agree_kg: float
) -> list[tuple[ResetType, list[int]]]:
    """The reset type and row indices of each segment: the accepted rows, split where a
    reading carries a reset, each hard reset's segment beginning with the rejected readings
    right before it that agree with it (:func:`_vindicated`)."""
    segments: list[tuple[ResetType, list[int]]] = []
    for i, row in enumerate(rows):
        if row.result.verdict is not Verdict.ACCEPTED:
            continue
        reset = row.result.reset_type
        if not segments or reset is not None:
            reset = reset or ResetType.INITIAL
            start = _vindicated(rows, offs, i, agree_kg) if reset is ResetType.HARD else []
            segments.append((reset, start))
        segments[-1][1].append(i)
    return segments


def _vindicated(
    rows: Sequence[HistoryRow], offs: Sequence[float], i: int, agree_kg: float
) -> list[int]:
    """The rejected readings right before hard reset ``i`` that agree with its reading.

    A hard reset after a streak (the filter, not the readings, was wrong) or after readings at
    a new level across a gap shows, looking back, that the readings rejected just before it
    were right: within ``agree_kg`` (``resets.soft_threshold_kg``, the streak's own measure)
    of the reading that restarted the filter. They are smoothed with its segment; their
    stored verdicts stay what they were.
    """
    z = rows[i].measurement.weight_kg - offs[i]
    start = i
    while start > 0:
        prev = rows[start - 1]
        if prev.result.verdict is not Verdict.REJECTED:
            break
        if abs(prev.measurement.weight_kg - offs[start - 1] - z) > agree_kg:
            break
        start -= 1
    return list(range(start, i))


def band_offsets(
    residuals: Sequence[tuple[int, float]], bands: int, prior_readings: float
) -> list[float]:
    """Each time-of-day band's offset (kg) above the first band, from (band, residual) pairs.

    A band's offset is the mean of its residuals less the first band's, each mean shrunk
    towards 0 as if ``prior_readings`` more readings had a residual of 0.

    >>> band_offsets([(0, 0.1), (0, -0.1), (2, 1.0), (2, 1.2)], 3, 0.0)
    [0.0, 0.0, 1.1]
    >>> band_offsets([(0, 0.0), (2, 1.0), (2, 1.0)], 3, 2.0)
    [0.0, 0.0, 0.5]
    """
    sums = [0.0] * bands
    counts = [0] * bands
    for band, e in residuals:
        sums[band] += e
        counts[band] += 1
    ref = sums[0] / (counts[0] + prior_readings) if counts[0] else 0.0
    out = [0.0] * bands
    for b in range(1, bands):
        if counts[b]:
            out[b] = (sums[b] - ref * counts[b]) / (counts[b] + prior_readings)
    return out


def _bands_of(rows: Sequence[HistoryRow], offsets: Offsets) -> list[int | None]:
    """Each row's local time-of-day band (None: a date without a time)."""
    out: list[int | None] = []
    for row in rows:
        second = local_second_of_day(offsets, to_micros(row.measurement.timestamp))
        out.append(None if second is None else band_of(offsets, second))
    return out


def _smooth_segments(
    rows: Sequence[HistoryRow], offs: Sequence[float], config: Config, q: tuple[float, float]
) -> dict[int, tuple[int, kalman.Vec, kalman.Mat]]:
    """(segment, x, P) of every row a segment holds, with each row read less ``offs``."""
    f, sources, resets = config.filter, config.sources, config.resets
    smoothed: dict[int, tuple[int, kalman.Vec, kalman.Mat]] = {}
    for seg_no, (reset, seg) in enumerate(_segments(rows, offs, resets.soft_threshold_kg)):
        first = rows[seg[0]]
        mult = resets.boost(reset).initial_var_multiplier
        z0 = first.measurement.weight_kg - offs[seg[0]]
        prior = ((z0, 0.0), ((f.initial_weight_var * mult, 0.0), (0.0, f.initial_trend_var * mult)))
        t0 = first.measurement.timestamp
        times = [
            (rows[i].measurement.timestamp - t0).total_seconds() / SECONDS_PER_DAY for i in seg
        ]
        values = [rows[i].measurement.weight_kg - offs[i] for i in seg]
        variances = [
            f.measurement_var * sources.multiplier(rows[i].measurement.source) for i in seg
        ]
        c = config.rules.manual_robust_sigma
        robust = [c if sources.is_manual(rows[i].measurement.source) else 0.0 for i in seg]
        states = rts(times, values, variances, prior, q[0], q[1], robust)
        for i, (x, P) in zip(seg, states, strict=True):
            smoothed[i] = (seg_no, x, P)
    return smoothed


def smooth_rows(
    rows: Sequence[HistoryRow],
    config: Config,
    *,
    band_prior_readings: float = BAND_PRIOR_READINGS,
    q_multipliers: tuple[float, float] = (SMOOTH_Q_WEIGHT, SMOOTH_Q_TREND),
) -> list[SmoothedReading]:
    """Every row of a user's history (in the store's order) with its smoothed estimate.

    ``q_multipliers``: the smoother's process noise, times the filter's q_weight and q_trend
    ((1, 1): the live filter's own).
    ``band_prior_readings``: the shrinkage of the user's own time-of-day offsets (0: none
    learned, only the configured offsets are subtracted; see the module docs).
    """
    offsets = from_config(config.offsets)
    offs = [offset_kg(offsets, r.measurement.source, r.measurement.timestamp) for r in rows]
    q = (config.filter.q_weight * q_multipliers[0], config.filter.q_trend * q_multipliers[1])
    smoothed = _smooth_segments(rows, offs, config, q)
    if band_prior_readings > 0.0 and smoothed:
        bands = _bands_of(rows, offsets)
        configured = offs
        for _ in range(BAND_PASSES):
            # each band's readings against the path smoothed with the offsets learned so far
            residuals = [
                (b, rows[i].measurement.weight_kg - configured[i] - x[0])
                for i, (_, x, _) in smoothed.items()
                if (b := bands[i]) is not None
            ]
            learned = band_offsets(residuals, len(offsets.bands), band_prior_readings)
            if not any(learned):
                break
            offs = [
                o + (learned[b] if (b := bands[i]) is not None else 0.0)
                for i, o in enumerate(configured)
            ]
            smoothed = _smooth_segments(rows, offs, config, q)
    out: list[SmoothedReading] = []
    for i, row in enumerate(rows):
        m, r = row.measurement, row.result
        accepted = r.verdict is Verdict.ACCEPTED
        s = smoothed.get(i)
        out.append(
            SmoothedReading(
                reading_id=m.reading_id,
                timestamp=m.timestamp,
                source=m.source,
                weight_kg=m.weight_kg,
                verdict=str(r.verdict),
                reason=str(r.reason),
                reset_type=str(r.reset_type) if r.reset_type is not None else None,
                offset_kg=offs[i],
                filtered_weight=r.filtered_weight if accepted else None,
                filtered_std=r.std_kg if accepted else None,
                filtered_trend_kg_week=r.trend_kg_week if accepted else None,
                segment=s[0] if s else None,
                smoothed_weight=s[1][0] if s else None,
                smoothed_std=math.sqrt(max(s[2][0][0], 0.0)) if s else None,
                smoothed_trend_kg_week=s[1][1] * 7.0 if s else None,
            )
        )
    return out


def smoothed_history(store: StateStore, user_id: str, config: Config) -> list[SmoothedReading]:
    """The user's stored history, each accepted reading with its smoothed estimate.

    Reads ``store.history`` only; writes nothing. An unknown user has an empty history.
    """
    return smooth_rows(store.history(user_id), config)
