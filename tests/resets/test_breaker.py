"""The reset circuit breaker: transitions, generations, probes, threads, storage, listeners.

Nothing here sleeps: time is a FakeClock, and thread tests line threads up with Barrier/Event
(the timeouts on waits and joins are only safety nets against a hang).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from weightstream.errors import CircuitOpenError, ConfigError
from weightstream.resets.breaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitState,
    MemoryBreakerStorage,
)
from weightstream.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
LOGGER = "weightstream.resets.breaker"
SAFETY = 30.0  # seconds; a wait or join that needs this long means the test is hung


class Boom(Exception):
    """A reset step failing: a breaker failure."""


class RejectedReading(Exception):
    """A reading refused as bad input: not a breaker failure."""


def fail() -> str:
    raise Boom("reset step failed")


def ok() -> str:
    return "ok"


def trip(breaker: CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        with pytest.raises(Boom):
            breaker.call(fail)


def run_threads(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SAFETY)
    assert not any(thread.is_alive() for thread in threads)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transitions() -> list[tuple[CircuitState, CircuitState]]:
    return []


def breaker_with(
    clock: FakeClock, transitions: list[tuple[CircuitState, CircuitState]], **kwargs: object
) -> CircuitBreaker:
    breaker = CircuitBreaker(clock=clock, **kwargs)  # type: ignore[arg-type]
    breaker.add_listener(lambda old, new: transitions.append((old, new)))
    return breaker


# -- the plan's two tests, with an injected clock instead of sleep ------------------------------


def test_circuit_opens_after_threshold() -> None:
    """Three failures open the breaker, and the next call is refused with CircuitOpenError."""
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock())

    def raise_value_error() -> str:
        raise ValueError

    for _ in range(3):
        with pytest.raises(ValueError):
            breaker.call(raise_value_error)

    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "test")


def test_circuit_recovery(clock: FakeClock) -> None:
    """After the timeout, two successful probes close an open breaker."""
    breaker = CircuitBreaker(failure_threshold=2, timeout=60, success_threshold=2, clock=clock)

    def raise_value_error() -> str:
        raise ValueError

    for _ in range(2):
        with pytest.raises(ValueError):
            breaker.call(raise_value_error)

    clock.advance(60)
    assert breaker.call(lambda: "success1") == "success1"
    assert breaker.call(lambda: "success2") == "success2"

    assert breaker.state == CircuitState.CLOSED


# -- every transition ----------------------------------------------------------------------


def test_closed_opens_at_threshold_and_records_opened_at(clock: FakeClock) -> None:
    """Failures below the threshold keep it CLOSED; the threshold-th opens it at that instant."""
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    trip(breaker, 2)
    assert (breaker.state, breaker.failure_count) == (CLOSED, 2)
    clock.advance(7)
    trip(breaker, 1)
    assert (breaker.state, breaker.failure_count) == (OPEN, 3)
    assert breaker.snapshot().opened_at == 7.0


def test_success_in_closed_clears_failure_count(clock: FakeClock) -> None:
    """A success in CLOSED resets the consecutive-failure count, so failures must be consecutive."""
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    trip(breaker, 2)
    assert breaker.call(ok) == "ok"
    assert breaker.failure_count == 0
    trip(breaker, 2)
    assert breaker.state is CLOSED


def test_open_rejects_until_timeout_then_next_call_probes(clock: FakeClock) -> None:
    """OPEN refuses calls until `timeout` seconds pass; then the next call runs as the probe."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=60, clock=clock)
    trip(breaker, 1)
    clock.advance(59.5)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert breaker.state is OPEN
    clock.advance(0.5)
    assert breaker.state is OPEN  # the move to HALF_OPEN happens on the next call
    assert breaker.call(ok) == "ok"
    assert (breaker.state, breaker.success_count) == (HALF_OPEN, 1)


