"""One commit group of a file through the engine: the common path in arrays, the rest as before.

The pipeline hands :func:`run_group` a group of valid readings in processing order (sorted by
user, time and content) and the :class:`~weightstream.batch.Batch` the group commits as.
For each user's run of readings:

1. duplicates are found first, once for the group (the same id or content, stored or earlier
   in the group), exactly as :meth:`Batch.process` would find them one by one;
2. readings the compiled loop (:mod:`weightstream.engine.kernel`) can decide are decided
   there, in a stretch, and staged as encoded rows with one new state for the user;
3. any other reading (a new user, a reset, a late reading, a state the loop cannot vouch for)
   goes through ``Batch.process``, the path of ``process_one``, and the loop takes over again
   from the state it left.

Both paths make the same decisions (``tests/engine/test_engine_equivalence.py`` runs every
synthetic scenario both ways, with chaos on, and compares every result and state).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from weightstream.engine import kernel as K
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    Measurement,
    Reason,
    UserState,
    Verdict,
    content_key_at,
    from_micros,
    order_key,
    to_micros,
)
from weightstream.observe import ReadingEvent
from weightstream.resets.manager import ResetManager
from weightstream.resets.validator import StateValidator

if TYPE_CHECKING:
    from weightstream.batch import Batch
    from weightstream.processor import Processor

__all__ = ["GroupReadings", "run_group", "EngineConfig"]

_MESSAGES = {
    K.MSG_POUNDS: (Reason.PROBABLE_UNIT_ERROR, "value looks like pounds labelled as kg"),
    K.MSG_TWICE: (Reason.PROBABLE_UNIT_ERROR, "value looks like kg converted twice"),
    K.MSG_BMI: (Reason.PROBABLE_BMI, "value is BMI-sized, far below the expected weight"),
    K.MSG_RATE: (Reason.RATE_OF_CHANGE, "change since the last accepted reading too fast"),
    K.MSG_UNUSABLE: (Reason.INNOVATION_OUTLIER, "filter uncertainty unusable"),
}
_ACCEPTED = str(Verdict.ACCEPTED)
_REJECTED = str(Verdict.REJECTED)
_DUPLICATE = str(Verdict.DUPLICATE)
_OK = str(Reason.OK)
_SIGMA = str(Reason.INNOVATION_OUTLIER)
_DUP_KEY = str(Reason.DUPLICATE_KEY)
_DUP_CONTENT = str(Reason.DUPLICATE_CONTENT)


@dataclass
class GroupReadings:
    """A group's valid readings in processing order, as plain columns."""

    line: list[int]
    ident: list[str | None]
    user: list[str]
    ts: list[int]
    value: list[float]
    unit: list[str]
    weight_kg: list[float]
    source: list[str]

    def __len__(self) -> int:
        return len(self.line)

    def measurement(self, i: int, reading_id: str, content: str) -> Measurement:
        return Measurement(
            reading_id=reading_id,
            user_id=self.user[i],
            timestamp=from_micros(self.ts[i]),
            value=self.value[i],
            unit=self.unit[i],
            weight_kg=self.weight_kg[i],
            source=self.source[i],
            content_key=content,
        )


