"""The ordinary filter step over arrays: one user's readings in a compiled loop.

:func:`run` is :func:`weightstream.step.filter_step` for a run of one user's readings, written
over plain floats and integers so that numba can compile it (with numba absent it runs as
plain Python, slowly but alike). It covers the common case only, and stops, leaving the state
as it was before that reading, at the first reading that needs more than it knows:

* a reset trigger of :func:`weightstream.resets.triggers.decide` (gap, manual entry, streak,
  pound baseline): the shell runs resets, through the transaction and the breaker;
* a new state that :meth:`~weightstream.resets.validator.StateValidator.step_ok` would refuse;
* a reading older than the last accepted one (the buffer would need re-sorting).

Every formula is the one of :mod:`weightstream.kalman`, :mod:`weightstream.rules`,
:meth:`~weightstream.resets.manager.ResetManager.advance` and ``step._quality``, with the same
operations in the same order, so the results are the same floats: the engine's differential
tests hold it to :func:`~weightstream.step.step` to the last bit. numba is used without
``fastmath``, so IEEE operations are not reordered or fused.

The state lives in two small arrays (:data:`F_*` and :data:`I_*` name their slots) and the
rejected readings since the last accepted one in a ring of :data:`REJECTED_KEPT`.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from weightstream.clock import SECONDS_PER_DAY

__all__ = [
    "run",
    "prepare",
    "SIGNATURE",
    "COMPILED",
    "REJECTED_KEPT",
    "F_SLOTS",
    "I_SLOTS",
    "C_SLOTS",
    "MSG_NONE",
    "MSG_POUNDS",
    "MSG_TWICE",
    "MSG_BMI",
    "MSG_RATE",
    "MSG_UNUSABLE",
    "MSG_SIGMA",
    "ACCEPTED",
    "REJECTED",
]

REJECTED_KEPT: Final = 20

# Float state slots.
F_X0, F_X1, F_P00, F_P01, F_P10, F_P11, F_FACTOR, F_LAST_W = range(8)
F_SLOTS: Final = 8
# Integer state slots (times in UTC microseconds; NONE for an absent time).
(
    I_K_TS,
    I_ADAPTING,
    I_ADAPT_START,
    I_ADAPT_N,
    I_HAS_LAST,
    I_LAST_TS,
    I_LAST_ACCEPTED,
    I_LAST_RESET,
    I_LAST_EVENT,
    I_ACCEPTED,
    I_VERSION,
    I_REJ_COUNT,
    I_REJ_START,
) = range(13)
I_SLOTS: Final = 13
NONE: Final = np.iinfo(np.int64).min

# Configuration slots (floats).
(
    C_Q_WEIGHT,
    C_Q_TREND,
    C_HARD_GAP,
    C_SOFT_KG,
    C_SOFT_COOLDOWN,
    C_STREAK_NEW,
    C_STREAK_OLD,
    C_ESTABLISHED,
    C_STREAK_WINDOW,
    C_UNIT_TOL,
    C_BMI_LOW,
    C_BMI_HIGH,
    C_RATE_SLACK,
    C_MAX_RATE,
    C_GATE,
    C_GATE_ADAPTING,
    C_MIN_W,
    C_MAX_W,
    C_MAX_TREND,
    C_BOOST_Q,
    C_BOOST_READINGS,
    C_BOOST_DAYS,
    C_BOOST_DECAY,
    C_MANUAL_SIGMA,
    C_MANUAL_ROBUST,
    C_RATE_SIGMAS,
    C_STREAK_SINGLE,
    C_BASELINE_CHECKS,
    C_HARD_RESET,
) = range(29)
C_SLOTS: Final = 29

ACCEPTED: Final = 1
REJECTED: Final = 2
# Which rule rejected, and so the message (the reason follows from it).
MSG_NONE, MSG_POUNDS, MSG_TWICE, MSG_BMI, MSG_RATE, MSG_UNUSABLE, MSG_SIGMA = range(7)

_DAY = float(SECONDS_PER_DAY)
_LB_PER_KG = 1.0 / 0.45359237


def _run(
    ts: Any,
    z: Any,
    r: Any,
    manual: Any,
    srcq: Any,
    i0: int,
    i1: int,
    sf: Any,
    si: Any,
    rej_w: Any,
    rej_t: Any,
    c: Any,
    out_verdict: Any,
    out_msg: Any,
    out_z: Any,
    out_filt: Any,
    out_trend: Any,
    out_std: Any,
    out_qi: Any,
    out_qr: Any,
    out_q: Any,
) -> int:
    """Process readings ``i0 .. i1-1`` of the arrays; return the index of the first not done."""
    for i in range(i0, i1):
        t = ts[i]
        zi = z[i]
        # -- predict (kalman.predict with the adaptation's process noise)
        factor = sf[F_FACTOR] if si[I_ADAPTING] == 1 else 1.0
        q_w = c[C_Q_WEIGHT] * factor
        q_t = c[C_Q_TREND] * factor
        dt = ((t - si[I_K_TS]) / 1e6) / _DAY
        if dt < 0.0:
            dt = 0.0
        w = sf[F_X0]
        v = sf[F_X1]
        p00 = sf[F_P00]
        p01 = sf[F_P01]
        p10 = sf[F_P10]
        p11 = sf[F_P11]
        q01 = q_t * dt * dt / 2.0
        q00 = q_w * dt + q_t * dt * dt * dt / 3.0
        q11 = q_t * dt
        xp0 = w + dt * v
        xp1 = v
        a01 = p01 + dt * p11
        a10 = p10 + dt * p11
        pp00 = p00 + dt * (p01 + p10) + dt * dt * p11 + q00
        pp01 = a01 + q01
        pp10 = a10 + q01
        pp11 = p11 + q11
        # -- reset triggers (resets.manager.decide, then streak, then pound baseline)
        if si[I_LAST_ACCEPTED] == NONE:
            return i
        gap = ((t - si[I_LAST_ACCEPTED]) / 1e6) / _DAY
        if gap >= c[C_HARD_GAP]:
            return i
        ri = r[i]
        y = zi - xp0
        if manual[i] and abs(zi - xp0) >= c[C_SOFT_KG]:
            # ... unless it is within manual_reset_sigma sigmas (triggers._manual_agrees)
            km = c[C_MANUAL_SIGMA]
            if not (km > 0.0 and y * y < km * km * (pp00 + ri)):
                if si[I_LAST_RESET] == NONE:
                    return i
                if ((t - si[I_LAST_RESET]) / 1e6) / _DAY >= c[C_SOFT_COOLDOWN]:
                    return i
        # far from a filter a hard reset started: the step checks it against the level a
        # takeover displaced (triggers._displaced_return; the displaced readings are not here)
        if si[I_ADAPTING] == 1 and c[C_HARD_RESET] != 0.0 and abs(y) >= c[C_SOFT_KG]:
            return i
        young = si[I_ACCEPTED] < c[C_ESTABLISHED]
        # few readings in all, or few since a reset (triggers._young)
        # (after a hard reset, up to established readings since it)
        since = si[I_ADAPT_N] + (0 if c[C_HARD_RESET] != 0.0 else 1)
        young_streak = young or (si[I_ADAPTING] == 1 and since < c[C_ESTABLISHED])
        # the readings the filter rests on since its reset (triggers._resting_on)
        resting = si[I_ACCEPTED]
        if si[I_ADAPTING] == 1 and si[I_ADAPT_N] + 1 < resting:
            resting = si[I_ADAPT_N] + 1
        count = si[I_REJ_COUNT]
        if count > 0:
            needed = int(c[C_STREAK_NEW] if young_streak else c[C_STREAK_OLD]) - 1
            # a provisional baseline gives way to a majority (triggers._provisional; the loop
            # cannot tell a soft reset's adaptation from the others': it stops, the step decides)
            if not young_streak and si[I_ADAPTING] == 1 and resting < c[C_STREAK_OLD]:
                needed = int(max(c[C_STREAK_NEW], resting + 1)) - 1
            if resting == 1 and int(c[C_STREAK_SINGLE]) - 1 < needed:
                needed = int(c[C_STREAK_SINGLE]) - 1
            if count >= needed:
                lo = zi
                hi = zi
                for k in range(count - needed, count):
                    wk = rej_w[(si[I_REJ_START] + k) % REJECTED_KEPT]
                    lo = min(lo, wk)
                    hi = max(hi, wk)
                first = rej_t[(si[I_REJ_START] + count - needed) % REJECTED_KEPT]
                # (seconds compared with days x 86,400, as triggers._streak does)
                if hi - lo <= c[C_SOFT_KG] and (t - first) / 1e6 <= c[C_STREAK_WINDOW] * _DAY:
                    return i
        if young and abs(zi * _LB_PER_KG / xp0 - 1.0) <= c[C_UNIT_TOL]:
            return i
        # a baseline the reading disproves (triggers._disproved_baseline): a BMI-sized one
        # here; a manual one needs the buffer's sources, so such a reading goes to the step
        if young and c[C_BASELINE_CHECKS] != 0.0 and si[I_HAS_LAST] == 1:
            if c[C_BMI_LOW] <= xp0 <= c[C_BMI_HIGH] and xp0 < 0.6 * zi:
                return i
            if not manual[i] and abs(zi - xp0) >= c[C_SOFT_KG]:
                return i
        if (si[I_HAS_LAST] == 1 and t < si[I_LAST_TS]) or t < si[I_LAST_ACCEPTED]:
            return i
        # -- the outlier rules (rules.ORDINARY_RULES, in order)
        s = pp00 + ri
        days = ((t - si[I_LAST_TS]) / 1e6) / _DAY if si[I_HAS_LAST] == 1 else 0.0
        adapting = si[I_ADAPTING] == 1
        msg = MSG_NONE
        zz = 0.0
        ratio = zi / xp0
        tol = c[C_UNIT_TOL]
        if abs(ratio / _LB_PER_KG - 1.0) <= tol:
            msg = MSG_POUNDS
        elif abs(ratio * _LB_PER_KG - 1.0) <= tol:
            msg = MSG_TWICE
        elif c[C_BMI_LOW] <= zi <= c[C_BMI_HIGH] and zi < 0.6 * xp0:
            msg = MSG_BMI
        else:
            if si[I_HAS_LAST] == 1:
                d = days if days > 0.0 else 0.0
                # rules.rate_slack: the fixed slack, or k sigmas of the change noise explains
                slack = c[C_RATE_SLACK]
                if c[C_RATE_SIGMAS] > 0.0:
                    change_var = 2.0 * ri + q_w * d + pp11 * d * d
                    if change_var > 0.0:
                        noise = c[C_RATE_SIGMAS] * math.sqrt(change_var)
                        if noise > slack:
                            slack = noise
                allowed = slack + c[C_MAX_RATE] * d
                drift = xp1 * d
                if abs(zi - (sf[F_LAST_W] + drift)) > allowed:
                    msg = MSG_RATE
            if msg == MSG_NONE:
                gate = c[C_GATE_ADAPTING] if adapting else c[C_GATE]
                if manual[i] and c[C_MANUAL_SIGMA] > gate:  # step._manual_gate
                    gate = c[C_MANUAL_SIGMA]
                if s <= 0.0 or not math.isfinite(s):
                    msg = MSG_UNUSABLE
                else:
                    zz = abs(y) / math.sqrt(s)
                    if zz > gate:
                        msg = MSG_SIGMA
        if msg != MSG_NONE:
            # -- rejected: the state keeps its filter; the result shows the prediction
            if not _stored_ok(sf, si, c):
                return i
            out_verdict[i] = REJECTED
            out_msg[i] = msg
            out_z[i] = zz
            out_filt[i] = xp0
            out_trend[i] = xp1 * 7.0
            out_std[i] = math.sqrt(pp00) if pp00 >= 0.0 else math.nan
            out_qi[i] = 1.0
            out_qr[i] = 1.0
            out_q[i] = 0.6 * 1.0 + 0.25 * 1.0 + 0.15 * srcq[i]
            slot = (si[I_REJ_START] + count) % REJECTED_KEPT
            rej_w[slot] = zi
            rej_t[slot] = t
            if count == REJECTED_KEPT:
                si[I_REJ_START] = (si[I_REJ_START] + 1) % REJECTED_KEPT
            else:
                si[I_REJ_COUNT] = count + 1
            if t > si[I_LAST_EVENT]:
                si[I_LAST_EVENT] = t
            si[I_VERSION] += 1
            continue
        # -- accepted: the Kalman update (Joseph form), as kalman.update, with a manual
        # entry's variance raised beyond manual_robust_sigma (step.robust_var)
        ru = ri
        cr = c[C_MANUAL_ROBUST] if manual[i] else 0.0
        if cr > 0.0 and y * y > cr * cr * s:
            ru = s * (abs(y) / (cr * math.sqrt(s))) - pp00
        su = pp00 + ru
        k0 = pp00 / su
        k1 = pp10 / su
        nx0 = xp0 + k0 * y
        nx1 = xp1 + k1 * y
        cc = 1.0 - k0
        b00_a = cc * pp00
        b01_a = cc * pp01
        b10_a = pp10 - k1 * pp00
        b11_a = pp11 - k1 * pp01
        b00 = b00_a * cc + k0 * k0 * ru
        b01 = b01_a - b00_a * k1 + k0 * k1 * ru
        b10 = b10_a * cc + k1 * k0 * ru
        b11 = b11_a - b10_a * k1 + k1 * k1 * ru
        off = 0.5 * (b01 + b10)
        # step_ok on the new filter (the adaptation factor and buffer follow below)
        if not (
            c[C_MIN_W] <= nx0 <= c[C_MAX_W]
            and -c[C_MAX_TREND] <= nx1 <= c[C_MAX_TREND]
            and 0.0 < b00 < math.inf
            and 0.0 < b11 < math.inf
            and b00 * b11 - off * off > 0.0
            and math.isfinite(zi)
        ):
            return i
        # -- adaptation (ResetManager.advance)
        new_adapting = 0
        new_factor = 1.0
        new_n = 0
        new_start = NONE
        if adapting:
            n = si[I_ADAPT_N] + 1
            start = si[I_ADAPT_START] if si[I_ADAPT_START] != NONE else t
            adays = ((t - start) / 1e6) / _DAY
            if adays < 0.0:
                adays = 0.0
            if not (n >= c[C_BOOST_READINGS] or adays >= c[C_BOOST_DAYS]):
                weight = math.exp(-n / c[C_BOOST_DECAY]) * (1.0 - adays / c[C_BOOST_DAYS])
                new_factor = 1.0 + (c[C_BOOST_Q] - 1.0) * weight
                new_adapting = 1
                new_n = n
                new_start = si[I_ADAPT_START]
                if not 1.0 <= new_factor <= 100.0:
                    return i
        out_verdict[i] = ACCEPTED
        out_msg[i] = MSG_NONE
        out_z[i] = 0.0
        out_filt[i] = nx0
        out_trend[i] = nx1 * 7.0
        out_std[i] = math.sqrt(b00)
        qi = math.exp(-0.5 * y * y / s)
        qr = 1.0
        if si[I_HAS_LAST] == 1:
            allowed_q = c[C_RATE_SLACK] + c[C_MAX_RATE] * days
            qr = 1.0 - abs(zi - sf[F_LAST_W]) / allowed_q
            if qr < 0.0:
                qr = 0.0
        out_qi[i] = qi
        out_qr[i] = qr
        out_q[i] = 0.6 * qi + 0.25 * qr + 0.15 * srcq[i]
        sf[F_X0] = nx0
        sf[F_X1] = nx1
        sf[F_P00] = b00
        sf[F_P01] = off
        sf[F_P10] = off
        sf[F_P11] = b11
        sf[F_FACTOR] = new_factor
        sf[F_LAST_W] = zi
        si[I_K_TS] = t
        si[I_ADAPTING] = new_adapting
        si[I_ADAPT_N] = new_n
        si[I_ADAPT_START] = new_start
        si[I_HAS_LAST] = 1
        si[I_LAST_TS] = t
        si[I_LAST_ACCEPTED] = t
        if t > si[I_LAST_EVENT]:
            si[I_LAST_EVENT] = t
        si[I_ACCEPTED] += 1
        si[I_VERSION] += 1
        si[I_REJ_COUNT] = 0
        si[I_REJ_START] = 0
    return i1


def _stored_ok(sf: Any, si: Any, c: Any) -> bool:
    """step_ok for a state whose filter does not change (a rejected reading)."""
    w = sf[F_X0]
    v = sf[F_X1]
    p00 = sf[F_P00]
    p11 = sf[F_P11]
    return bool(
        c[C_MIN_W] <= w <= c[C_MAX_W]
        and -c[C_MAX_TREND] <= v <= c[C_MAX_TREND]
        and 0.0 < p00 < math.inf
        and 0.0 < p11 < math.inf
        and sf[F_P01] == sf[F_P10]
        and p00 * p11 - sf[F_P01] * sf[F_P10] > 0.0
        and (si[I_ADAPTING] == 0 or 1.0 <= sf[F_FACTOR] <= 100.0)
    )


run: Callable[..., int]
try:  # numba compiles the loop; without it the same code runs as Python
    import numba

    _stored_ok = numba.njit(cache=True)(_stored_ok)
    run = numba.njit(cache=True)(_run)
    COMPILED = True
except ImportError:  # pragma: no cover - numba is a dependency; kept for odd platforms
    run = _run
    COMPILED = False

_log = logging.getLogger(__name__)
#: The compiled loop itself, whatever later replaces the name ``run`` (a test's counter).
_dispatcher: Any = run

#: The one signature the engine calls :func:`run` with (``engine.group._Group._loop``).
SIGNATURE: tuple[Any, ...] = ()
if COMPILED:
    _i8, _f8 = numba.types.int64, numba.types.float64

    def _a(t: Any) -> Any:
        return numba.types.Array(t, 1, "C")

    SIGNATURE = (
        *(_a(_i8), _a(_f8), _a(_f8), _a(numba.types.boolean), _a(_f8)),  # ts z r manual srcq
        *(_i8, _i8),  # i0 i1
        *(_a(_f8), _a(_i8), _a(_f8), _a(_i8), _a(_f8)),  # sf si rej_w rej_t c
        *(_a(numba.types.int8), _a(numba.types.int8), *[_a(_f8)] * 7),  # the outputs
    )

#: The command that compiles the loop into numba's cache, in a child process of its own.
COMPILE_COMMAND = [sys.executable, "-c", "import weightstream.engine.kernel as k; k.prepare()"]
#: How long the child may take before the process compiles in-process instead (seconds).
COMPILE_TIMEOUT_S = 600.0


def prepare(*, child: bool = False) -> None:
    """Give :func:`run` its machine code now, from numba's on-disk cache.

    A cold cache (the first run after an install or an upgrade) means compiling, and LLVM's
    compiler holds some 30 MB that it does not give back: with ``child``, the compile runs in
    a short child process (:data:`COMPILE_COMMAND`) that leaves the code in the cache, and
    this process only loads it. If the child fails (no interpreter, no writable cache, a
    timeout), this process compiles itself, as numba would at the first call. A warm cache
    costs one look at its index. Idempotent; without numba, nothing to do.
    """
    if not COMPILED or _dispatcher.signatures:
        return
    if child and not _cached():
        try:
            subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
                COMPILE_COMMAND,
                check=True,
                timeout=COMPILE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            _log.warning("compiling the engine's loop in a child failed (%s): compiling here", exc)
    _dispatcher.compile(SIGNATURE)


def _cached() -> bool:
    """Whether numba's cache holds :func:`run`'s code for :data:`SIGNATURE` (False if unsure).

    numba has no public question for this; its cache's own index lookup answers it, and any
    change in those internals only sends the compile to the child, which loads it if cached.
    """
    try:
        cache = _dispatcher._cache
        key = cache._index_key(SIGNATURE, _dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - any failure means "not known to be cached"
        return False