def test_half_open_closes_after_success_threshold(clock: FakeClock) -> None:
    """`success_threshold` consecutive successful probes close the breaker and clear its counts."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=10, success_threshold=3, clock=clock)
    trip(breaker, 1)
    clock.advance(10)
    for expected in (1, 2):
        breaker.call(ok)
        assert (breaker.state, breaker.success_count) == (HALF_OPEN, expected)
    breaker.call(ok)
    assert (breaker.state, breaker.failure_count, breaker.success_count) == (CLOSED, 0, 0)


def test_half_open_failure_reopens_with_fresh_timeout(clock: FakeClock) -> None:
    """A failed probe reopens the breaker, and the timeout counts again from that failure."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=60, success_threshold=2, clock=clock)
    trip(breaker, 1)
    clock.advance(60)
    breaker.call(ok)
    clock.advance(5)
    trip(breaker, 1)
    assert (breaker.state, breaker.failure_count, breaker.success_count) == (OPEN, 2, 0)
    assert breaker.snapshot().opened_at == 65.0
    clock.advance(59)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(1)
    assert breaker.call(ok) == "ok"
    assert breaker.state is HALF_OPEN


def test_every_transition_bumps_the_generation(clock: FakeClock) -> None:
    """Each transition, and each reset, starts a new generation; plain calls do not."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=1, success_threshold=1, clock=clock)
    breaker.call(ok)
    assert breaker.generation == 0
    trip(breaker, 1)  # CLOSED -> OPEN
    clock.advance(1)
    breaker.call(ok)  # OPEN -> HALF_OPEN -> CLOSED
    breaker.reset()
    assert breaker.generation == 4


def test_reset_forces_closed_and_starts_a_generation(
    clock: FakeClock, transitions: list[tuple[CircuitState, CircuitState]]
) -> None:
    """reset() closes an open breaker with zero counts; on a closed one it notifies nobody."""
    breaker = breaker_with(clock, transitions, failure_threshold=2)
    trip(breaker, 2)
    breaker.reset()
    assert (breaker.state, breaker.failure_count) == (CLOSED, 0)
    generation = breaker.generation
    breaker.reset()
    assert breaker.generation == generation + 1
    assert transitions == [(CLOSED, OPEN), (OPEN, CLOSED)]


# -- D1, D2: nothing runs while OPEN; rejections are not failures ------------------------------


def test_d1_no_call_is_attempted_while_open(clock: FakeClock) -> None:
    """While OPEN the protected function is never invoked and each refusal is counted."""
    breaker = CircuitBreaker(failure_threshold=3, timeout=60, clock=clock, name="reset")
    trip(breaker, 3)
    calls: list[int] = []

    def reset_step() -> str:
        calls.append(1)
        return "ran"

    for _ in range(5):
        with pytest.raises(CircuitOpenError) as raised:
            breaker.call(reset_step)
        clock.advance(10)
    assert calls == []
    assert breaker.total_rejections == 5
    assert str(raised.value) == "circuit breaker 'reset' is open after 3 failure(s)"


def test_d2_excluded_exceptions_propagate_but_do_not_count(clock: FakeClock) -> None:
    """An excluded exception (a rejected reading) propagates but neither counts nor clears."""
    breaker = CircuitBreaker(failure_threshold=2, clock=clock, exclude=(RejectedReading,))

    def reject() -> str:
        raise RejectedReading("outlier")

    trip(breaker, 1)
    for _ in range(10):
        with pytest.raises(RejectedReading):
            breaker.call(reject)
    assert (breaker.state, breaker.failure_count, breaker.total_failures) == (CLOSED, 1, 1)
    assert breaker.total_successes == 0


def test_base_exceptions_are_neutral(clock: FakeClock) -> None:
    """KeyboardInterrupt inside a call propagates and is neither a failure nor a success."""
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert (breaker.state, breaker.total_failures, breaker.total_successes) == (CLOSED, 0, 0)


def test_neutral_probe_frees_the_slot_without_counting(clock: FakeClock) -> None:
    """A probe ending in an excluded exception frees the slot but is not a successful probe."""
    breaker = CircuitBreaker(
        failure_threshold=1, timeout=1, success_threshold=1, clock=clock, exclude=(RejectedReading,)
    )
    trip(breaker, 1)
    clock.advance(1)

    def reject() -> str:
        raise RejectedReading("bad input")

    with pytest.raises(RejectedReading):
        breaker.call(reject)
    assert (breaker.state, breaker.success_count) == (HALF_OPEN, 0)
    assert breaker.snapshot().probe_started_at is None
    assert breaker.call(ok) == "ok"
    assert breaker.state is CLOSED


def test_is_failure_predicate() -> None:
    """is_failure accepts ordinary exceptions and refuses excluded ones and BaseExceptions."""
    breaker = CircuitBreaker(clock=FakeClock(), exclude=(RejectedReading, KeyError))
    assert breaker.is_failure(Boom())
    assert breaker.is_failure(ValueError())
    assert not breaker.is_failure(RejectedReading())
    assert not breaker.is_failure(KeyError("unknown user"))
    assert not breaker.is_failure(KeyboardInterrupt())


# -- D3: half-open stampede ------------------------------------------------------------------


def test_d3_half_open_stampede_runs_exactly_one_probe(clock: FakeClock) -> None:
    """Eight threads arriving together after the timeout run it once; seven are refused."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=60, success_threshold=2, clock=clock)
    trip(breaker, 1)
    clock.advance(60)
    threads = 8
    barrier = threading.Barrier(threads)
    all_refused = threading.Event()
    guard = threading.Lock()
    invocations: list[bool] = []
    outcomes: list[str] = []

    def probe() -> str:
        # Hold the probe slot until every other thread has been turned away.
        invocations.append(all_refused.wait(SAFETY))
        return "probed"

    def worker() -> None:
        barrier.wait(SAFETY)
        try:
            outcome = breaker.call(probe)
        except CircuitOpenError:
            outcome = "refused"
        with guard:
            outcomes.append(outcome)
            if outcomes.count("refused") == threads - 1:
                all_refused.set()

    run_threads([threading.Thread(target=worker) for _ in range(threads)])
    assert invocations == [True]
    assert sorted(outcomes) == ["probed"] + ["refused"] * 7
    assert breaker.total_rejections == 7
    assert (breaker.state, breaker.success_count) == (HALF_OPEN, 1)


