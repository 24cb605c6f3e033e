"""The reset circuit breaker: stop attempting resets while they keep failing.

A :class:`CircuitBreaker` wraps the reset operation. While resets succeed it is CLOSED and
every call runs. After ``failure_threshold`` consecutive failures it OPENs: calls raise
:class:`~weightstream.errors.CircuitOpenError` at once, without running, and the caller falls
back (last known good state). Once ``timeout`` seconds of the injected clock have passed, the
next call becomes the one probe of the HALF_OPEN state; ``success_threshold`` consecutive
successful probes close the breaker again, one failed probe reopens it with a fresh timeout.

State machine (the only place transitions happen is :meth:`CircuitBreaker._transition`, which
reads ``_TRANSITIONS``)::

    from       event                               to         effect
    CLOSED     failure_count reaches threshold     OPEN       opened_at = now
    OPEN       a call after ``timeout`` elapsed    HALF_OPEN  that call is the probe
    HALF_OPEN  the probe fails                     OPEN       fresh timeout
    HALF_OPEN  the probe outlives probe_timeout    OPEN       fresh timeout
    HALF_OPEN  success_threshold probes succeed    CLOSED     counts cleared
    any        reset() (operator)                  CLOSED     counts cleared

Every transition bumps ``generation``. A call remembers the generation it was admitted in; when
its outcome arrives in a later generation, the outcome is *stale* and changes no state:

* a late success from before the breaker opened cannot close it (or clear a count);
* a late failure from before a recovery cannot re-open the freshly closed breaker;
* a stale outcome is still counted where it belongs, in ``total_successes`` or
  ``total_failures``, and also in ``total_stale``; it never touches ``failure_count`` /
  ``success_count``, which only describe the current generation.

The totals count what the protected function did, whatever the generation:
``total_failures`` is the number of calls that raised a breaker failure, ``total_successes``
the number that returned, ``total_rejections`` the number refused with ``CircuitOpenError``,
``total_probe_timeouts`` the number of probes written off for outliving ``probe_timeout``. A
written-off probe is *not* in ``total_failures`` until (and unless) it actually raises.

What counts as a failure: an :class:`Exception` that :meth:`CircuitBreaker.is_failure` accepts,
i.e. not an instance of one of the ``exclude`` types (a rejected reading, bad input). Excluded
exceptions and non-``Exception`` ``BaseException``s (``KeyboardInterrupt``) propagate unchanged
and are neutral: they neither count as a failure nor clear the count; a neutral probe frees the
probe slot without counting as a successful probe.

Probe timeout: with ``probe_timeout`` set, a probe that has run longer than that (by the
injected clock) is treated as failed. The next caller to arrive sees the slot expired and moves
the breaker back to OPEN with a fresh timeout (that caller is refused), so a hung reset cannot
keep the breaker in HALF_OPEN; if the probe itself returns late and nobody has noticed yet,
the same rule applies when it returns. Either way its own result is then ignored. Without a
``probe_timeout`` a probe that never returns keeps the breaker HALF_OPEN (refusing calls)
until :meth:`CircuitBreaker.reset`; set one in production.

Threads: one :class:`threading.Lock` guards the state and is never held while the protected
function runs, so calls in CLOSED run concurrently and counts stay exact. In HALF_OPEN exactly
one probe runs at a time; concurrent callers are refused immediately, they do not wait.

Listeners (metrics, logs) are callables ``(old, new) -> None``, called once per transition in
order, outside the state lock (a listener may read the breaker). A listener that raises is
logged and ignored: observability never breaks ingestion. Listeners should be quick (a slow
one delays the caller that triggered the transition) and must not call :meth:`~CircuitBreaker.call`.
:meth:`weightstream.observe.Observer.breaker_changed` fits the signature as is.

Storage and scope: **the breaker state is per process.** Each worker has its own breaker and
its own :class:`MemoryBreakerStorage` unless given another :class:`BreakerStorage`. The breaker
works from its in-memory :class:`BreakerRecord`; it reads the storage once, at construction,
and writes every change through to it (under the state lock, so an adapter must be fast). A
shared adapter therefore gives persistence across restarts and visibility to other processes,
not one breaker shared live by several workers: that would need the store consulted on every
call, and ``opened_at`` is a reading of this process's monotonic clock, meaningless to another
process. For the same reason a restored record that is not CLOSED restarts as OPEN with a full
fresh timeout. If the storage raises (load or save), the breaker fails safe: it logs the error
(once per outage, then at debug level), counts it in ``storage_errors``, carries on from its
in-memory copy, and never lets the storage error reach the caller (RELIABILITY.md D8).

Why hand-written rather than pybreaker: checked against pybreaker's own source
(``src/pybreaker/__init__.py`` of the 1.x line on its main branch) and tests, it

* reads the wall clock (``datetime.now(UTC)`` when it opens and when it checks the reset
  timeout) and takes no clock, so its tests ``sleep()`` through real timeouts;
* runs ``CircuitBreaker.call`` entirely under one lock, protected function included, so calls
  are serialised and one hung call blocks every other caller instead of being refused;
* has no generation guard: an outcome is applied when it arrives, so with shared (Redis)
  storage a late success can clear the counter or close a circuit that was opened since;
* has no probe timeout, closes on the first successful trial call (no success threshold), and
  handles an excluded exception as a success (it clears the failure counter).

Its shape (state names, listeners, a storage protocol) is kept; its clock and locking are not.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, ParamSpec, Protocol, TypeVar

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.errors import CircuitOpenError, ConfigError
from weightstream.frozen import fast_init

__all__ = [
    "BreakerRecord",
    "BreakerStorage",
    "CircuitBreaker",
    "CircuitState",
    "Listener",
    "MemoryBreakerStorage",
]

_log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


class CircuitState(StrEnum):
    """Where the breaker is. A ``str``, so it can go straight into logs and metric labels."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Called as ``listener(old, new)`` after each transition.
