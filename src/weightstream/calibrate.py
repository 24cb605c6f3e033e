"""Calibration: each source's offset and the time-of-day offset, learned from stored history.

``weightstream calibrate`` reads every user's accepted readings through the store's public
reading API (``users()``, ``history(user_id)``) and estimates, across users, how many kg each
source reads above a *reference* source and each local time-of-day band above the first
(morning), with 95% intervals and the readings each rests on. The result is an
:class:`~weightstream.offsets.Offsets`, printed and optionally written into a configuration
file's ``[offsets]`` section, from which the filter subtracts it.

Model and method
----------------
Each accepted reading ``z`` of user ``u`` at time ``t`` (days) from source ``s`` in local band
``b`` is::

    z = level_w + slope_w * (t - t_w) + source_kg[s] + band_kg[b] + e,   var(e) = R_s

where ``w`` is the reading's *window*: a user's readings are cut into consecutive windows of at
most :data:`WINDOW_DAYS` (14) days, and each window has its own straight line for the body's
weight. The offsets are the only parameters shared across windows and users; ``source_kg`` of
the reference and ``band_kg`` of the first band are 0 (what the offsets are relative to); a
reading with a date and no time has no band term (:mod:`weightstream.offsets`). ``R_s`` is the
filter's measurement variance times the source's multiplier (weights ``1 / multiplier``).

This is weighted least squares with fixed effects, solved by projection (Frisch-Waugh-Lovell):
within each window the readings and the offset columns are projected off the window's
``[1, t]`` (weighted), and a small least-squares problem (one column per source and band)
remains. Exactly the estimate of the full problem with every window's intercept and slope as
parameters, at the cost of a few numpy operations per window.

Why this method and not the others considered:

* *Residuals against a per-user smooth level* (e.g. the filter's own estimate) are biased:
  the level is computed from the same offset readings, so a heavy source pulls the level up
  and its residual under-states its offset (by its share of the readings), and the filter's
  lag on a loss adds a bias that depends on when each source is used.
* *A mixed model with random user effects* needs an iterative fit for its variance components
  and buys nothing here: the windows' fixed effects already absorb every difference between
  users and over time, and with thousands of readings per source the offsets are estimated
  from within-window contrasts alone.
* The windowed straight line follows a diet's phases (2-8 weeks) closely enough that the
  leftover curvature is noise, not bias (sources and times of day fall anywhere in a window),
  while a 14-day window of daily readings holds enough readings of several sources and hours
  to compare them. A window with fewer than three readings says nothing about offsets once its
  line is fitted, and is left out (so are most clinic-visit histories: one visit a month).

Robustness: accepted readings may still hold an undetected outlier; after a first fit, readings
whose weighted residual is beyond :data:`OUTLIER_SIGMAS` (4) robust sds (1.4826 x the median
absolute residual) are dropped, and the fit is done once more.

Intervals: 95%, ``estimate +- 1.96 se``. The se is the larger of the classical WLS se (residual
variance over the degrees of freedom left by the windows' lines and the offsets) and a
cluster-robust (by user, sandwich with the ``G/(G-1)`` correction) se: readings of one user
share their errors of the straight line, and a source used by a few users only must not look
more certain than those few users make it.

**Too little data, no offset.** A source (or band) is estimated only when at least
:data:`MIN_READINGS` (30) of its readings, from at least :data:`MIN_USERS` (3) users, sit in
windows where they can be compared (a window of three or more readings holding another source
or band). Below that it gets no offset, is listed as skipped with its count, and its readings
are left out of the fit (kept in, they would be taken to have no offset and bias the others).

Reference: ``--reference`` if given, else the configuration's ``offsets.reference``, else
``care-team-upload`` (the clinic's scale) when it has enough readings, else the source with the
most accepted readings.

Pure apart from :func:`calibrate` (which reads the store) and :func:`write_offsets`.
"""

from __future__ import annotations

import math
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from weightstream.config import Config, to_toml
from weightstream.errors import ConfigError
from weightstream.model import Verdict, to_micros
from weightstream.offsets import (
    OffsetEstimate,
    Offsets,
    band_of,
    local_second_of_day,
    to_config,
)
from weightstream.store.base import StateStore