def test_half_open_refuses_while_the_probe_runs(clock: FakeClock) -> None:
    """A call arriving while a probe runs (within probe_timeout) is refused at once."""
    breaker = CircuitBreaker(
        failure_threshold=1, timeout=1, success_threshold=1, clock=clock, probe_timeout=5
    )
    trip(breaker, 1)
    clock.advance(1)
    refused: list[str] = []

    def probe() -> str:
        clock.advance(5)  # exactly probe_timeout: not yet longer than it
        with pytest.raises(CircuitOpenError) as raised:
            breaker.call(ok)
        refused.append(str(raised.value))
        return "probed"

    assert breaker.call(probe) == "probed"
    assert refused == ["circuit breaker 'reset' is open after 1 failure(s)"]
    assert breaker.state is CLOSED


# -- D4: late results from older generations -------------------------------------------------


def test_d4_late_success_does_not_close_open_breaker(clock: FakeClock) -> None:
    """A success from a call admitted before the breaker opened leaves it OPEN."""
    breaker = CircuitBreaker(failure_threshold=2, clock=clock)

    def slow_reset() -> str:
        trip(breaker, 2)  # while this reset runs, two others fail and open the breaker
        assert breaker.state is OPEN
        return "late"

    assert breaker.call(slow_reset) == "late"
    assert (breaker.state, breaker.failure_count) == (OPEN, 2)
    assert (breaker.total_successes, breaker.total_stale) == (1, 1)


def test_d4_late_success_is_not_a_probe_success(clock: FakeClock) -> None:
    """A late success arriving in HALF_OPEN is not counted toward closing the breaker."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=1, success_threshold=2, clock=clock)

    def slow_reset() -> str:
        trip(breaker, 1)
        clock.advance(1)
        breaker.call(ok)  # first real probe
        return "late"

    breaker.call(slow_reset)
    assert (breaker.state, breaker.success_count) == (HALF_OPEN, 1)


def test_d4_late_failure_does_not_reopen_a_recovered_breaker(clock: FakeClock) -> None:
    """A failure from a call admitted before a recovery leaves the fresh CLOSED breaker alone."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=1, success_threshold=1, clock=clock)

    def slow_failing_reset() -> str:
        trip(breaker, 1)
        clock.advance(1)
        breaker.call(ok)  # recovered
        assert breaker.state is CLOSED
        raise Boom("late")

    with pytest.raises(Boom):
        breaker.call(slow_failing_reset)
    assert (breaker.state, breaker.failure_count) == (CLOSED, 0)
    assert (breaker.total_failures, breaker.total_stale) == (2, 1)