class EngineConfig:
    """What the compiled loop needs from a processor's policy, computed once."""

    def __init__(self, processor: Processor) -> None:
        policy = processor.policy
        cfg = policy.config
        v = policy.validator
        self.policy = policy
        c = np.zeros(K.C_SLOTS, dtype=np.float64)
        c[K.C_Q_WEIGHT] = cfg.filter.q_weight
        c[K.C_Q_TREND] = cfg.filter.q_trend
        c[K.C_HARD_GAP] = cfg.resets.hard_gap_days
        c[K.C_SOFT_KG] = cfg.resets.soft_threshold_kg
        c[K.C_SOFT_COOLDOWN] = cfg.resets.soft_cooldown_days
        c[K.C_STREAK_NEW] = cfg.rules.streak_new_user
        c[K.C_STREAK_OLD] = cfg.rules.streak_established
        c[K.C_ESTABLISHED] = cfg.rules.established_readings
        c[K.C_STREAK_WINDOW] = cfg.rules.streak_window_days
        c[K.C_UNIT_TOL] = cfg.rules.unit_error_tolerance
        c[K.C_BMI_LOW], c[K.C_BMI_HIGH] = cfg.rules.bmi_range
        c[K.C_RATE_SLACK] = cfg.rules.rate_slack_kg
        c[K.C_MAX_RATE] = cfg.rules.max_rate_kg_per_day
        c[K.C_GATE] = cfg.rules.gate_sigma
        c[K.C_GATE_ADAPTING] = cfg.rules.adapting_gate_sigma
        c[K.C_MIN_W] = v.min_weight_kg
        c[K.C_MAX_W] = v.max_weight_kg
        c[K.C_MAX_TREND] = v.max_abs_trend
        c[K.C_MAX_BUFFER] = v.max_buffer
        self.base = c
        self.by_type: dict[object, np.ndarray] = {}
        for reset_type in ("initial", "hard", "soft"):
            boost = cfg.resets.boost(reset_type)
            ct = c.copy()
            ct[K.C_BOOST_Q] = boost.q_multiplier
            ct[K.C_BOOST_READINGS] = boost.adaptation_readings
            ct[K.C_BOOST_DAYS] = boost.adaptation_days
            ct[K.C_BOOST_DECAY] = boost.decay_readings
            self.by_type[reset_type] = ct
        self.buffer_size = cfg.resets.buffer_size
        # The loop is the stock manager's and validator's rules; a processor given others
        # (fault injection, a subclass) decides every reading through the step instead.
        self.usable = (
            cfg.processing.engine == "compiled"
            and cfg.processing.late_policy == "replay"
            and type(processor.manager) is ResetManager
            and type(v) is StateValidator
            and K.COMPILED
        )
        self._sources: dict[str, tuple[float, bool, float]] = {}

    def source(self, source: str) -> tuple[float, bool, float]:
        """(measurement variance, manual?, quality) of a source."""
        found = self._sources.get(source)
        if found is None:
            cfg = self.policy.config
            found = (
                self.policy.manager.measurement_var(source),
                cfg.sources.is_manual(source),
                self.policy.source_quality(source),
            )
            self._sources[source] = found
        return found


def run_group(processor: Processor, batch: Batch, g: GroupReadings, engine: EngineConfig) -> None:
    """Decide every reading of ``g`` into ``batch`` (which the caller commits)."""
    n = len(g)
    if not n:
        return
    started = time.perf_counter()
    ids = [
        i if i is not None else content_key_at(u, t, v, un, s)
        for i, u, t, v, un, s in zip(g.ident, g.user, g.ts, g.value, g.unit, g.source, strict=True)
    ]
    contents = [
        ids[k] if g.ident[k] is None else content_key_at(u, t, v, un, s)
        for k, (u, t, v, un, s) in enumerate(
            zip(g.user, g.ts, g.value, g.unit, g.source, strict=True)
        )
    ]
    users = set(g.user)
    processor.preload(users)
    # Only a user with a stored state can have stored readings: a new user needs no lookup.
    stored = {u for u in users if batch.current(u) is not None}
    probe = [
        pair
        for u, key, content in zip(g.user, ids, contents, strict=True)
        if u in stored
        for pair in ((u, key), (u, content))
    ]
    batch.use_known_keys(processor.store.existing_keys(probe) if probe else set())
    dup = _duplicates(g.user, ids, contents, batch)
    sources = {s: engine.source(s) for s in set(g.source)}
    r = np.fromiter((sources[s][0] for s in g.source), dtype=np.float64, count=n)
    manual = np.fromiter((sources[s][1] for s in g.source), dtype=np.bool_, count=n)
    srcq = np.fromiter((sources[s][2] for s in g.source), dtype=np.float64, count=n)
    ts = np.asarray(g.ts, dtype=np.int64)
    z = np.asarray(g.weight_kg, dtype=np.float64)
    out = _Outputs(n)
    events: list[ReadingEvent] = []
    start = 0
    while start < n:
        user = g.user[start]
        end = start
        while end < n and g.user[end] == user:
            end += 1
        _user_run(
            processor,
            batch,
            g,
            engine,
            start,
            end,
            ids,
            contents,
            dup,
            ts,
            z,
            r,
            manual,
            srcq,
            out,
            events,
        )
        start = end
    if events:
        per_row = (time.perf_counter() - started) / n
        batch.after_commit(
            lambda rows: processor.observer.readings_processed(rows, per_row), events
        )