__all__ = [
    "Observation",
    "Calibration",
    "CLINIC_SOURCE",
    "MIN_READINGS",
    "MIN_USERS",
    "WINDOW_DAYS",
    "OUTLIER_SIGMAS",
    "observations",
    "estimate",
    "calibrate",
    "write_offsets",
]

#: The default reference: the clinic's scale.
CLINIC_SOURCE = "care-team-upload"
#: Comparable readings (and users) a source or band needs for an offset.
MIN_READINGS = 30
MIN_USERS = 3
#: The longest window a straight line is fitted to (days).
WINDOW_DAYS = 14.0
#: Readings whose weighted residual is beyond this many robust sds are dropped (second fit).
OUTLIER_SIGMAS = 4.0
_Z95 = 1.959963984540054
_DAY_US = 86_400_000_000

_Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Observation:
    """One accepted reading as the calibration sees it."""

    user_id: str
    micros: int  # UTC microseconds, as stored
    source: str
    weight_kg: float  # as read (no offset subtracted)


@dataclass(frozen=True, slots=True)
class Calibration:
    """What :func:`estimate` found."""

    offsets: Offsets
    #: Sources and bands with too few comparable readings: (name, comparable readings, users);
    #: bands as ``time_of_day.<band>``.
    skipped: tuple[tuple[str, int, int], ...]
    readings: int  # accepted readings read
    used: int  # readings in the final fit
    users: int
    windows: int
    residual_sd: float  # kg, weighted residual sd of the final fit
    min_readings: int
    min_users: int
    #: Users behind each estimate: (source or ``time_of_day.<band>``, users).
    estimate_users: tuple[tuple[str, int], ...] = ()


def observations(store: StateStore) -> list[Observation]:
    """Every accepted reading in ``store``, user by user (public reading API only)."""
    out: list[Observation] = []
    for user_id in store.users():
        for row in store.history(user_id):
            if row.result.verdict is Verdict.ACCEPTED:
                m = row.measurement
                out.append(Observation(user_id, to_micros(m.timestamp), m.source, m.weight_kg))
    return out


def calibrate(
    store: StateStore,
    config: Config,
    *,
    reference: str | None = None,
    min_readings: int = MIN_READINGS,
    min_users: int = MIN_USERS,
    window_days: float = WINDOW_DAYS,
) -> Calibration:
    """Estimate the offsets from every user's stored accepted readings (see the module)."""
    return estimate(
        observations(store),
        config,
        reference=reference,
        min_readings=min_readings,
        min_users=min_users,
        window_days=window_days,
    )


# ---------------------------------------------------------------------------------------------
# The estimate


@dataclass(slots=True)
class _Obs:
    user: int
    window: int
    t: float  # days since the window's first reading
    y: float
    w: float  # weight 1 / multiplier
    source: str
    band: str | None


def _prepare(
    obs: Sequence[Observation], config: Config, bands: Offsets, window_days: float
) -> tuple[list[_Obs], int, int]:
    """Readings with their window, band and weight; (readings, users, windows)."""
    by_user: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        by_user[o.user_id].append(o)
    names = [n for n, _ in bands.bands]
    out: list[_Obs] = []
    window = -1
    for u, user_id in enumerate(sorted(by_user)):
        rows = sorted(by_user[user_id], key=lambda o: o.micros)
        start: int | None = None
        for o in rows:
            if start is None or (o.micros - start) / _DAY_US > window_days:
                start, window = o.micros, window + 1
            second = local_second_of_day(bands, o.micros)
            band = None if second is None else names[band_of(bands, second)]
            out.append(
                _Obs(
                    user=u,
                    window=window,
                    t=(o.micros - start) / _DAY_US,
                    y=o.weight_kg,
                    w=1.0 / config.sources.multiplier(o.source),
                    source=o.source,
                    band=band,
                )
            )
    return out, len(by_user), window + 1


def _comparable(rows: list[_Obs]) -> tuple[dict[str, int], dict[str, set[int]]]:
    """Per source and band key: readings in windows where they can be compared, and users."""
    count: dict[str, int] = defaultdict(int)
    users: dict[str, set[int]] = defaultdict(set)
    for group in _by_window(rows):
        if len(group) < 3:
            continue
        cells = {(o.source, o.band) for o in group}
        if len(cells) < 2:
            continue
        sources = {o.source for o in group}
        bands = {o.band for o in group}
        for o in group:
            if len(sources) > 1:
                count[o.source] += 1
                users[o.source].add(o.user)
            if o.band is not None and len(bands) > 1:
                key = f"time_of_day.{o.band}"
                count[key] += 1
                users[key].add(o.user)
    return count, users