def test_outcomes_from_before_reset_are_stale(clock: FakeClock) -> None:
    """A failure from a call admitted before an operator reset does not count after it."""
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)

    def failing_across_reset() -> str:
        breaker.reset()
        raise Boom("from before the reset")

    with pytest.raises(Boom):
        breaker.call(failing_across_reset)
    assert (breaker.state, breaker.failure_count, breaker.total_stale) == (CLOSED, 0, 1)


# -- D5: hung probes ---------------------------------------------------------------------------


def test_d5_hung_probe_times_out_and_next_call_reopens(
    clock: FakeClock, transitions: list[tuple[CircuitState, CircuitState]]
) -> None:
    """A probe running past probe_timeout counts as failed: the next caller reopens the breaker."""
    breaker = breaker_with(
        clock, transitions, failure_threshold=1, timeout=60, success_threshold=1, probe_timeout=5
    )
    trip(breaker, 1)
    clock.advance(60)
    started, release = threading.Event(), threading.Event()
    results: list[str] = []

    def hung_reset() -> str:
        started.set()
        release.wait(SAFETY)
        return "late"

    prober = threading.Thread(target=lambda: results.append(breaker.call(hung_reset)))
    prober.start()
    assert started.wait(SAFETY)
    assert breaker.state is HALF_OPEN
    clock.advance(6)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert (breaker.state, breaker.failure_count, breaker.total_probe_timeouts) == (OPEN, 2, 1)
    assert breaker.snapshot().opened_at == 66.0

    release.set()
    prober.join(SAFETY)
    assert results == ["late"]
    assert (breaker.state, breaker.total_stale) == (OPEN, 1)  # the late success changed nothing

    clock.advance(60)  # never stuck: the next probe recovers
    assert breaker.call(ok) == "ok"
    assert breaker.state is CLOSED
    assert transitions == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_d5_probe_returning_after_probe_timeout_reopens(clock: FakeClock) -> None:
    """A probe that succeeds only after outliving probe_timeout still counts as a failed probe."""
    breaker = CircuitBreaker(
        failure_threshold=1, timeout=1, success_threshold=1, clock=clock, probe_timeout=5
    )
    trip(breaker, 1)
    clock.advance(1)

    def slow_probe() -> str:
        clock.advance(5.5)
        return "too slow"

    assert breaker.call(slow_probe) == "too slow"
    assert (breaker.state, breaker.total_probe_timeouts, breaker.total_successes) == (OPEN, 1, 1)


# -- D6: exact counts under concurrency ---------------------------------------------------------


def test_d6_concurrent_failures_are_counted_exactly(clock: FakeClock) -> None:
    """Three threads each failing 500 times leave exactly 1,500 failures counted."""
    breaker = CircuitBreaker(failure_threshold=10_000, clock=clock)
    barrier = threading.Barrier(3)

    def worker() -> None:
        barrier.wait(SAFETY)
        for _ in range(500):
            with contextlib.suppress(Boom):
                breaker.call(fail)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        run_threads([threading.Thread(target=worker) for _ in range(3)])
    finally:
        sys.setswitchinterval(interval)
    assert (breaker.total_failures, breaker.failure_count) == (1500, 1500)
    assert breaker.state is CLOSED


# -- D8: storage ---------------------------------------------------------------------------------


class BrokenStorage:
    """A breaker storage whose every method raises."""

    def __init__(self) -> None:
        self.attempts = 0

    def load(self, name: str) -> BreakerRecord | None:
        self.attempts += 1
        raise OSError("breaker store unavailable")

    def save(self, name: str, record: BreakerRecord) -> None:
        self.attempts += 1
        raise OSError("breaker store unavailable")


@dataclass
class FlakyStorage:
    """An in-memory breaker storage whose saves raise while `down` is set."""

    down: bool = False
    inner: MemoryBreakerStorage = field(default_factory=MemoryBreakerStorage)

    def load(self, name: str) -> BreakerRecord | None:
        return self.inner.load(name)

    def save(self, name: str, record: BreakerRecord) -> None:
        if self.down:
            raise OSError("breaker store unavailable")
        self.inner.save(name, record)