class _Outputs:
    __slots__ = ("verdict", "msg", "z", "filt", "trend", "std", "qi", "qr", "q")

    def __init__(self, n: int) -> None:
        self.verdict = np.zeros(n, dtype=np.int8)
        self.msg = np.zeros(n, dtype=np.int8)
        self.z = np.zeros(n)
        self.filt = np.zeros(n)
        self.trend = np.zeros(n)
        self.std = np.zeros(n)
        self.qi = np.zeros(n)
        self.qr = np.zeros(n)
        self.q = np.zeros(n)


def _duplicates(
    users: list[str], ids: list[str], contents: list[str], batch: Batch
) -> list[str | None]:
    """The duplicate reason of each reading (None if it is new), as ``Batch`` would judge it."""
    known = batch.known_keys
    seen = set(batch.staged_keys)
    out: list[str | None] = []
    for user, key, content in zip(users, ids, contents, strict=True):
        k, c = (user, key), (user, content)
        if k in seen or k in known:
            out.append(_DUP_KEY)
        elif c in seen or c in known:
            out.append(_DUP_CONTENT)
        else:
            out.append(None)
            seen.add(k)
            seen.add(c)
    return out


def _user_run(
    processor: Processor,
    batch: Batch,
    g: GroupReadings,
    engine: EngineConfig,
    start: int,
    end: int,
    ids: list[str],
    contents: list[str],
    dup: list[str | None],
    ts: Any,
    z: Any,
    r: Any,
    manual: Any,
    srcq: Any,
    out: _Outputs,
    events: list[ReadingEvent],
) -> None:
    i = start
    while i < end:
        why = dup[i]
        if why is not None:
            _stage_duplicate(batch, g, i, ids[i], why, events)
            i += 1
            continue
        state = batch.current(g.user[i])
        arrays = _arrays(state, engine) if engine.usable else None
        if (
            arrays is not None
            and state is not None
            and _in_order(batch, state, g, i, ids, contents)
        ):
            sf, si, rej_w, rej_t, c = arrays
            stop = _kernel_stretch(
                i, end, dup, ts, z, r, manual, srcq, sf, si, rej_w, rej_t, c, out
            )
            if stop > i:
                _stage_stretch(
                    batch,
                    g,
                    engine,
                    state,
                    i,
                    stop,
                    ids,
                    contents,
                    dup,
                    sf,
                    si,
                    rej_w,
                    rej_t,
                    out,
                    events,
                )
                i = stop
                continue
        m = g.measurement(i, ids[i], contents[i])
        batch.process(m, row=g.line[i])
        i += 1


def _kernel_stretch(
    i: int,
    end: int,
    dup: list[str | None],
    ts: Any,
    z: Any,
    r: Any,
    manual: Any,
    srcq: Any,
    sf: Any,
    si: Any,
    rej_w: Any,
    rej_t: Any,
    c: Any,
    out: _Outputs,
) -> int:
    """Run the compiled loop over the readings from ``i`` up to the next duplicate or ``end``."""
    stop = i
    while stop < end and dup[stop] is None:
        stop += 1
    return int(
        K.run(
            ts,
            z,
            r,
            manual,
            srcq,
            i,
            stop,
            sf,
            si,
            rej_w,
            rej_t,
            c,
            out.verdict,
            out.msg,
            out.z,
            out.filt,
            out.trend,
            out.std,
            out.qi,
            out.qr,
            out.q,
        )
    )


def _in_order(
    batch: Batch, state: UserState, g: GroupReadings, i: int, ids: list[str], contents: list[str]
) -> bool:
    """Whether reading ``i`` follows the user's last one (else Batch decides: late/replay)."""
    last = state.last_event_at
    if last is None:
        return True
    t = to_micros(last)
    if g.ts[i] > t:
        return True
    if g.ts[i] < t:
        return False
    key = batch.last_key(g.user[i])
    return key is not None and order_key(g.measurement(i, ids[i], contents[i])) > key


