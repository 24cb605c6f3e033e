"""Prometheus metrics for weightstream, attached as an :class:`~weightstream.observe.Observer`.

:class:`MetricsObserver` owns its own :class:`prometheus_client.CollectorRegistry` (never the
process-global one), so two pipelines in one process, or two tests, never share counters.
Every metric is named in base units with the ``weightstream_`` prefix, and every label has a
bounded set of values: no label ever carries a user, a reading or a weight. A source that is
not in the configured list becomes ``other``; a reason, operation or reset type outside its
known codes becomes ``other`` / ``unknown``.

=============================================  =========  ==================================
metric                                         type       labels
=============================================  =========  ==================================
``weightstream_readings_total``                counter    verdict, reason, source
``weightstream_reading_duration_seconds``      histogram
``weightstream_resets_total``                  counter    type, outcome (final path)
``weightstream_reset_transactions_total``      counter    type, result (committed/rolled_back)
``weightstream_transaction_rollbacks_total``   counter    operation
``weightstream_rollback_verifications_total``  counter    result (restored/mismatch)
``weightstream_reset_duration_seconds``        histogram
``weightstream_breaker_state``                 gauge      (0 closed, 1 open, 2 half_open)
``weightstream_breaker_transitions_total``     counter    from_state, to_state
``weightstream_recovery_attempts_total``       counter    strategy, result (success/failure)
``weightstream_store_commit_duration_seconds`` histogram
``weightstream_store_committed_results_total`` counter
``weightstream_wal_checkpoints_total``         counter    result (ok/failed)
``weightstream_wal_pages``                     gauge      (the log's pages at the last round)
=============================================  =========  ==================================

The alerting and recording rules over these series live in ``deploy/prometheus/``.

Several processes (``weightstream serve --workers N``) share one set of series through
prometheus_client's multiprocess mode: the serve command gives the workers a directory in
``PROMETHEUS_MULTIPROC_DIR``, each writes its values there, and :meth:`MetricsObserver.render`
in any of them merges all of them (counters and histograms summed; a gauge the largest value
among live workers: the breaker of one worker open is the service's breaker open).

>>> from weightstream.model import Result, Verdict
>>> observer = MetricsObserver(known_sources=["patient-device"])
>>> observer.reading_processed(Result("r1", "u1", Verdict.ACCEPTED, source="fitbit"), 0.0002)
>>> counters = read_counters(observer.render().decode())
>>> key = ("weightstream_readings_total",
...        frozenset({"verdict": "accepted", "reason": "ok", "source": "other"}.items()))
>>> counters[key]
1.0
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import tempfile
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
    values,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from weightstream.model import (
    AuditOutcome,
    Reason,
    RecoveryAttempt,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
)
from weightstream.observe import Observer, ReadingEvent
from weightstream.resets.breaker import CircuitState
from weightstream.resets.validator import ResetOperation

__all__ = [
    "MetricsObserver",
    "MULTIPROCESS_ENV",
    "read_counters",
    "BREAKER_STATES",
    "ROLLBACK_OPERATIONS",
    "TRANSACTION_RESULTS",
    "READING_DURATION_BUCKETS",
    "RESET_DURATION_BUCKETS",
    "STORE_COMMIT_DURATION_BUCKETS",
]

#: Value of ``weightstream_breaker_state`` for each breaker state: its place in
#: :class:`CircuitState` (closed 0, open 1, half_open 2; the alert rules compare with these).
BREAKER_STATES: dict[str, int] = {state.value: code for code, state in enumerate(CircuitState)}

#: The operations a reset transaction can fail in (``ResetAudit.failed_operation``), and
#: ``unknown`` for a failure not pinned to one (an unchecked transaction).
ROLLBACK_OPERATIONS: tuple[str, ...] = (*(op.value for op in ResetOperation), "unknown")

#: The ``result`` label of ``weightstream_reset_transactions_total``: the audit outcomes of a
#: transaction that ran (``breaker_open``: none ran).
TRANSACTION_RESULTS: tuple[str, ...] = tuple(o.value for o in AuditOutcome if o.ran)

#: One reading takes microseconds to a few milliseconds; 1 µs .. 100 ms.
READING_DURATION_BUCKETS: tuple[float, ...] = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
)  # fmt: skip

#: A reset should stay under 5 ms (plan) and alerts above 10 ms: both are bucket bounds, so
#: ``histogram_quantile`` interpolates inside the right bucket. 10 µs .. 1 s.
RESET_DURATION_BUCKETS: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
    5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

#: A unit of work commits in well under a millisecond in memory, up to seconds on a busy
#: database (busy timeout). 100 µs .. 10 s.
STORE_COMMIT_DURATION_BUCKETS: tuple[float, ...] = (
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_REASONS = frozenset(reason.value for reason in Reason)
_RESET_TYPES = frozenset(reset_type.value for reset_type in ResetType)
_OUTCOMES = frozenset(outcome.value for outcome in ResetOutcome)
_OPERATIONS = frozenset(ROLLBACK_OPERATIONS)
#: How many labelled children an observer remembers per metric (the label sets are bounded,
#: but the raw values they come from, such as a row's source, are not).
_CHILDREN_REMEMBERED = 1024


def _bounded(value: object, allowed: frozenset[str], fallback: str) -> str:
    text = str(value) if value is not None else ""
    return text if text in allowed else fallback


def _seconds(duration_s: float) -> float | None:
    """A duration fit to observe: finite and non-negative (a clock step backwards gives 0)."""
    if not math.isfinite(duration_s):
        return None
    return max(0.0, duration_s)


class _Histogram(Histogram):
    """A histogram that can take many observations of one value at once."""

    def observe_repeated(self, amount: float, times: int) -> None:
        """``observe(amount)`` ``times`` times: the same bucket counts, count and sum.

        The bucket is counted once by ``times`` (a count is exact in a float up to 2**53) and
        the sum takes ``amount`` once per observation, as ``observe`` adds it; what is saved
        is ``observe``'s bucket search and the bucket increment per observation (the file
        engine observes every row of a stretch with the same per-row duration).
        """
        if times <= 0:
            return
        self._raise_if_not_observable()  # type: ignore[no-untyped-call]
        add = self._sum.inc
        for _ in range(times):
            add(amount)
        for i, bound in enumerate(self._upper_bounds):
            if amount <= bound:
                self._buckets[i].inc(times)
                break


class MetricsObserver(Observer):
    """Prometheus counters, gauges and histograms fed by the pipeline's observer hooks.

    ``registry``: where the metrics are registered (default: a new, private registry).
    ``known_sources``: the only values the ``source`` label may take besides ``unknown`` (no
    source on the row) and ``other`` (any source not listed); default: the sources of
    :class:`weightstream.config.SourceConfig`.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        known_sources: Iterable[str] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        #: The values live in prometheus_client's multiprocess files: it chose so when it was
        #: imported with ``MULTIPROCESS_ENV`` set, and that choice is what is read here.
        self.merged = values.ValueClass is not values.MutexValue
        if known_sources is None:
            from weightstream.config import SourceConfig

            known_sources = SourceConfig().multipliers
        self.known_sources = frozenset(known_sources)
        r = self.registry

        self.readings = Counter(
            "weightstream_readings",
            "Input rows processed, by verdict, reason code and (bounded) source.",
            ["verdict", "reason", "source"],
            registry=r,
        )
        self.reading_duration = _Histogram(
            "weightstream_reading_duration_seconds",
            "Time spent processing one input row.",
            buckets=READING_DURATION_BUCKETS,
            registry=r,
        )
        self.resets = Counter(
            "weightstream_resets",
            "Resets attempted, by type and the path that produced the state "
            "(committed or the fallback taken).",
            ["type", "outcome"],
            registry=r,
        )
        self.reset_transactions = Counter(
            "weightstream_reset_transactions",
            "Reset transactions, by type and whether they committed or rolled back.",
            ["type", "result"],
            registry=r,
        )
        self.transaction_rollbacks = Counter(
            "weightstream_transaction_rollbacks",
            "Reset transactions rolled back, by the operation that failed.",
            ["operation"],
            registry=r,
        )
        self.rollback_verifications = Counter(
            "weightstream_rollback_verifications",
            "Checks after a rollback that the state equals its pre-transaction value.",
            ["result"],
            registry=r,
        )
        self.reset_duration = Histogram(
            "weightstream_reset_duration_seconds",
            "Duration of one reset transaction (commit or rollback).",
            buckets=RESET_DURATION_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "weightstream_breaker_state",
            "Reset circuit breaker state: 0 closed, 1 open, 2 half_open.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.breaker_transitions = Counter(
            "weightstream_breaker_transitions",
            "Reset circuit breaker state changes.",
            ["from_state", "to_state"],
            registry=r,
        )
        self.recovery_attempts = Counter(
            "weightstream_recovery_attempts",
            "Recovery strategies tried after a failed reset, by strategy and result.",
            ["strategy", "result"],
            registry=r,
        )
        self.store_commit_duration = Histogram(
            "weightstream_store_commit_duration_seconds",
            "Duration of one store commit (a unit of work).",
            buckets=STORE_COMMIT_DURATION_BUCKETS,
            registry=r,
        )
        self.store_committed_results = Counter(
            "weightstream_store_committed_results",
            "Results (input rows) made durable by store commits.",
            registry=r,
        )
        self.wal_checkpoints = Counter(
            "weightstream_wal_checkpoints",
            "Rounds of the SQLite checkpoint thread, by result.",
            ["result"],
            registry=r,
        )
        self.wal_pages = Gauge(
            "weightstream_wal_pages",
            "Pages in SQLite's write-ahead log at the checkpoint thread's last round.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._initialise_children()
        # Labelled children by the raw values they were derived from: ``labels()`` costs
        # about as much as the increment, and a reset makes three of them. The children are
        # the metric's own (``labels`` returns the same child for the same labels), so the
        # series and their values are exactly those of calling ``labels`` every time.
        self._reading_children: dict[tuple[object, object, object], Any] = {}
        self._reset_children: dict[tuple[object, object, object], tuple[Any, Any | None]] = {}

    def _initialise_children(self) -> None:
        """Export every bounded label combination at 0 from the start.

        A series that appears only at its first increment hides that increment from
        ``rate()``/``increase()``, and a ratio whose numerator series does not exist yet is
        "no data" instead of 0.
        """
        for reset_type in ResetType:
            for outcome in ResetOutcome:
                self.resets.labels(type=reset_type.value, outcome=outcome.value)
            for result in TRANSACTION_RESULTS:
                self.reset_transactions.labels(type=reset_type.value, result=result)
        for operation in ROLLBACK_OPERATIONS:
            self.transaction_rollbacks.labels(operation=operation)
        for result in ("restored", "mismatch"):
            self.rollback_verifications.labels(result=result)
        closed, open_, half_open = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
        for old, new in (
            (closed, open_),
            (open_, half_open),
            (half_open, open_),
            (half_open, closed),
        ):
            self.breaker_transitions.labels(from_state=old.value, to_state=new.value)
        self.breaker_state.set(BREAKER_STATES[closed])
        for result in ("ok", "failed"):
            self.wal_checkpoints.labels(result=result)

    # -- label bounding -------------------------------------------------------------------

    def source_label(self, source: str | None) -> str:
        """``source`` if known, ``unknown`` if absent, else ``other``."""
        if source is None or source == "":
            return "unknown"
        return source if source in self.known_sources else "other"

    # -- observer hooks -------------------------------------------------------------------

    def _reading_child(self, verdict: object, reason: object, source: str | None) -> Any:
        key = (verdict, reason, source)
        child = self._reading_children.get(key)
        if child is None:
            child = self.readings.labels(
                verdict=str(verdict),
                reason=_bounded(reason, _REASONS, "other"),
                source=self.source_label(source),
            )
            if len(self._reading_children) < _CHILDREN_REMEMBERED:  # sources are unbounded
                self._reading_children[key] = child
        return child

    def reading_processed(self, result: Result, duration_s: float) -> None:
        self._reading_child(result.verdict, result.reason, result.source).inc()
        seconds = _seconds(duration_s)
        if seconds is not None:
            self.reading_duration.observe(seconds)

    def readings_processed(self, rows: Sequence[ReadingEvent], duration_s: float) -> None:
        counts = Tally((verdict, reason, source) for _, _, verdict, reason, source in rows)
        for (verdict, reason, source), n in counts.items():
            self._reading_child(verdict, reason, source).inc(n)
        seconds = _seconds(duration_s)
        if seconds is not None:
            self.reading_duration.observe_repeated(seconds, len(rows))

    def _reset_children_of(self, audit: ResetAudit) -> tuple[Any, Any | None]:
        """The ``resets`` child and (if a transaction ran) the ``reset_transactions`` child."""
        key = (audit.reset_type, audit.outcome, audit.fallback)
        children = self._reset_children.get(key)
        if children is None:
            reset_type = _bounded(audit.reset_type, _RESET_TYPES, "other")
            if audit.outcome is AuditOutcome.COMMITTED:
                outcome = ResetOutcome.COMMITTED.value
            else:
                fallback = audit.fallback if audit.fallback is not None else ResetOutcome.FAILED
                outcome = _bounded(fallback, _OUTCOMES, "other")
            children = (
                self.resets.labels(type=reset_type, outcome=outcome),
                self.reset_transactions.labels(type=reset_type, result=audit.outcome.value)
                if audit.outcome.ran
                else None,
            )
            if len(self._reset_children) < _CHILDREN_REMEMBERED:
                self._reset_children[key] = children
        return children

    def reset_finished(self, audit: ResetAudit) -> None:
        resets, transactions = self._reset_children_of(audit)
        resets.inc()
        if transactions is None:
            return  # refused by the breaker: no transaction ran, nothing rolled back or timed
        transactions.inc()
        if audit.outcome is not AuditOutcome.COMMITTED:
            operation = _bounded(audit.failed_operation, _OPERATIONS, "unknown")
            self.transaction_rollbacks.labels(operation=operation).inc()
        seconds = _seconds(audit.duration_s)
        if seconds is not None:
            self.reset_duration.observe(seconds)

    def rollback_verified(self, operation: str, restored: bool) -> None:
        self.rollback_verifications.labels(result="restored" if restored else "mismatch").inc()

    def breaker_changed(self, old_state: str, new_state: str) -> None:
        old = _bounded(old_state, frozenset(BREAKER_STATES), "unknown")
        new = _bounded(new_state, frozenset(BREAKER_STATES), "unknown")
        self.breaker_transitions.labels(from_state=old, to_state=new).inc()
        if new in BREAKER_STATES:
            self.breaker_state.set(BREAKER_STATES[new])

    def recovery_attempted(self, attempt: RecoveryAttempt) -> None:
        self.recovery_attempts.labels(
            strategy=attempt.strategy, result="success" if attempt.succeeded else "failure"
        ).inc()

    def store_committed(self, duration_s: float, results: int) -> None:
        seconds = _seconds(duration_s)
        if seconds is not None:
            self.store_commit_duration.observe(seconds)
        if results > 0:
            self.store_committed_results.inc(results)

    def wal_checkpointed(self, log_pages: int | None) -> None:
        if log_pages is None:
            self.wal_checkpoints.labels(result="failed").inc()
            return
        self.wal_checkpoints.labels(result="ok").inc()
        self.wal_pages.set(log_pages)

    # -- exposition -----------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format; in multiprocess mode (see
        the module docstring), the series of every process, merged."""
        if not self.merged:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def write_textfile(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`render` to ``path`` for node-exporter's textfile collector, atomically.

        The text goes to a hidden temporary file in the same directory (not ``*.prom``, so the
        collector never reads it half-written), is fsynced, then ``os.replace``-d over ``path``
        and the directory fsynced. On any failure the temporary file is removed and the
        ``OSError`` propagates; ``path`` is then still the previous complete file (or absent),
        never a torn one.
        """
        target = os.path.abspath(os.fspath(path))
        directory, name = os.path.split(target)
        data = self.render()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # mkstemp creates 0600; the collector usually runs as another user.
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(directory)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve ``/metrics`` for this registry on ``addr:port`` from a daemon thread.

        ``port=0`` picks a free port (read it from ``server.server_port``). Stop with
        ``server.shutdown(); server.server_close()``.
        """
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server


#: Where prometheus_client's multiprocess mode keeps every process's values.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _fsync_directory(directory: str) -> None:
    """Make the rename durable. Filesystems that cannot fsync a directory are tolerated."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def read_counters(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, keyed by (sample name, frozenset of label pairs).

    Meant for tests and ad-hoc checks: counters appear under their ``_total`` name, histograms
    as their ``_bucket`` / ``_count`` / ``_sum`` samples, gauges under their own name.

    >>> read_counters('# TYPE x_total counter\\nx_total{a="1"} 2.0\\n')
    {('x_total', frozenset({('a', '1')})): 2.0}
    """
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples
