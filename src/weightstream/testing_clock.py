"""A clock that only moves when a test says so.

:class:`FakeClock` implements :class:`weightstream.clock.Clock`. Tests pass it wherever the
code takes a ``clock`` and call :meth:`FakeClock.advance` instead of sleeping, so a 60-second
breaker timeout costs nothing and never flakes. Re-exported from :mod:`weightstream.testing`.

>>> clock = FakeClock()
>>> clock.now().isoformat(), clock.monotonic()
('2030-01-01T00:00:00+00:00', 0.0)
>>> clock.advance(90)
>>> clock.now().isoformat(), clock.monotonic()
('2030-01-01T00:01:30+00:00', 90.0)
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]

# Later than the readings tests build from weightstream.testing.T0 (2025): a reading more
# than a day after the processor's clock is invalid (a timestamp in the future).
_DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


class FakeClock:
    """Wall and monotonic time that advance together, only through :meth:`advance`.

    Thread-safe: several threads may read it while one advances it. Time never goes
    backwards, so :meth:`advance` refuses negative and non-finite steps.
    """

    def __init__(self, start: datetime = _DEFAULT_START, monotonic_start: float = 0.0) -> None:
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
