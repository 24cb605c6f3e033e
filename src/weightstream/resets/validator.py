"""State validation between reset steps and before anything is persisted.

The plan's validator, generalised: its sketch assumed a 1x1 state (``x: (1, 1)``); ours is the
2-state local linear trend, and the checks work for any n (x: n, P: n x n, F: n x n,
H: 1 x n, Q: n x n, R: 1 x 1). Its ``_validate_persisted_state`` returned True for anything;
here the whole :class:`~weightstream.model.UserState` must be coherent: the version goes up by
exactly one and no time goes backwards.

:meth:`StateValidator.problems` names every fault found (never a weight value: health data
stays out of messages); :meth:`StateValidator.validate` is its boolean form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from weightstream.model import AdaptationState, BufferedReading, KalmanState, ResetType, UserState

__all__ = [
    "ResetOperation",
    "StateValidator",
    "kalman_snapshot",
    "adaptation_snapshot",
    "buffer_snapshot",
    "persist_snapshot",
]


class ResetOperation(StrEnum):
    """The steps of a reset transaction, in order."""

    KALMAN_RESET = "kalman_reset"
    ADAPTATION_CREATE = "adaptation_create"
    BUFFER_UPDATE = "buffer_update"
    STATE_PERSIST = "state_persist"


#: The check method of each operation (looked up per call, so an override still applies).
_CHECKS: dict[str, str] = {
    ResetOperation.KALMAN_RESET: "_kalman",
    ResetOperation.ADAPTATION_CREATE: "_adaptation",
    ResetOperation.BUFFER_UPDATE: "_buffer",
    ResetOperation.STATE_PERSIST: "_persist",
}
_RESET_TYPES = frozenset(ResetType)
#: The adaptation factor's range: 1 is no boost, 100 already a filter that believes only data.
_MIN_FACTOR, _MAX_FACTOR = 1.0, 100.0


def kalman_snapshot(state: KalmanState, q: Sequence[Sequence[float]], r: float) -> dict[str, Any]:
    """The matrices a Kalman checkpoint validates: x, P, F (one day), H, Q (one day), R."""
    n = len(state.x)
    if n == 2:
        F: Any = _F2
        H: Any = _H2
    else:
        F = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
        if n >= 2:
            F[0][1] = 1.0
        H = [[1.0] + [0.0] * (n - 1)]
    return {"x": state.x, "P": state.P, "F": F, "H": H, "Q": q, "R": ((r,),)}


_F2 = ((1.0, 1.0), (0.0, 1.0))
_H2 = ((1.0, 0.0),)


def adaptation_snapshot(state: AdaptationState, reading_time: datetime) -> dict[str, Any]:
    return {
        "is_adapting": state.is_adapting,
        "adaptation_start": state.adaptation_start,
        "adaptation_factor": state.adaptation_factor,
        "measurements_since_reset": state.measurements_since_reset,
        "reset_type": state.reset_type,
        "reading_time": reading_time,
    }


def buffer_snapshot(buffer: Sequence[BufferedReading], max_size: int) -> dict[str, Any]:
    return {"buffer": buffer, "max_size": max_size}


#: A reset's checked components: its Kalman state, adaptation and buffer.
Components = tuple[KalmanState, AdaptationState, tuple[BufferedReading, ...]]


def persist_snapshot(
    old: UserState | None, new: UserState, checked: Components | None = None
) -> dict[str, Any]:
    """The whole state a persist checkpoint validates. ``checked``: the (Kalman state,
    adaptation, buffer) this validator has passed already, in the same reset's earlier
    checkpoints (:func:`weightstream.resets.sequence.run_reset`); ``new``'s components that
    are those very values are not checked again (they are frozen, so the verdict stands)."""
    return {"old": old, "new": new, "checked": checked}


class StateValidator:
    """Checks a checkpoint's state for the operation that produced it.

    >>> v = StateValidator()
    >>> v.problems({"x": [1.0]}, ResetOperation.KALMAN_RESET)[0]
    'missing Kalman component P'
    """

    def __init__(
        self,
        min_weight_kg: float = 20.0,
        max_weight_kg: float = 500.0,
        max_abs_trend_kg_per_day: float = 5.0,
        max_buffer: int = 1000,
    ) -> None:
        self.min_weight_kg = min_weight_kg
        self.max_weight_kg = max_weight_kg
        self.max_abs_trend = max_abs_trend_kg_per_day
        self.max_buffer = max_buffer

    def validate(self, state: Any, operation: ResetOperation | str) -> bool:
        return not self.problems(state, operation)

    def problems(self, state: Any, operation: ResetOperation | str) -> list[str]:
        """Every fault of ``state`` as the result of ``operation`` (empty: valid)."""
        # An operation's text finds its check too (a StrEnum member hashes and compares as its
        # value), so the usual call makes no conversion.
        try:
            name = _CHECKS.get(operation)
        except TypeError:  # not hashable: no operation at all
            name = None
        if name is None:
            return [f"no validator for operation {operation!r}"]
        try:
            return getattr(self, name)(state)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - a validator must answer, not crash
            return [f"state unreadable for {operation}: {type(exc).__name__}"]

    # -- Kalman -------------------------------------------------------------------------

    def _kalman(self, state: Any) -> list[str]:
        if type(state) is dict and self._fast_kalman_ok(state):  # a reset's own checkpoint
            return []
        if isinstance(state, KalmanState):
            return self.kalman_state_problems(state)
        if not isinstance(state, Mapping):
            return ["Kalman checkpoint is not a mapping of matrices"]
        if self._fast_kalman_ok(state):
            return []
        missing = [k for k in ("x", "P", "F", "H", "Q", "R") if k not in state]
        if missing:
            return [f"missing Kalman component {k}" for k in missing]
        x = _vector(state["x"])
        if x is None or not x:
            return ["x is not a vector"]
        n = len(x)
        shapes = {"P": (n, n), "F": (n, n), "H": (1, n), "Q": (n, n), "R": (1, 1)}
        mats: dict[str, list[list[float]]] = {}
        out: list[str] = []
        for name, shape in shapes.items():
            m = _matrix(state[name])
            if m is None or (len(m), len(m[0]) if m else 0) != shape:
                out.append(f"{name} has the wrong shape (expected {shape[0]}x{shape[1]})")
            else:
                mats[name] = m
        if out:
            return out
        return self._filter_problems(x, mats)

    def _fast_kalman_ok(self, s: Mapping[str, Any]) -> bool:
        """True only if a 2-state checkpoint certainly passes; a False is not a verdict.

        x and P go through :meth:`_state_ok`; F, H, Q and R must be 2-state shaped and
        finite, with Q's diagonal and R positive. Anything else (a missing component
        included) goes to the naming path. F and H as :func:`kalman_snapshot` gives them for
        two states are constants, valid by construction.
        """
        try:
            F, H = s["F"], s["H"]
            if F is not _F2 or H is not _H2:
                (f0, f1), (h,) = F, H
                if len(f0) != 2 or len(f1) != 2 or len(h) != 2:
                    return False
                if not all(map(math.isfinite, (*f0, *f1, *h))):
                    return False
            ((q00, q01), (q10, q11)), ((r,),) = s["Q"], s["R"]
            # A finite sum means finite terms (a NaN or an infinity in any makes it NaN or
            # infinite); an overflowing sum of finite terms only sends the naming path.
            if (
                math.isfinite(q00 + q01 + q10 + q11 + r)
                and q00 > 0.0
                and q11 > 0.0
                and r > 0.0
                and self._state_ok(s["x"], s["P"])
            ):
                return True
        except Exception:  # noqa: BLE001 - any surprise: the naming path says what is wrong
            pass
        return False

    def kalman_state_problems(self, state: KalmanState) -> list[str]:
        """Checks on a bare :class:`KalmanState` (x, P and its time)."""
        if self._state_ok(state.x, state.P):
            return []
        x = _vector(state.x)
        P = _matrix(state.P)
        if x is None or len(x) != 2:
            return ["x is not a 2-vector"]
        if P is None or (len(P), len(P[0])) != (2, 2):
            return ["P has the wrong shape (expected 2x2)"]
        return self._filter_problems(x, {"P": P})

    # The one definition of a valid filter state, in two forms: _state_ok answers fast for
    # the 2-state filter (once per reading), _filter_problems names the faults for any n.
    # _state_ok is True only where _filter_problems finds nothing (tests/resets pin this).

    def _state_ok(self, x: Sequence[float], P: Sequence[Sequence[float]]) -> bool:
        """Certainly valid: x = (weight, trend) in range, P = 2x2 symmetric positive definite.

        Finiteness needs no test of its own: NaN fails every comparison, the ranges are finite,
        ``< inf`` bounds the diagonal, and an infinite off-diagonal makes the determinant -inf.
        """
        # Written as ``if ...: return True``: returning the ``and`` chain's value is a third
        # slower on CPython 3.11, and this runs once per reading.
        try:
            w, v = x
            (p00, p01), (p10, p11) = P
            if (
                self.min_weight_kg <= w <= self.max_weight_kg
                and -self.max_abs_trend <= v <= self.max_abs_trend
                and 0.0 < p00 < math.inf
                and 0.0 < p11 < math.inf
                and p01 == p10
                and p00 * p11 - p01 * p10 > 0.0
            ):
                return True
        except (TypeError, ValueError):  # not numbers in that shape: the naming path says why
            pass
        return False

    def _filter_problems(self, x: list[float], mats: Mapping[str, list[list[float]]]) -> list[str]:
        """Every fault of a filter whose shapes are right: non-finite entries (only those, if
        any), then weight and trend ranges, P, and Q and R where given."""
        out = [
            f"{name} contains NaN or inf"
            for name, rows in (("x", (x,)), *mats.items())
            if not all(math.isfinite(v) for row in rows for v in row)
        ]
        if out:
            return out
        if not self.min_weight_kg <= x[0] <= self.max_weight_kg:
            out.append("weight level outside the physiological range")
        if len(x) > 1 and abs(x[1]) > self.max_abs_trend:
            out.append("trend outside the plausible range")
        out += _spd_problems("P", mats["P"], definite=True)
        Q, R = mats.get("Q"), mats.get("R")
        if Q is not None and any(Q[i][i] <= 0 for i in range(len(Q))):
            out.append("process noise Q has a non-positive diagonal")
        if R is not None and R[0][0] <= 0:
            out.append("measurement noise R is not positive")
        return out

    # -- adaptation ---------------------------------------------------------------------

    def _adaptation(self, state: Any) -> list[str]:
        if isinstance(state, AdaptationState):
            if _adaptation_ok(
                state.adaptation_factor,
                state.measurements_since_reset,
                state.reset_type,
                state.is_adapting,
                state.adaptation_start,
                state.adaptation_start or datetime.max,
            ):
                return []
            state = adaptation_snapshot(state, state.adaptation_start or datetime.max)
        elif type(state) is dict and _adaptation_snapshot_ok(state):
            return []
        required = (
            "is_adapting",
            "adaptation_start",
            "adaptation_factor",
            "measurements_since_reset",
            "reset_type",
        )
        missing = [k for k in required if k not in state]
        if missing:
            return [f"missing adaptation field {k}" for k in missing]
        out = []
        factor = state["adaptation_factor"]
        if not isinstance(factor, (int, float)) or not (_MIN_FACTOR <= factor <= _MAX_FACTOR):
            out.append(f"adaptation factor outside [{_MIN_FACTOR:g}, {_MAX_FACTOR:g}]")
        count = state["measurements_since_reset"]
        if not isinstance(count, int) or count < 0:
            out.append("negative readings-since-reset count")
        reset_type = state["reset_type"]
        if reset_type is not None and reset_type not in _RESET_TYPES:
            out.append("unknown reset type")
        if state["is_adapting"] and (reset_type is None or state["adaptation_start"] is None):
            out.append("adapting without a reset type and start")
        start, reading = state["adaptation_start"], state.get("reading_time")
        if start is not None and reading is not None and start > reading:
            out.append("adaptation starts after the reading")
        return out

    # -- buffer ---------------------------------------------------------------------------

    def _buffer(self, state: Any) -> list[str]:
        if type(state) is dict:  # a reset's own checkpoint: the shortcut, if it answers
            buffer, bound = state.get("buffer"), state.get("max_size", self.max_buffer)
            if (
                type(buffer) is tuple
                and type(bound) is int
                and _buffer_ok(buffer, min(bound, self.max_buffer))
            ):
                return []
        if not isinstance(state, Mapping) or "buffer" not in state:
            return ["missing buffer"]
        buffer = state["buffer"]
        if not isinstance(buffer, (list, tuple)):
            return ["buffer is not a sequence"]
        bound = min(int(state.get("max_size", self.max_buffer)), self.max_buffer)
        if _buffer_ok(buffer, bound):
            return []
        out = []
        if len(buffer) > bound:
            out.append(f"buffer exceeds its bound of {bound}")
        if not all(isinstance(b, BufferedReading) for b in buffer):
            return out + ["buffer holds something other than readings"]
        if any(not math.isfinite(b.weight_kg) or b.weight_kg <= 0 for b in buffer):
            out.append("buffer holds a non-finite or non-positive weight")
        if any(a.timestamp > b.timestamp for a, b in zip(buffer, buffer[1:], strict=False)):
            out.append("buffer times are not ascending")
        return out

    # -- the whole state before persisting --------------------------------------------------

    def _persist(self, state: Any) -> list[str]:
        if isinstance(state, UserState):
            state = persist_snapshot(None, state)
        old, new = state.get("old"), state.get("new")
        if not isinstance(new, UserState):
            return ["no new user state to persist"]
        out = self.user_state_problems(new, checked=state.get("checked"))
        expected = 1 if old is None else old.version + 1
        if new.version != expected:
            out.append("state version does not go up by exactly one")
        if old is not None and _forward(old, new):
            return out
        if old is not None:
            if old.user_id != new.user_id:
                out.append("state belongs to another user")
            for name in ("last_event_at", "last_accepted_at", "last_reset_at"):
                before, after = getattr(old, name), getattr(new, name)
                if before is not None and (after is None or after < before):
                    out.append(f"{name} goes backwards")
            if (
                old.kalman is not None
                and new.kalman is not None
                and new.kalman.timestamp < old.kalman.timestamp
                and new.last_reset_at == old.last_reset_at
            ):
                out.append("filter time goes backwards")
        return out

    def step_ok(self, old: UserState, new: UserState) -> bool:
        """Fast check of an ordinary filter step (no reset) before it is staged.

        Equivalent to ``not problems(persist_snapshot(old, new), STATE_PERSIST)`` for a state
        whose buffer and adaptation came from the manager; on False, call :meth:`problems`
        for the names of the faults. Kept lean because it runs once per reading.
        """
        k = new.kalman
        if k is None or new.version != old.version + 1 or not self._state_ok(k.x, k.P):
            return False
        factor = new.adaptation.adaptation_factor
        if not _MIN_FACTOR <= factor <= _MAX_FACTOR or len(new.buffer) > self.max_buffer:
            return False
        if new.buffer and not math.isfinite(new.buffer[-1].weight_kg):
            return False
        before = old.last_event_at
        if before is not None and (new.last_event_at or before) < before:
            return False
        before = old.last_accepted_at
        return before is None or (new.last_accepted_at or before) >= before

    def user_state_problems(
        self, state: UserState, *, checked: Components | None = None
    ) -> list[str]:
        """Checks on a whole stored or about-to-be-stored user state (also used at load).

        ``checked``: components this validator passed already (:func:`persist_snapshot`).
        A reset's adaptation and buffer checkpoints are at least as strict as this check of
        the same component (the reading's time, the configured bound), so a state whose
        adaptation and buffer are exactly those values needs only its filter checked here
        (the Kalman checkpoint accepts a filter of any size, a stored state only the
        two-state one). Any other value is checked in full (``tests/resets`` pins both ways).
        """
        k, buffer = state.kalman, state.buffer
        if (
            checked is not None
            and k is checked[0]
            and state.adaptation is checked[1]
            and buffer is checked[2]
            and state.version >= 1
            and self._state_ok(k.x, k.P)
        ):
            return []
        try:
            if (
                not state.version < 1
                and (k is None or self._state_ok(k.x, k.P))
                and isinstance(buffer, (list, tuple))
                and _buffer_ok(buffer, min(int(self.max_buffer), self.max_buffer))
                and not self._adaptation(state.adaptation)
            ):
                return []
        except Exception:  # noqa: BLE001 - the naming path below raises or names it
            pass
        out: list[str] = []
        if state.version < 1:
            out.append("version below 1")
        if k is not None:
            out += self.kalman_state_problems(k)
        out += self._adaptation(state.adaptation)
        out += self._buffer({"buffer": buffer, "max_size": self.max_buffer})
        return out


def _adaptation_ok(
    factor: Any,
    count: Any,
    reset_type: Any,
    adapting: Any,
    start: Any,
    reading: Any,
) -> bool:
    """True only if an adaptation checkpoint with these fields certainly passes.

    The same conditions as :meth:`StateValidator._adaptation`, with no names: a False (or
    anything unexpected) sends the caller to the naming path.
    """
    try:
        if (
            isinstance(factor, (int, float))
            and _MIN_FACTOR <= factor <= _MAX_FACTOR
            and isinstance(count, int)
            and count >= 0
            and (reset_type is None or reset_type in _RESET_TYPES)
            and not (adapting and (reset_type is None or start is None))
            and (start is None or reading is None or not start > reading)
        ):
            return True
    except Exception:  # noqa: BLE001 - the naming path reports what is unreadable
        pass
    return False


def _adaptation_snapshot_ok(s: dict[str, Any]) -> bool:
    """:func:`_adaptation_ok` of a snapshot dict (a missing field: False)."""
    try:
        return _adaptation_ok(
            s["adaptation_factor"],
            s["measurements_since_reset"],
            s["reset_type"],
            s["is_adapting"],
            s["adaptation_start"],
            s.get("reading_time"),
        )
    except KeyError:
        return False


def _buffer_ok(buffer: Sequence[Any], bound: int) -> bool:
    """True only if ``buffer`` certainly passes :meth:`StateValidator._buffer` under ``bound``:
    at most ``bound`` readings, each a :class:`BufferedReading` of a finite positive weight,
    times ascending. One loop; a False (or anything unexpected) is not a verdict."""
    if len(buffer) > bound:
        return False
    try:
        last = None
        for b in buffer:
            if not isinstance(b, BufferedReading):
                return False
            w = b.weight_kg
            if not math.isfinite(w) or w <= 0:
                return False
            t = b.timestamp
            if last is not None and last > t:
                return False
            last = t
    except Exception:  # noqa: BLE001 - the naming path reports what is unreadable
        return False
    return True


def _forward(old: UserState, new: UserState) -> bool:
    """True only if none of ``new``'s times goes back from ``old``'s (the checks of
    :meth:`StateValidator._persist`, with no names; a False is not a verdict)."""
    try:
        for before, after in (
            (old.last_event_at, new.last_event_at),
            (old.last_accepted_at, new.last_accepted_at),
            (old.last_reset_at, new.last_reset_at),
        ):
            if before is not None and (after is None or after < before):
                return False
        ok, nk = old.kalman, new.kalman
        return old.user_id == new.user_id and (
            ok is None
            or nk is None
            or not nk.timestamp < ok.timestamp
            or new.last_reset_at != old.last_reset_at
        )
    except Exception:  # noqa: BLE001 - the naming path reports what is unreadable
        return False


def _vector(value: Any) -> list[float] | None:
    try:
        seq = list(value)
        if seq and isinstance(seq[0], (list, tuple)):  # a column vector n x 1
            seq = [row[0] for row in seq if len(row) == 1]
        return [float(v) for v in seq]
    except (TypeError, ValueError):
        return None


def _matrix(value: Any) -> list[list[float]] | None:
    try:
        rows = [[float(v) for v in row] for row in value]
    except (TypeError, ValueError):
        return None
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        return None
    return rows


def _spd_problems(name: str, m: list[list[float]], *, definite: bool) -> list[str]:
    """Symmetric positive (semi-)definite, by a Cholesky attempt (n is tiny)."""
    n = len(m)
    scale = max(abs(v) for row in m for v in row) or 1.0
    if any(abs(m[i][j] - m[j][i]) > 1e-9 * scale for i in range(n) for j in range(i)):
        return [f"{name} is not symmetric"]
    L = [[0.0] * n for _ in range(n)]
    for j in range(n):
        d = m[j][j] - sum(L[j][k] ** 2 for k in range(j))
        if d < 0 or (definite and d <= 0):
            return [f"{name} is not positive {'definite' if definite else 'semi-definite'}"]
        L[j][j] = math.sqrt(d)
        for i in range(j + 1, n):
            L[i][j] = (m[i][j] - sum(L[i][k] * L[j][k] for k in range(j))) / (L[j][j] or 1.0)
    return []
