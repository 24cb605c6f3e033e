"""Test helpers shipped with the package: a fake clock, stores, and fault injection.

* :class:`FakeClock`: time that only moves when told (``advance``), so nothing sleeps;
  it implements :class:`weightstream.clock.Clock`, so a 60-second breaker timeout costs
  nothing and never flakes:

  >>> clock = FakeClock()
  >>> clock.now().isoformat(), clock.monotonic()
  ('2030-01-01T00:00:00+00:00', 0.0)
  >>> clock.advance(90)
  >>> clock.now().isoformat(), clock.monotonic()
  ('2030-01-01T00:01:30+00:00', 90.0)

* :class:`MemoryStore`: the in-memory store;
* :class:`FaultyResetManager`: a reset manager whose steps raise or return corrupted values
  (NaN, wrong shape, asymmetric or negative P, Q <= 0, factor out of range, oversized buffer);
* :class:`FaultyStore`: wraps a store and makes chosen commits fail;
* :class:`SplitUnitStore`: a SQLite store that commits each unit of work as two transactions,
  the negative control of the crash matrix (:func:`split_unit_cli` is the command line with
  it), so the matrix can prove that it notices a unit that is not atomic;
* :class:`FaultPoints` (from :mod:`weightstream.faults`): crash points and chaos to hand to a
  store, a processor or ``process_file``;
* :func:`measurement`: a terse Measurement constructor for tests and examples;
* :func:`decided`: what a run's summary says was decided, for the engines' differential
  tests to compare every engine's run with one process's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from weightstream.config import Config
from weightstream.faults import FaultPoints
from weightstream.model import (
    AdaptationState,
    BufferedReading,
    KalmanState,
    Measurement,
    ResetType,
)
from weightstream.resets.manager import ResetManager
from weightstream.store.base import StateStore, UnitOfWork
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore

__all__ = [
    "FakeClock",
    "MemoryStore",
    "FaultyResetManager",
    "FaultyStore",
    "FaultPoints",
    "SplitUnitStore",
    "split_unit",
    "split_unit_cli",
    "FAULTS",
    "measurement",
    "decided",
    "T0",
]

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
T = TypeVar("T")

# Later than the readings tests build from T0 (2025): a reading more than a day after the
# processor's clock is invalid (a timestamp in the future).
_CLOCK_START = datetime(2030, 1, 1, tzinfo=UTC)


class FakeClock:
    """Wall and monotonic time that advance together, only through :meth:`advance`.

    Thread-safe: several threads may read it while one advances it. Time never goes
    backwards, so :meth:`advance` refuses negative and non-finite steps.
    """

    def __init__(self, start: datetime = _CLOCK_START, monotonic_start: float = 0.0) -> None:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("FakeClock start must be timezone-aware")
        if not math.isfinite(monotonic_start):
            raise ValueError("FakeClock monotonic_start must be finite")
        self._lock = threading.Lock()
        self._start = start.astimezone(UTC)
        self._monotonic_start = float(monotonic_start)
        self._elapsed = 0.0

    def now(self) -> datetime:
        """The fake wall-clock time, aware UTC: ``start`` plus everything advanced so far."""
        with self._lock:
            return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        """``monotonic_start`` plus everything advanced so far, in seconds."""
        with self._lock:
            return self._monotonic_start + self._elapsed

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (zero allowed; negative or NaN refused)."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"FakeClock advances only by a finite step >= 0, not {seconds!r}")
        with self._lock:
            self._elapsed += seconds

    def sleep(self, seconds: float) -> None:
        """Return at once, ``seconds`` later: a sleep is an :meth:`advance`."""
        self.advance(seconds)


def measurement(
    weight: float,
    day: float = 0.0,
    *,
    user: str = "u1",
    source: str = "patient-device",
    reading_id: str | None = None,
    start: datetime = T0,
) -> Measurement:
    """A valid reading ``day`` days after ``start``.

    >>> measurement(80.0, 1.5).timestamp.isoformat()
    '2025-01-02T20:00:00+00:00'
    """
    when = start + timedelta(days=day)
    rid = reading_id or f"{user}-{when.isoformat()}-{weight!r}-{source}"
    return Measurement(rid, user, when, weight, "kg", weight, source)


#: What two runs of one input may differ in: how long they took, how often they retried, and
#: how much of the input each found done.
_RUN_ONLY = frozenset({"seconds", "retries", "processed_now", "resumed_from"})


def decided(summary: dict[str, Any]) -> dict[str, Any]:
    """A :meth:`RunSummary.as_dict` less what two runs of one input may differ in
    (:data:`_RUN_ONLY`): what the engines' differential tests compare between runs.

    >>> decided({"rows": 3, "seconds": 1.0}) == decided({"rows": 3, "seconds": 9.0})
    True
    """
    return {k: v for k, v in summary.items() if k not in _RUN_ONLY}


def _nan_x(k: KalmanState) -> KalmanState:
    return replace(k, x=(float("nan"), k.x[1]))


def _inf_p(k: KalmanState) -> KalmanState:
    return replace(k, P=((float("inf"), 0.0), (0.0, 1.0)))


def _wrong_shape(k: KalmanState) -> KalmanState:
    return replace(k, x=(k.x[0], k.x[1], 0.0))


def _negative_p(k: KalmanState) -> KalmanState:
    return replace(k, P=((-1.0, 0.0), (0.0, k.P[1][1])))


def _asymmetric_p(k: KalmanState) -> KalmanState:
    return replace(k, P=((k.P[0][0], 0.5), (-0.5, k.P[1][1])))


#: Named faults, by the reset operation they corrupt.
FAULTS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "kalman_raises": ("kalman", None),
    "kalman_nan": ("kalman", _nan_x),
    "kalman_inf": ("kalman", _inf_p),
    "kalman_wrong_shape": ("kalman", _wrong_shape),
    "kalman_negative_p": ("kalman", _negative_p),
    "kalman_asymmetric_p": ("kalman", _asymmetric_p),
    "noise_q_zero": ("noise", lambda q: ((0.0, q[0][1]), (q[1][0], q[1][1]))),
    "noise_q_negative": ("noise", lambda q: ((-1.0, q[0][1]), (q[1][0], q[1][1]))),
    "adaptation_raises": ("adaptation", None),
    "adaptation_factor_high": ("adaptation", lambda a: replace(a, adaptation_factor=1000.0)),
    "adaptation_factor_low": ("adaptation", lambda a: replace(a, adaptation_factor=0.5)),
    "adaptation_negative_count": ("adaptation", lambda a: replace(a, measurements_since_reset=-1)),
    "buffer_raises": ("buffer", None),
    "buffer_oversized": (
        "buffer",
        lambda b: tuple(
            BufferedReading(b[-1].timestamp, b[-1].weight_kg, "x") for _ in range(5000)
        ),
    ),
    "buffer_nan": (
        "buffer",
        lambda b: (*b[:-1], BufferedReading(b[-1].timestamp, float("nan"), "x")),
    ),
}


class FaultyResetManager(ResetManager):
    """A ResetManager whose chosen step misbehaves ``times`` times (None: always)."""

    def __init__(self, config: Config, fault: str | None = None, times: int | None = None):
        super().__init__(config)
        self.fault = fault
        self.remaining = times
        self.triggered = 0

    def _fire(self, step: str) -> Callable[[Any], Any] | None | bool:
        if self.fault is None:
            return False
        where, corrupt = FAULTS[self.fault]
        if where != step or self.remaining == 0:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        self.triggered += 1
        if corrupt is None:
            raise RuntimeError(f"injected failure in {step}")
        return corrupt

    def _after(self, step: str, out: T) -> T:
        """``out``, the real step's value, as the fault at ``step`` leaves it (if it fires)."""
        corrupt = self._fire(step)
        return corrupt(out) if callable(corrupt) else out

    def apply_reset(
        self, kalman_state: KalmanState | None, reset_type: ResetType, measurement: Measurement
    ) -> KalmanState:
        return self._after("kalman", super().apply_reset(kalman_state, reset_type, measurement))

    def reset_noise(self, reset_type: ResetType) -> tuple[tuple[float, float], tuple[float, float]]:
        return self._after("noise", super().reset_noise(reset_type))

    def create_adaptation_state(
        self, reset_type: ResetType, timestamp: datetime
    ) -> AdaptationState:
        return self._after("adaptation", super().create_adaptation_state(reset_type, timestamp))

    def buffer_after_reset(
        self,
        buffer: tuple[BufferedReading, ...],
        reset_type: ResetType,
        measurement: Measurement,
    ) -> tuple[BufferedReading, ...]:
        return self._after("buffer", super().buffer_after_reset(buffer, reset_type, measurement))