def test_d8_failing_storage_never_reaches_the_caller(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With a storage that always raises, calls, transitions and recovery work from memory."""
    storage = BrokenStorage()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    breaker = CircuitBreaker(
        failure_threshold=2, timeout=1, success_threshold=1, clock=clock, storage=storage
    )
    assert breaker.call(ok) == "ok"
    trip(breaker, 2)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(1)
    assert breaker.call(ok) == "ok"
    assert breaker.state is CLOSED
    assert breaker.storage_errors == storage.attempts > 5
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # logged once per outage, not once per call
    assert "carrying on from the in-memory state" in errors[0].getMessage()


def test_d8_storage_outage_and_recovery_are_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A storage outage is logged once, repeats go to debug, and its end is logged too."""
    storage = FlakyStorage()
    breaker = CircuitBreaker(failure_threshold=5, clock=clock, storage=storage)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    storage.down = True
    trip(breaker, 2)
    storage.down = False
    trip(breaker, 1)
    levels = [r.levelno for r in caplog.records if r.name == LOGGER]
    assert levels == [logging.ERROR, logging.DEBUG, logging.WARNING]
    assert storage.load("reset") == breaker.snapshot()
    assert breaker.failure_count == 3


def test_storage_is_written_through_per_breaker_name(clock: FakeClock) -> None:
    """Every change is saved under the breaker's name; two breakers share a storage safely."""
    storage = MemoryBreakerStorage()
    resets = CircuitBreaker(failure_threshold=1, clock=clock, storage=storage, name="reset")
    other = CircuitBreaker(clock=clock, storage=storage, name="recovery")
    trip(resets, 1)
    other.call(ok)
    assert storage.load("reset") == resets.snapshot()
    assert storage.load("recovery") == other.snapshot()
    assert resets.snapshot().state is OPEN and other.state is CLOSED


@pytest.mark.parametrize("stored_state", [OPEN, HALF_OPEN])
def test_restored_non_closed_breaker_restarts_open_with_full_timeout(
    stored_state: CircuitState,
) -> None:
    """A stored OPEN or HALF_OPEN record restarts OPEN, timed from this process's clock."""
    storage = MemoryBreakerStorage()
    storage.save(
        "reset",
        BreakerRecord(
            state=stored_state,
            failure_count=3,
            success_count=1,
            opened_at=98_765.0,  # another process's monotonic clock: meaningless here
            probe_started_at=98_800.0 if stored_state is HALF_OPEN else None,
            generation=4,
            total_failures=3,
        ),
    )
    clock = FakeClock(monotonic_start=100.0)
    breaker = CircuitBreaker(timeout=60, clock=clock, storage=storage)
    record = breaker.snapshot()
    assert (record.state, record.generation, record.opened_at) == (OPEN, 5, 100.0)
    assert (record.failure_count, record.success_count, record.total_failures) == (3, 0, 3)
    assert record.probe_started_at is None
    clock.advance(59)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(1)
    assert breaker.call(ok) == "ok"


def test_restored_closed_breaker_keeps_its_counts(clock: FakeClock) -> None:
    """A stored CLOSED record is taken as is: two stored failures plus one more open it."""
    storage = MemoryBreakerStorage()
    storage.save("reset", BreakerRecord(failure_count=2, generation=7, total_failures=9))
    breaker = CircuitBreaker(failure_threshold=3, clock=clock, storage=storage)
    assert (breaker.generation, breaker.total_failures) == (7, 9)
    trip(breaker, 1)
    assert breaker.state is OPEN


# -- listeners ---------------------------------------------------------------------------------


def test_listeners_get_every_transition_in_order(
    clock: FakeClock, transitions: list[tuple[CircuitState, CircuitState]]
) -> None:
    """A listener sees each transition once, in order, with the new state already in place."""
    breaker = breaker_with(clock, transitions, failure_threshold=1, timeout=1, success_threshold=2)
    seen_state: list[CircuitState] = []
    breaker.add_listener(lambda old, new: seen_state.append(breaker.state))
    trip(breaker, 1)
    clock.advance(1)
    trip(breaker, 1)  # failed probe
    clock.advance(1)
    breaker.call(ok)
    breaker.call(ok)
    trip(breaker, 1)
    breaker.reset()
    assert transitions == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (CLOSED, OPEN),
        (OPEN, CLOSED),
    ]
    assert seen_state == [new for _, new in transitions]
    assert all(isinstance(state, str) for pair in transitions for state in pair)


