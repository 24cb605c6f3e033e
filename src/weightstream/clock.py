"""Injected time.

Everything time-dependent (the breaker's timeout, audit timestamps, durations, the
"not in the future" check, the stored ``updated_at`` times, the back-off between retries)
takes a :class:`Clock`, so tests advance a :class:`weightstream.testing.FakeClock` instead of
sleeping. Nothing else in the package reads the wall clock or sleeps.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK", "SECONDS_PER_DAY"]

#: Seconds in a day (UTC has no leap seconds in Python's arithmetic). An ``int``, so
#: microsecond arithmetic stays exact; dividing a float of seconds by it gives days.
SECONDS_PER_DAY = 86_400


@runtime_checkable
class Clock(Protocol):
    """Wall time for records, monotonic time for intervals."""

    def now(self) -> datetime:
        """The current wall-clock time, aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a fake clock moves forward instead)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
