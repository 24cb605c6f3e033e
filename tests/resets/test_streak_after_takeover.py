"""A filter a burst took over gives way as readily as a new user's (issue 13: outlier bursts).

One clean first reading, then another person on the scale four times: the burst's third reading
restarts the filter at the burst's level (the first reading was alone against three). The
person's own readings that follow must win back at the first of them: the takeover remembers
the level it displaced (``tests/resets/test_provisional_baseline.py``).
"""

from __future__ import annotations

from weightstream.config import Config
from weightstream.model import ResetType, Verdict
from weightstream.processor import Processor
from weightstream.testing import MemoryStore, measurement


def test_own_readings_win_back_after_a_burst_took_the_filter_over() -> None:
    config = Config()
    p = Processor(MemoryStore(), config)
    p.process_one(measurement(71.0, 0))
    burst = [p.process_one(measurement(110.0 + 0.3 * i, 1 + i)) for i in range(4)]
    assert any(r.reset_type is ResetType.HARD for r in burst)  # the burst took over
    own = [p.process_one(measurement(69.0 + 0.2 * i, 5 + i)) for i in range(6)]
    back = next(i for i, r in enumerate(own) if r.verdict is Verdict.ACCEPTED)
    # at once: the takeover remembered the 71 it displaced (was streak_new_user - 1, 2, and
    # before that streak_established - 1, 5)
    assert back == 0
    assert own[back].reset_type is ResetType.HARD
    assert all(r.verdict is Verdict.ACCEPTED for r in own[back:])


def test_an_established_filter_still_needs_the_long_streak() -> None:
    """Twenty readings, then a burst of five: rejected, the filter stays (no takeover)."""
    p = Processor(MemoryStore(), Config())
    for day in range(20):
        p.process_one(measurement(80.0, day))
    burst = [p.process_one(measurement(110.0, 20 + i * 0.2)) for i in range(5)]
    assert all(r.verdict is Verdict.REJECTED for r in burst)