class FaultyStore:
    """Delegates to ``inner``; commits for which ``fail_when(unit)`` is true raise ``error``."""

    def __init__(
        self,
        inner: StateStore,
        error: BaseException,
        fail_when: Callable[[UnitOfWork], bool] = lambda unit: True,
    ) -> None:
        self.inner = inner
        self.error = error
        self.fail_when = fail_when
        self.failures = 0
        self.armed = True

    def commit(self, unit: UnitOfWork) -> None:
        if self.armed and self.fail_when(unit):
            self.failures += 1
            raise self.error
        self.inner.commit(unit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def split_unit(unit: UnitOfWork) -> tuple[UnitOfWork, UnitOfWork]:
    """``unit`` as two units: its readings and results, then everything else."""
    first = UnitOfWork(
        readings=unit.readings,
        replaced_readings=unit.replaced_readings,
        results=unit.results,
        reading_rows=unit.reading_rows,
        result_rows=unit.result_rows,
        result_of_reading=unit.result_of_reading,
    )
    second = UnitOfWork(
        states=unit.states,
        expected_versions=unit.expected_versions,
        audits=unit.audits,
        recoveries=unit.recoveries,
        last_good=unit.last_good,
        position=unit.position,
    )
    return first, second


class SplitUnitStore(SQLiteStore):
    """A SQLite store that breaks rule 1 on purpose (the crash matrix's negative control).

    Each unit is committed as two transactions (:func:`split_unit`), with the crash point
    ``store.between_split`` between them, so a kill there leaves results without their state
    and position. Never for real data.
    """

    def commit(self, unit: UnitOfWork) -> None:
        first, second = split_unit(unit)
        if first.empty or second.empty:
            super().commit(unit)
            return
        super().commit(first)
        self.faults.crash_point("store.between_split")
        super().commit(second)


def split_unit_cli() -> None:
    """The ``weightstream`` command line with :class:`SplitUnitStore` as its store."""
    from weightstream import cli

    cli.main(store_class=SplitUnitStore)
