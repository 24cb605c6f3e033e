"""A user's state as the compiled loop's arrays, and back.

:func:`to_arrays` lays a :class:`~weightstream.model.UserState` out in the slots of
:mod:`weightstream.engine.kernel`; :func:`from_arrays` builds the state the loop left, with
the bounded buffer and rejection list the caller kept (only those entries become objects).
A stretch of rejections only keeps the filter and adaptation objects as they were, as the
step does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weightstream.engine import kernel as K
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    UserState,
    from_micros,
    to_micros,
)

__all__ = ["to_arrays", "from_arrays"]


def to_arrays(
    state: UserState | None, by_type: Mapping[str, Any], base: Any
) -> tuple[Any, ...] | None:
    """The user's state as the loop's arrays (float slots, integer slots, the rejected
    ring's weights and times, the configuration for its adaptation), or None if the loop
    cannot take it. ``by_type`` and ``base``: the configuration arrays by the reset type of an
    adaptation, and without one."""
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
    c = by_type[str(a.reset_type)] if a.is_adapting else base
    return sf, si, rej_w, rej_t, c


def from_arrays(
    base: UserState,
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
        buffer=tuple(buffer),
        rejected=tuple(rejected[-K.REJECTED_KEPT :]),
        last_accepted_at=from_micros(last_accepted),
        last_event_at=from_micros(last_event) if last_event != K.NONE else None,
        last_reset_at=base.last_reset_at,
        last_reset_type=base.last_reset_type,
        accepted_count=int(si[K.I_ACCEPTED]),
        version=int(si[K.I_VERSION]),
    )