def test_raising_listener_is_logged_and_ignored(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises does not stop the call, the transition or the other listeners."""
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    later: list[CircuitState] = []

    def broken(old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("metrics backend down")

    breaker.add_listener(broken)
    breaker.add_listener(lambda old, new: later.append(new))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        trip(breaker, 1)
    assert breaker.state is OPEN
    assert later == [OPEN]
    assert ["listener" in r.getMessage() for r in caplog.records] == [True]


# -- configuration and small API -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"success_threshold": 0},
        {"timeout": -1},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"probe_timeout": 0},
        {"probe_timeout": float("nan")},
        {"exclude": (ValueError, "not a type")},
        {"exclude": (int,)},
    ],
)
def test_degenerate_configuration_is_refused(kwargs: dict[str, object]) -> None:
    """Thresholds below 1, bad timeouts and non-exception excludes raise ConfigError."""
    with pytest.raises(ConfigError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_breaker_describes_itself(clock: FakeClock) -> None:
    """name, configuration and repr show what the breaker is and where it stands."""
    breaker = CircuitBreaker(4, 30, 2, clock=clock, probe_timeout=9, name="resets-eu")
    assert (breaker.name, breaker.failure_threshold, breaker.timeout) == ("resets-eu", 4, 30)
    assert (breaker.success_threshold, breaker.probe_timeout, breaker.exclude) == (2, 9, ())
    assert repr(breaker) == "<CircuitBreaker 'resets-eu' closed failures=0 generation=0>"


def test_call_passes_arguments_through(clock: FakeClock) -> None:
    """Positional and keyword arguments reach the function and its result comes back."""
    breaker = CircuitBreaker(clock=clock)

    def combine(a: int, b: int, *, scale: int) -> int:
        return (a + b) * scale

    assert breaker.call(combine, 1, 2, scale=10) == 30


def test_fake_clock_moves_only_forward() -> None:
    """FakeClock moves wall and monotonic time together, never back, and refuses naive time."""
    clock = FakeClock(datetime(2024, 2, 29, 12, tzinfo=UTC), monotonic_start=5.0)
    clock.advance(0)
    clock.advance(1.5)
    assert clock.now() == datetime(2024, 2, 29, 12, 0, 1, 500000, tzinfo=UTC)
    assert clock.monotonic() == 6.5
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            clock.advance(bad)
    with pytest.raises(ValueError):
        FakeClock(datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        FakeClock(monotonic_start=float("nan"))


def test_fake_clock_is_thread_safe() -> None:
    """Four threads advancing a FakeClock 1,000 times each move it exactly 4,000 seconds."""
    clock = FakeClock()
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait(SAFETY)
        for _ in range(1000):
            clock.advance(1)

    run_threads([threading.Thread(target=worker) for _ in range(4)])
    assert clock.monotonic() == 4000.0


# -- the breaker against a reference model ---------------------------------------------------

Outcome = Literal["success", "failure", "excluded"]


@dataclass
class ModelBreaker:
    """The breaker's rules written as plainly as possible, for one caller at a time."""

    failure_threshold: int
    timeout: float
    success_threshold: int
    probe_timeout: float | None
    state: CircuitState = CLOSED
    failures: int = 0
    successes: int = 0
    opened_at: float = 0.0
    now: float = 0.0
    total_successes: int = 0
    total_failures: int = 0
    total_rejections: int = 0
    total_probe_timeouts: int = 0
    transitions: list[tuple[CircuitState, CircuitState]] = field(default_factory=list)

    def move(self, new: CircuitState) -> None:
        self.transitions.append((self.state, new))
        self.state = new
        if new is OPEN:
            self.opened_at, self.successes = self.now, 0
        elif new is CLOSED:
            self.failures = self.successes = 0

    def call(self, outcome: Outcome, duration: float) -> str:
        if self.state is OPEN:
            if self.now - self.opened_at < self.timeout:
                self.total_rejections += 1
                return "rejected"
            self.move(HALF_OPEN)
        started = self.now
        self.now += duration
        self.total_successes += outcome == "success"
        self.total_failures += outcome == "failure"
        if self.state is CLOSED:
            if outcome == "success":
                self.failures = 0
            elif outcome == "failure":
                self.failures += 1
                if self.failures >= self.failure_threshold:
                    self.move(OPEN)
        elif self.probe_timeout is not None and self.now - started > self.probe_timeout:
            self.failures += 1
            self.total_probe_timeouts += 1
            self.move(OPEN)
        elif outcome == "failure":
            self.failures += 1
            self.move(OPEN)
        elif outcome == "success":
            self.successes += 1
            if self.successes >= self.success_threshold:
                self.move(CLOSED)
        return outcome

    def reset(self) -> None:
        if self.state is not CLOSED:
            self.move(CLOSED)
        self.failures = self.successes = 0


@settings(max_examples=100, stateful_step_count=40, deadline=None)
class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of calls, clock steps and resets: the breaker must match the model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.seen: list[tuple[CircuitState, CircuitState]] = []
        self.breaker: CircuitBreaker | None = None
        self.model: ModelBreaker | None = None

    @initialize(
        failure_threshold=st.integers(1, 4),
        timeout=st.sampled_from([0.0, 1.0, 30.0, 60.0]),
        success_threshold=st.integers(1, 3),
        probe_timeout=st.sampled_from([None, 0.5, 5.0]),
    )
    def build(
        self,
        failure_threshold: int,
        timeout: float,
        success_threshold: int,
        probe_timeout: float | None,
    ) -> None:
        self.breaker = CircuitBreaker(
            failure_threshold,
            timeout,
            success_threshold,
            clock=self.clock,
            probe_timeout=probe_timeout,
            exclude=(RejectedReading,),
        )
        self.breaker.add_listener(lambda old, new: self.seen.append((old, new)))
        self.model = ModelBreaker(failure_threshold, timeout, success_threshold, probe_timeout)

    def parts(self) -> tuple[CircuitBreaker, ModelBreaker]:
        assert self.breaker is not None and self.model is not None
        return self.breaker, self.model

    @rule(
        outcome=st.sampled_from(["success", "failure", "excluded"]),
        duration=st.sampled_from([0.0, 0.5, 1.0, 10.0]),
    )
    def call(self, outcome: Outcome, duration: float) -> None:
        breaker, model = self.parts()

        def reset_step() -> str:
            self.clock.advance(duration)
            if outcome == "failure":
                raise Boom
            if outcome == "excluded":
                raise RejectedReading
            return "success"

        expected = model.call(outcome, duration)
        try:
            got = breaker.call(reset_step)
        except CircuitOpenError:
            got = "rejected"
        except Boom:
            got = "failure"
        except RejectedReading:
            got = "excluded"
        assert got == expected

    @rule(seconds=st.sampled_from([0.5, 1.0, 29.0, 30.0, 60.0]))
    def advance(self, seconds: float) -> None:
        _, model = self.parts()
        self.clock.advance(seconds)
        model.now += seconds

    @rule()
    def reset(self) -> None:
        breaker, model = self.parts()
        breaker.reset()
        model.reset()

    @invariant()
    def agrees_with_model(self) -> None:
        if self.breaker is None or self.model is None:
            return
        breaker, model = self.breaker, self.model
        assert breaker.state is model.state
        assert (breaker.failure_count, breaker.success_count) == (model.failures, model.successes)
        assert breaker.total_successes == model.total_successes
        assert breaker.total_failures == model.total_failures
        assert breaker.total_rejections == model.total_rejections
        assert breaker.total_probe_timeouts == model.total_probe_timeouts
        assert breaker.total_stale == 0  # one caller at a time: nothing can be late
        assert self.seen == model.transitions
        if model.state is OPEN:
            assert breaker.snapshot().opened_at == model.opened_at


TestBreakerAgainstModel = BreakerMachine.TestCase