def _by_window(rows: list[_Obs]) -> list[list[_Obs]]:
    groups: dict[int, list[_Obs]] = defaultdict(list)
    for o in rows:
        groups[o.window].append(o)
    return list(groups.values())


def _choose_reference(
    requested: str | None, config: Config, rows: list[_Obs], count: dict[str, int]
) -> str:
    if requested:
        return requested
    if config.offsets.reference:
        return config.offsets.reference
    if count.get(CLINIC_SOURCE, 0) >= MIN_READINGS:
        return CLINIC_SOURCE
    used: dict[str, int] = defaultdict(int)
    for o in rows:
        used[o.source] += 1
    return max(sorted(used), key=lambda s: used[s]) if used else ""


def _project(
    rows: list[_Obs], columns: list[str]
) -> tuple[_Array, _Array, _Array, NDArray[np.int64], int]:
    """Readings and offset columns with each window's weighted line projected off.

    Returns (X~, y~, weights, user of each row, degrees of freedom the lines used).
    """
    col = {name: j for j, name in enumerate(columns)}
    xs: list[_Array] = []
    ys: list[_Array] = []
    ws: list[_Array] = []
    us: list[NDArray[np.int64]] = []
    nuisance = 0
    for group in _by_window(rows):
        n = len(group)
        if n < 3:
            continue
        X = np.zeros((n, len(columns)))
        for i, o in enumerate(group):
            j = col.get(o.source)
            if j is not None:
                X[i, j] = 1.0
            if o.band is not None:
                k = col.get(f"time_of_day.{o.band}")
                if k is not None:
                    X[i, k] = 1.0
        y = np.array([o.y for o in group])
        w = np.array([o.w for o in group])
        t = np.array([o.t for o in group])
        # Z = [1, t - t_w]: the window's line (intercept only if every reading shares a time).
        tc = t - np.average(t, weights=w)
        Z = (
            np.column_stack([np.ones(n), tc])
            if np.average(tc * tc, weights=w) > 1e-9
            else (np.ones((n, 1)))
        )
        # v~ = v - Z (Z^T W Z)^-1 Z^T W v   (weighted projection off the window's line)
        ZW = Z.T * w
        coef = np.linalg.solve(ZW @ Z, ZW @ np.column_stack([X, y]))
        resid = np.column_stack([X, y]) - Z @ coef
        xs.append(resid[:, :-1])
        ys.append(resid[:, -1])
        ws.append(w)
        us.append(np.full(n, group[0].user, dtype=np.int64))
        nuisance += Z.shape[1]
    if not xs:
        empty = np.zeros(0)
        return np.zeros((0, len(columns))), empty, empty, np.zeros(0, dtype=np.int64), 0
    return np.vstack(xs), np.concatenate(ys), np.concatenate(ws), np.concatenate(us), nuisance


def _fit(
    X: _Array, y: _Array, w: _Array, users: NDArray[np.int64], nuisance: int
) -> tuple[_Array, _Array, _Array, float]:
    """(beta, se, weighted residuals, residual sd) of the projected WLS problem."""
    sw = np.sqrt(w)
    Xw, yw = X * sw[:, None], y * sw
    bread = np.linalg.pinv(Xw.T @ Xw)
    beta = bread @ (Xw.T @ yw)
    e = yw - Xw @ beta
    n, p = X.shape
    dof = max(n - nuisance - p, 1)
    sigma2 = float(e @ e) / dof
    classical = np.diag(bread) * sigma2
    # Cluster-robust by user: bread (sum_g s_g s_g^T) bread, s_g = X_g^T W e_g.
    groups = np.unique(users)
    meat = np.zeros((p, p))
    for g in groups:
        sel = users == g
        s = Xw[sel].T @ e[sel]
        meat += np.outer(s, s)
    g_count = len(groups)
    robust = np.diag(bread @ meat @ bread) * (g_count / (g_count - 1) if g_count > 1 else 1.0)
    se = np.sqrt(np.maximum(classical, robust))
    return beta, se, e, math.sqrt(sigma2)