def _arrays(state: UserState | None, engine: EngineConfig) -> tuple[Any, ...] | None:
    """The user's state as the loop's arrays, or None if the loop cannot take it."""
    if state is None or state.kalman is None or state.last_accepted_at is None or not state.version:
        return None
    a = state.adaptation
    if a.is_adapting and a.reset_type is None:
        return None
    if len(state.rejected) > K.REJECTED_KEPT:
        return None
    k = state.kalman
    sf = np.empty(K.F_SLOTS)
    sf[K.F_X0], sf[K.F_X1] = k.x
    (sf[K.F_P00], sf[K.F_P01]), (sf[K.F_P10], sf[K.F_P11]) = k.P
    sf[K.F_FACTOR] = a.adaptation_factor
    si = np.empty(K.I_SLOTS, dtype=np.int64)
    si[K.I_K_TS] = to_micros(k.timestamp)
    si[K.I_ADAPTING] = 1 if a.is_adapting else 0
    si[K.I_ADAPT_START] = K.NONE if a.adaptation_start is None else to_micros(a.adaptation_start)
    si[K.I_ADAPT_N] = a.measurements_since_reset
    last = state.buffer[-1] if state.buffer else None
    si[K.I_HAS_LAST] = 1 if last is not None else 0
    si[K.I_LAST_TS] = to_micros(last.timestamp) if last is not None else K.NONE
    sf[K.F_LAST_W] = last.weight_kg if last is not None else 0.0
    si[K.I_LAST_ACCEPTED] = to_micros(state.last_accepted_at)
    si[K.I_LAST_RESET] = K.NONE if state.last_reset_at is None else to_micros(state.last_reset_at)
    si[K.I_LAST_EVENT] = K.NONE if state.last_event_at is None else to_micros(state.last_event_at)
    si[K.I_ACCEPTED] = state.accepted_count
    si[K.I_VERSION] = state.version
    rej_w = np.zeros(K.REJECTED_KEPT)
    rej_t = np.zeros(K.REJECTED_KEPT, dtype=np.int64)
    for j, b in enumerate(state.rejected):
        rej_w[j] = b.weight_kg
        rej_t[j] = to_micros(b.timestamp)
    si[K.I_REJ_COUNT] = len(state.rejected)
    si[K.I_REJ_START] = 0
    c = engine.by_type[str(a.reset_type)] if a.is_adapting else engine.base
    return sf, si, rej_w, rej_t, c


def _stage_stretch(
    batch: Batch,
    g: GroupReadings,
    engine: EngineConfig,
    base: UserState,
    i0: int,
    i1: int,
    ids: list[str],
    contents: list[str],
    dup: list[str | None],
    sf: Any,
    si: Any,
    rej_w: Any,
    rej_t: Any,
    out: _Outputs,
    events: list[ReadingEvent],
) -> None:
    """Stage the readings ``i0 .. i1-1`` the loop decided, and the user's state after them."""
    user = g.user[i0]
    verdicts = out.verdict[i0:i1].tolist()
    msgs = out.msg[i0:i1].tolist()
    zs = out.z[i0:i1].tolist()
    filt = out.filt[i0:i1].tolist()
    trend = out.trend[i0:i1].tolist()
    std = out.std[i0:i1].tolist()
    qi = out.qi[i0:i1].tolist()
    qr = out.qr[i0:i1].tolist()
    q = out.q[i0:i1].tolist()
    input_id = batch.input_id
    reading_rows = batch.unit.reading_rows
    result_rows = batch.unit.result_rows
    staged = batch.staged_keys
    accepted_at: list[int] = []  # indexes of the stretch's accepted readings, in order
    rejected_since: list[int] = []  # indexes rejected since the last accepted one
    for k in range(i1 - i0):
        i = i0 + k
        src = g.source[i]
        if verdicts[k] == K.ACCEPTED:
            verdict, reason, message = _ACCEPTED, _OK, ""
            accepted_at.append(i)
            rejected_since.clear()
        else:
            verdict = _REJECTED
            if msgs[k] == K.MSG_SIGMA:
                reason, message = _SIGMA, f"{zs[k]:.1f} sigma from the prediction"
            else:
                why, message = _MESSAGES[msgs[k]]
                reason = str(why)
            rejected_since.append(i)
        sq = engine.source(src)[2]
        components = f'[["innovation", {qi[k]!r}], ["rate", {qr[k]!r}], ["source", {sq!r}]]'
        reading_rows.append(
            (
                ids[i],
                contents[i],
                user,
                g.ts[i],
                g.value[i],
                g.unit[i],
                g.weight_kg[i],
                src,
                verdict,
                reason,
                message,
                filt[k],
                trend[k],
                std[k],
                None,
                None,
                q[k],
            )
        )
        result_rows.append(
            (
                input_id,
                g.line[i],
                ids[i],
                user,
                verdict,
                reason,
                message,
                g.ts[i],
                src,
                g.weight_kg[i],
                filt[k],
                trend[k],
                std[k],
                None,
                None,
                q[k],
                components,
            )
        )
        staged.add((user, ids[i]))
        staged.add((user, contents[i]))
        events.append((user, ids[i], verdict, reason, src))
    last = i1 - 1
    batch.note_last_key(user, order_key(g.measurement(last, ids[last], contents[last])))
    # Only the entries the bounded buffer and the rejection list keep become objects.
    size = engine.buffer_size
    buffer = [*base.buffer[-size:], *(_entry(g, i) for i in accepted_at[-size:])][-size:]
    kept = K.REJECTED_KEPT
    earlier = base.rejected if not accepted_at else ()
    rejected = [*earlier[-kept:], *(_entry(g, i) for i in rejected_since[-kept:])][-kept:]
    batch.stage_state(_state(base, engine, sf, si, buffer, rejected))