Listener = Callable[[CircuitState, CircuitState], None]


@fast_init
@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """Everything a breaker knows, as one value; what :class:`BreakerStorage` stores.

    ``opened_at`` and ``probe_started_at`` are readings of the owning process's
    ``clock.monotonic()``; ``probe_started_at`` is ``None`` when no probe is running.
    """

    state: CircuitState = CircuitState.CLOSED
    failure_count: int = 0
    success_count: int = 0
    opened_at: float | None = None
    probe_started_at: float | None = None
    generation: int = 0
    total_successes: int = 0
    total_failures: int = 0
    total_rejections: int = 0
    total_probe_timeouts: int = 0
    total_stale: int = 0


class BreakerStorage(Protocol):
    """Where a breaker's :class:`BreakerRecord` is kept, keyed by breaker name.

    ``load`` is called once when a breaker is built; ``save`` after every change, with the
    breaker's lock held. Either may raise: the breaker logs it and carries on.
    """

    def load(self, name: str) -> BreakerRecord | None:
        """The stored record for breaker ``name``, or ``None`` if there is none."""
        ...

    def save(self, name: str, record: BreakerRecord) -> None:
        """Replace the stored record for breaker ``name``."""
        ...


class MemoryBreakerStorage:
    """The default storage: a dict in this process. Thread-safe; may serve several breakers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, BreakerRecord] = {}

    def load(self, name: str) -> BreakerRecord | None:
        with self._lock:
            return self._records.get(name)

    def save(self, name: str, record: BreakerRecord) -> None:
        with self._lock:
            self._records[name] = record


class _Event(Enum):
    THRESHOLD_REACHED = "failure threshold reached"
    TIMEOUT_ELAPSED = "open timeout elapsed"
    PROBE_FAILED = "probe failed"
    PROBE_TIMED_OUT = "probe outlived probe_timeout"
    PROBES_SUCCEEDED = "success threshold reached"
    RESET = "reset by operator"


_C, _O, _H = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

#: The whole state machine. A pair missing here is a bug, not a state the breaker can reach.
_TRANSITIONS: Final[dict[tuple[CircuitState, _Event], CircuitState]] = {
    (_C, _Event.THRESHOLD_REACHED): _O,
    (_O, _Event.TIMEOUT_ELAPSED): _H,
    (_H, _Event.PROBE_FAILED): _O,
    (_H, _Event.PROBE_TIMED_OUT): _O,
    (_H, _Event.PROBES_SUCCEEDED): _C,
    (_C, _Event.RESET): _C,
    (_O, _Event.RESET): _C,
    (_H, _Event.RESET): _C,
}


class _Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


def _closed_success(r: BreakerRecord) -> BreakerRecord:
    """``r`` after a successful call in CLOSED: counted, the failure count cleared.

    The same record as ``replace(r, total_successes=..., failure_count=0)``, built directly:
    it is made once per reset, and ``dataclasses.replace`` costs three times as much.
    """
    return BreakerRecord(
        r.state,
        0,
        r.success_count,
        r.opened_at,
        r.probe_started_at,
        r.generation,
        r.total_successes + 1,
        r.total_failures,
        r.total_rejections,
        r.total_probe_timeouts,
        r.total_stale,
    )


class CircuitBreaker:
    """Guard a failing operation: refuse to run it while it keeps failing, probe for recovery.

    ``failure_threshold`` consecutive failures open the breaker; after ``timeout`` seconds one
    probe call is let through; ``success_threshold`` consecutive successful probes close it.
    See the module docstring for the state table, generations, counters and storage.

    >>> from weightstream.testing import FakeClock
    >>> clock = FakeClock()
    >>> breaker = CircuitBreaker(failure_threshold=1, timeout=60, clock=clock)
    >>> breaker.call(int, "1"), breaker.state
    (1, <CircuitState.CLOSED: 'closed'>)
    >>> breaker.call(int, "x")
    Traceback (most recent call last):
    ...
    ValueError: invalid literal for int() with base 10: 'x'
    >>> breaker.call(int, "2")
    Traceback (most recent call last):
    ...
    weightstream.errors.CircuitOpenError: circuit breaker 'reset' is open after 1 failure(s)
    >>> clock.advance(60)
    >>> breaker.call(int, "3"), breaker.state
    (3, <CircuitState.HALF_OPEN: 'half_open'>)
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        timeout: float = 60,
        success_threshold: int = 2,
        *,
        clock: Clock = SYSTEM_CLOCK,
        probe_timeout: float | None = None,
        name: str = "reset",
        storage: BreakerStorage | None = None,
        exclude: tuple[type[BaseException], ...] = (),
    ) -> None:
        if failure_threshold < 1 or success_threshold < 1:
            raise ConfigError("breaker failure_threshold and success_threshold must be >= 1")
        if not math.isfinite(timeout) or timeout < 0:
            raise ConfigError("breaker timeout must be a finite number of seconds >= 0")
        if probe_timeout is not None and not (math.isfinite(probe_timeout) and probe_timeout > 0):
            raise ConfigError("breaker probe_timeout must be None or a finite number > 0")
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in exclude):
            raise ConfigError("breaker exclude must be a tuple of exception types")
        #: Configuration, read at every decision; treat as read-only.
        self.failure_threshold = failure_threshold
        self.timeout = timeout
        self.success_threshold = success_threshold
        self.probe_timeout = probe_timeout
        self.exclude = exclude
        self._name = name
        self._clock = clock
        self._storage: BreakerStorage = storage if storage is not None else MemoryBreakerStorage()
        self._lock = threading.Lock()
        self._deliver_lock = threading.RLock()
        self._pending: deque[tuple[CircuitState, CircuitState]] = deque()
        self._listeners: tuple[Listener, ...] = ()
        self._storage_failing = False
        self._storage_errors = 0
        with self._lock:
            self._record = BreakerRecord()
            self._commit(self._restore(self._load()))

    # -- reading -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The breaker's name: in log lines, in ``CircuitOpenError`` and as the storage key."""
        return self._name

    @property
    def state(self) -> CircuitState:
        """The current state. An OPEN breaker whose timeout has passed reads OPEN until the
        next call probes."""
        return self._record.state

    @property
    def failure_count(self) -> int:
        """Failures since the breaker last closed (a success in CLOSED clears it)."""
        return self._record.failure_count

    @property
    def success_count(self) -> int:
        """Successful probes in the current HALF_OPEN period."""
        return self._record.success_count

    @property
    def generation(self) -> int:
        """Bumped by every transition (and by :meth:`reset`)."""
        return self._record.generation

    @property
    def total_successes(self) -> int:
        """Calls whose function returned, whatever generation they finished in."""
        return self._record.total_successes

    @property
    def total_failures(self) -> int:
        """Calls whose function raised a breaker failure, whatever generation."""
        return self._record.total_failures

    @property
    def total_rejections(self) -> int:
        """Calls refused with ``CircuitOpenError`` (the function did not run)."""
        return self._record.total_rejections

    @property
    def total_probe_timeouts(self) -> int:
        """Probes written off as failed for outliving ``probe_timeout``."""
        return self._record.total_probe_timeouts

    @property
    def total_stale(self) -> int:
        """Outcomes that arrived in a later generation than their call's, so changed no state."""
        return self._record.total_stale

    @property
    def storage_errors(self) -> int:
        """How many times the storage raised (the breaker carried on from memory)."""
        return self._storage_errors

    def snapshot(self) -> BreakerRecord:
        """The whole current record, as one consistent value."""
        return self._record

    def __repr__(self) -> str:
        record = self._record
        return (
            f"<CircuitBreaker {self._name!r} {record.state} "
            f"failures={record.failure_count} generation={record.generation}>"
        )

    # -- acting --------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` after every later transition, in order."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def is_failure(self, exc: BaseException) -> bool:
        """Whether ``exc`` counts against the breaker: an ``Exception`` not in ``exclude``."""
        return isinstance(exc, Exception) and not isinstance(exc, self.exclude)

    def reset(self) -> None:
        """Force the breaker CLOSED with zero counts (an operator action).

        Starts a new generation even when already CLOSED, so outcomes of calls admitted before
        the reset are stale and cannot count toward the fresh start.
        """
        with self._lock:
            now = self._clock.monotonic()
            self._commit(self._transition(self._record, _Event.RESET, now))
        self._deliver()

    def call(self, func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``func(*args, **kwargs)`` under the breaker and return its result.

        Raises :class:`~weightstream.errors.CircuitOpenError` without running ``func`` while
        OPEN (before the timeout) and while another probe is running in HALF_OPEN. Whatever
        ``func`` raises propagates unchanged after being recorded.
        """
        ticket = self._admit()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._settle(ticket, _Outcome.FAILURE if self.is_failure(exc) else _Outcome.NEUTRAL)
            raise
        self._settle(ticket, _Outcome.SUCCESS)
        return result

    # -- internals (the state lock is held wherever a BreakerRecord is replaced) -----------

    def _admit(self) -> int:
        """Let a call run (returning its generation) or refuse it with ``CircuitOpenError``."""
        with self._lock:
            record = self._record
            if record.state is CircuitState.CLOSED:  # the usual case: nothing changes
                return record.generation
            now = self._clock.monotonic()
            ticket: int | None = None
            if record.state is CircuitState.OPEN:
                assert record.opened_at is not None
                if now - record.opened_at >= self.timeout:
                    record = self._transition(record, _Event.TIMEOUT_ELAPSED, now)
                    ticket = record.generation
            elif record.probe_started_at is None:  # HALF_OPEN, probe slot free: this is the probe
                record = dataclasses.replace(record, probe_started_at=now)
                ticket = record.generation
            elif self._probe_expired(record, now):
                record = self._probe_timed_out(record, now)
            if ticket is None:
                record = dataclasses.replace(record, total_rejections=record.total_rejections + 1)
            if record is not self._record:
                self._commit(record)
            failures = record.failure_count
            queued = bool(self._pending)
        if queued:
            self._deliver()
        if ticket is None:
            raise CircuitOpenError(
                f"circuit breaker {self._name!r} is open after {failures} failure(s)"
            )
        return ticket

    def _settle(self, ticket: int, outcome: _Outcome) -> None:
        """Record the outcome of a call admitted in generation ``ticket``."""
        with self._lock:
            record = self._record
            if (
                outcome is _Outcome.SUCCESS
                and ticket == record.generation
                and record.state is CircuitState.CLOSED
            ):  # the usual case, as one new record: counted, failures cleared
                self._commit(_closed_success(record))
                return  # no transition: nothing queued by this call
            now = self._clock.monotonic()
            if outcome is _Outcome.SUCCESS:
                record = dataclasses.replace(record, total_successes=record.total_successes + 1)
            elif outcome is _Outcome.FAILURE:
                record = dataclasses.replace(record, total_failures=record.total_failures + 1)
            if ticket != record.generation:
                record = dataclasses.replace(record, total_stale=record.total_stale + 1)
            elif record.state is CircuitState.CLOSED:
                record = self._settle_closed(record, outcome, now)
            else:
                record = self._settle_probe(record, outcome, now)
            self._commit(record)
            queued = bool(self._pending)
        if queued:
            self._deliver()

    def _settle_closed(self, record: BreakerRecord, outcome: _Outcome, now: float) -> BreakerRecord:
        if outcome is _Outcome.SUCCESS:
            return dataclasses.replace(record, failure_count=0)
        if outcome is _Outcome.NEUTRAL:
            return record
        record = dataclasses.replace(record, failure_count=record.failure_count + 1)
        if record.failure_count >= self.failure_threshold:
            record = self._transition(record, _Event.THRESHOLD_REACHED, now)
        return record

    def _settle_probe(self, record: BreakerRecord, outcome: _Outcome, now: float) -> BreakerRecord:
        # Same generation and not CLOSED: only HALF_OPEN admits calls, and only the probe.
        assert record.state is CircuitState.HALF_OPEN
        if self._probe_expired(record, now):
            return self._probe_timed_out(record, now)
        if outcome is _Outcome.NEUTRAL:
            return dataclasses.replace(record, probe_started_at=None)
        if outcome is _Outcome.FAILURE:
            record = dataclasses.replace(record, failure_count=record.failure_count + 1)
            return self._transition(record, _Event.PROBE_FAILED, now)
        record = dataclasses.replace(
            record, success_count=record.success_count + 1, probe_started_at=None
        )
        if record.success_count >= self.success_threshold:
            record = self._transition(record, _Event.PROBES_SUCCEEDED, now)
        return record

    def _probe_expired(self, record: BreakerRecord, now: float) -> bool:
        return (
            self.probe_timeout is not None
            and record.probe_started_at is not None
            and now - record.probe_started_at > self.probe_timeout
        )

    def _probe_timed_out(self, record: BreakerRecord, now: float) -> BreakerRecord:
        record = dataclasses.replace(
            record,
            failure_count=record.failure_count + 1,
            total_probe_timeouts=record.total_probe_timeouts + 1,
        )
        return self._transition(record, _Event.PROBE_TIMED_OUT, now)

    def _transition(self, record: BreakerRecord, event: _Event, now: float) -> BreakerRecord:
        """The one place the state changes: look ``event`` up, apply the entry effects."""
        old = record.state
        new = _TRANSITIONS[(old, event)]
        generation = record.generation + 1
        if new is CircuitState.OPEN:
            record = dataclasses.replace(
                record,
                state=new,
                generation=generation,
                opened_at=now,
                success_count=0,
                probe_started_at=None,
            )
        elif new is CircuitState.HALF_OPEN:
            record = dataclasses.replace(
                record, state=new, generation=generation, success_count=0, probe_started_at=now
            )
        else:
            record = dataclasses.replace(
                record,
                state=new,
                generation=generation,
                failure_count=0,
                success_count=0,
                opened_at=None,
                probe_started_at=None,
            )
        if new is not old:
            self._pending.append((old, new))
        return record

    def _restore(self, loaded: BreakerRecord | None) -> BreakerRecord:
        """Start from a stored record; one not CLOSED restarts OPEN with a full timeout."""
        if loaded is None:
            return BreakerRecord()
        if loaded.state is CircuitState.CLOSED:
            return loaded
        return dataclasses.replace(
            loaded,
            state=CircuitState.OPEN,
            generation=loaded.generation + 1,
            opened_at=self._clock.monotonic(),
            success_count=0,
            probe_started_at=None,
        )

    def _load(self) -> BreakerRecord | None:
        try:
            return self._storage.load(self._name)
        except Exception:  # noqa: BLE001 - the breaker's storage must never break ingestion
            self._storage_error("load")
            return None

    def _commit(self, record: BreakerRecord) -> None:
        """Make ``record`` current and write it through; a storage error is logged, not raised."""
        self._record = record
        try:
            self._storage.save(self._name, record)
        except Exception:  # noqa: BLE001 - the breaker's storage must never break ingestion
            self._storage_error("save")
            return
        if self._storage_failing:
            self._storage_failing = False
            _log.warning(
                "breaker %r: storage works again after %d error(s)",
                self._name,
                self._storage_errors,
            )

    def _storage_error(self, operation: str) -> None:
        self._storage_errors += 1
        if self._storage_failing:
            _log.debug("breaker %r: storage %s failed again", self._name, operation, exc_info=True)
            return
        self._storage_failing = True
        _log.error(
            "breaker %r: storage %s failed; carrying on from the in-memory state",
            self._name,
            operation,
            exc_info=True,
        )

    def _deliver(self) -> None:
        """Hand queued transitions to the listeners, in order, outside the state lock."""
        with self._deliver_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    old, new = self._pending.popleft()
                    listeners = self._listeners
                for listener in listeners:
                    try:
                        listener(old, new)
                    except Exception:  # noqa: BLE001 - observability must not break ingestion
                        _log.exception(
                            "breaker %r: listener %r failed on %s -> %s",
                            self._name,
                            listener,
                            old,
                            new,
                        )
