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
    x0, x1 = k.x  # a state of another shape fails here, as it did slot by slot
    (p00, p01), (p10, p11) = k.P
    last = state.buffer[-1] if state.buffer else None
    # Built as Python lists and converted once: a numpy item assignment per slot costs more
    # than the whole conversion. The slots in kernel's order (tests/engine/test_state_arrays).
    sf = np.array(
        [x0, x1, p00, p01, p10, p11, a.adaptation_factor, 0.0 if last is None else last.weight_kg],
        dtype=np.float64,
    )
    none = K.NONE
    si = np.array(
        [
            to_micros(k.timestamp),  # I_K_TS
            1 if a.is_adapting else 0,  # I_ADAPTING
            none if a.adaptation_start is None else to_micros(a.adaptation_start),
            a.measurements_since_reset,  # I_ADAPT_N
            0 if last is None else 1,  # I_HAS_LAST
            none if last is None else to_micros(last.timestamp),  # I_LAST_TS
            to_micros(state.last_accepted_at),  # I_LAST_ACCEPTED
            none if state.last_reset_at is None else to_micros(state.last_reset_at),
            none if state.last_event_at is None else to_micros(state.last_event_at),
            state.accepted_count,  # I_ACCEPTED
            state.version,  # I_VERSION
            len(state.rejected),  # I_REJ_COUNT
            0,  # I_REJ_START
        ],
        dtype=np.int64,
    )
    rejected = state.rejected
    rej_w = np.zeros(K.REJECTED_KEPT)
    rej_t = np.zeros(K.REJECTED_KEPT, dtype=np.int64)
    if rejected:
        rej_w[: len(rejected)] = [b.weight_kg for b in rejected]
        rej_t[: len(rejected)] = [to_micros(b.timestamp) for b in rejected]
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
    f: list[float] = sf.tolist()  # Python floats and ints: one conversion, not one a slot
    n: list[int] = si.tolist()
    if n[K.I_ACCEPTED] == base.accepted_count:  # rejections only: the filter as it was
        return UserState(
            user_id=base.user_id,
            kalman=base.kalman,
            adaptation=base.adaptation,
            buffer=base.buffer,
            rejected=tuple(rejected[-K.REJECTED_KEPT :]),
            last_accepted_at=base.last_accepted_at,
            last_event_at=from_micros(n[K.I_LAST_EVENT]),
            last_reset_at=base.last_reset_at,
            last_reset_type=base.last_reset_type,
            accepted_count=base.accepted_count,
            version=n[K.I_VERSION],
        )
    x0, x1, p00, p01, p10, p11 = f[: K.F_FACTOR]
    k_ts = from_micros(n[K.I_K_TS])
    kalman = base.kalman
    assert kalman is not None
    if (
        (x0, x1) != kalman.x
        or k_ts != kalman.timestamp
        or (p00, p01, p10, p11) != (kalman.P[0][0], kalman.P[0][1], kalman.P[1][0], kalman.P[1][1])
    ):
        kalman = KalmanState(x=(x0, x1), P=((p00, p01), (p10, p11)), timestamp=k_ts)
    if n[K.I_ADAPTING]:
        a = base.adaptation
        adaptation = AdaptationState(
            is_adapting=True,
            adaptation_start=a.adaptation_start,
            adaptation_factor=f[K.F_FACTOR],
            measurements_since_reset=n[K.I_ADAPT_N],
            reset_type=a.reset_type,
        )
        if adaptation == a:
            adaptation = a
    else:
        adaptation = AdaptationState()
    last_accepted = n[K.I_LAST_ACCEPTED]
    last_event = n[K.I_LAST_EVENT]
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
        accepted_count=n[K.I_ACCEPTED],
        version=n[K.I_VERSION],
    )