def _entry(g: GroupReadings, i: int) -> BufferedReading:
    return BufferedReading(from_micros(g.ts[i]), g.weight_kg[i], g.source[i])


def _stage_duplicate(
    batch: Batch,
    g: GroupReadings,
    i: int,
    reading_id: str,
    reason: str,
    events: list[ReadingEvent],
) -> None:
    batch.unit.result_rows.append(
        (
            batch.input_id,
            g.line[i],
            reading_id,
            g.user[i],
            _DUPLICATE,
            reason,
            "already processed",
            g.ts[i],
            g.source[i],
            g.weight_kg[i],
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )
    )
    events.append((g.user[i], reading_id, _DUPLICATE, reason, g.source[i]))


def _state(
    base: UserState,
    engine: EngineConfig,
    sf: Any,
    si: Any,
    buffer: Sequence[BufferedReading],
    rejected: Sequence[BufferedReading],
) -> UserState:
    """The user's state after a stretch of the loop, from its arrays."""
    if int(si[K.I_ACCEPTED]) == base.accepted_count:  # rejections only: the filter as it was
        return UserState(
            user_id=base.user_id,
            kalman=base.kalman,
            adaptation=base.adaptation,
            buffer=base.buffer,
            rejected=tuple(rejected[-K.REJECTED_KEPT :]),
            last_accepted_at=base.last_accepted_at,
            last_event_at=from_micros(int(si[K.I_LAST_EVENT])),
            last_reset_at=base.last_reset_at,
            last_reset_type=base.last_reset_type,
            accepted_count=base.accepted_count,
            version=int(si[K.I_VERSION]),
        )
    x0, x1, p00, p01, p10, p11 = (float(v) for v in sf[: K.F_FACTOR])
    k_ts = from_micros(int(si[K.I_K_TS]))
    kalman = base.kalman
    assert kalman is not None
    if (
        (x0, x1) != kalman.x
        or k_ts != kalman.timestamp
        or (p00, p01, p10, p11) != (kalman.P[0][0], kalman.P[0][1], kalman.P[1][0], kalman.P[1][1])
    ):
        kalman = KalmanState(x=(x0, x1), P=((p00, p01), (p10, p11)), timestamp=k_ts)
    if si[K.I_ADAPTING]:
        a = base.adaptation
        adaptation = AdaptationState(
            is_adapting=True,
            adaptation_start=a.adaptation_start,
            adaptation_factor=float(sf[K.F_FACTOR]),
            measurements_since_reset=int(si[K.I_ADAPT_N]),
            reset_type=a.reset_type,
        )
        if adaptation == a:
            adaptation = a
    else:
        adaptation = AdaptationState()
    last_accepted = int(si[K.I_LAST_ACCEPTED])
    last_event = int(si[K.I_LAST_EVENT])
    return UserState(
        user_id=base.user_id,
        kalman=kalman,
        adaptation=adaptation,
        buffer=tuple(buffer[-engine.buffer_size :]),
        rejected=tuple(rejected[-K.REJECTED_KEPT :]),
        last_accepted_at=from_micros(last_accepted),
        last_event_at=from_micros(last_event) if last_event != K.NONE else None,
        last_reset_at=base.last_reset_at,
        last_reset_type=base.last_reset_type,
        accepted_count=int(si[K.I_ACCEPTED]),
        version=int(si[K.I_VERSION]),
    )