def estimate(
    obs: Sequence[Observation],
    config: Config,
    *,
    reference: str | None = None,
    min_readings: int = MIN_READINGS,
    min_users: int = MIN_USERS,
    window_days: float = WINDOW_DAYS,
) -> Calibration:
    """The offsets ``obs`` show (pure; see the module docstring for the method)."""
    oc = config.offsets
    bands = Offsets(
        bands=tuple(zip(oc.band_names, oc.band_starts, strict=True)),
        local_utc_offset_hours=oc.local_utc_offset_hours,
    )
    rows, n_users, n_windows = _prepare(obs, config, bands, window_days)
    count, users = _comparable(rows)
    ref = _choose_reference(reference, config, rows, count)
    first_band = f"time_of_day.{oc.band_names[0]}"
    candidates = sorted({o.source for o in rows} - {ref}) + [
        f"time_of_day.{b}" for b in oc.band_names[1:]
    ]
    enough = [
        c for c in candidates if count.get(c, 0) >= min_readings and len(users[c]) >= min_users
    ]
    skipped = tuple(
        (c, count.get(c, 0), len(users.get(c, ()))) for c in candidates if c not in enough
    )
    # Readings of a source or band without an offset are left out (module docstring).
    kept_sources = {ref} | {c for c in enough if not c.startswith("time_of_day.")}
    kept_bands = {first_band} | {c for c in enough if c.startswith("time_of_day.")}
    fit_rows = [
        o
        for o in rows
        if o.source in kept_sources and (o.band is None or f"time_of_day.{o.band}" in kept_bands)
    ]
    beta = se = np.zeros(len(enough))
    residual_sd, used = math.nan, 0
    if enough:
        X, y, w, us, nuisance = _project(fit_rows, enough)
        if len(y) > len(enough):
            beta, se, e, residual_sd = _fit(X, y, w, us, nuisance)
            # Second fit without the readings far off the first (robust sd from the MAD).
            mad = float(np.median(np.abs(e))) * 1.4826
            if mad > 0:
                far = set(np.flatnonzero(np.abs(e) > OUTLIER_SIGMAS * mad).tolist())
                if far:
                    fit_rows = _drop_far(fit_rows, far)
                    X, y, w, us, nuisance = _project(fit_rows, enough)
                    beta, se, e, residual_sd = _fit(X, y, w, us, nuisance)
            used = len(y)
    source_est: list[tuple[str, OffsetEstimate]] = []
    band_est: list[tuple[str, OffsetEstimate]] = []
    for j, name in enumerate(enough):
        kg, half = float(beta[j]), _Z95 * float(se[j])
        est = OffsetEstimate(kg, kg - half, kg + half, count[name])
        if name.startswith("time_of_day."):
            band_est.append((name.removeprefix("time_of_day."), est))
        else:
            source_est.append((name, est))
    offsets = Offsets(
        reference=ref,
        sources=tuple(sorted(source_est)),
        time_of_day=tuple(sorted(band_est)),
        bands=bands.bands,
        local_utc_offset_hours=oc.local_utc_offset_hours,
    )
    return Calibration(
        offsets=offsets,
        skipped=skipped,
        readings=len(rows),
        used=used,
        users=n_users,
        windows=n_windows,
        residual_sd=residual_sd,
        min_readings=min_readings,
        min_users=min_users,
        estimate_users=tuple((c, len(users[c])) for c in enough),
    )


def _drop_far(rows: list[_Obs], far: set[int]) -> list[_Obs]:
    """``rows`` without the projected rows at positions ``far`` (same window order as
    :func:`_project`, which skips windows under three readings)."""
    kept: list[_Obs] = []
    k = 0
    for group in _by_window(rows):
        if len(group) < 3:
            kept.extend(group)
            continue
        for o in group:
            if k not in far:
                kept.append(o)
            k += 1
    return kept


def write_offsets(path: Path, offsets: Offsets) -> Config:
    """Write ``offsets`` into the configuration file ``path`` (created if missing).

    The file's other sections are kept as their values (read as TOML, validated, written back
    by :func:`weightstream.config.to_toml`: comments are not kept); the environment is not
    read, so no ``WEIGHTSTREAM_*`` override is baked into the file. Returns the new config.
    """
    data: dict[str, object] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"unreadable configuration {path}: {exc}") from None
    try:
        base = Config.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration {path}: {exc}") from None
    config = base.model_copy(update={"offsets": to_config(offsets)})
    path.write_text(to_toml(config), encoding="utf-8")
    return config
