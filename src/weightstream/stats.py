"""The reset plan's success metrics, computed from what the store recorded.

:func:`compute_stats` reads the reset audit records (``store.audits()``) and the recovery
attempts (``store.recovery_attempts()``) made at or after ``since`` and reports each figure
beside the plan's target ("Success Metrics"). The ratios are defined exactly as the Prometheus
recording rules in ``deploy/prometheus/weightstream.rules.yml`` define them over the counters
of :class:`weightstream.metrics.MetricsObserver`, so the two agree over the same run:

``transaction_success_rate``
    committed / attempted reset transactions. *Attempted* means the transaction ran:
    audits with outcome ``committed`` or ``rolled_back``. A reset the circuit breaker refused
    (outcome ``breaker_open``) never started a transaction and counts in neither.
    Rule: ``weightstream:reset_transaction_success:ratio_rate1h``. Target > 99.5 %.
``rollback_rate``
    rolled_back / attempted (rule ``weightstream:transaction_rollback:ratio_rate1h``; the
    plan alerts above 0.5 %). Shown without a target of its own.
``recovery_success_rate``
    successful / all recovery *attempts* (one attempt per strategy tried: history,
    interpolation, conservative), not per episode. This is what
    ``weightstream:recovery_success:ratio_rate1h`` computes from
    ``weightstream_recovery_attempts_total{result}``. Target > 95 %.
``rollback_success_rate``
    The live check (state equal to its pre-transaction value right after the rollback) is only
    exported as ``weightstream_rollback_verifications_total``; it is not persisted. From the
    store: a rolled-back transaction counts as restored when its reading's stored result did
    not come from the committed-reset path (its ``reset_outcome`` is not ``committed``), i.e.
    nothing the transaction staged survived. n/a when nothing rolled back. Target 100 %.
``breaker_opens`` / ``breaker_opens_per_day``
    Breaker transitions are not persisted. Each maximal run of consecutive ``breaker_open``
    audits (in record order) needs at least one open, so the number of runs is a *lower
    bound* on opens (an open during which no reset was refused is invisible here; the
    counter ``weightstream_breaker_transitions_total{to_state="open"}`` sees it). Per day:
    divided by the days from ``since`` (else the first record) to the last record, at least
    one day. Target < 1 per day.
``reset_p50_ms`` / ``reset_p99_ms``
    Nearest-rank percentiles of ``duration_s`` of attempted transactions, in milliseconds.
    Target < 5 ms each. n/a when no transaction ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from weightstream.clock import SECONDS_PER_DAY
from weightstream.model import AuditOutcome, ResetAudit, ResetOutcome
from weightstream.store.base import StateStore

__all__ = ["Stats", "Figure", "compute_stats", "percentile"]

MET = "met"
NOT_MET = "not met"
NA = "n/a"

TRANSACTION_SUCCESS_TARGET = 0.995
RECOVERY_SUCCESS_TARGET = 0.95
ROLLBACK_SUCCESS_TARGET = 1.0
BREAKER_OPENS_PER_DAY_TARGET = 1.0
RESET_DURATION_TARGET_MS = 5.0


@dataclass(frozen=True, slots=True)
class Figure:
    """One reported figure: its value (None: n/a), the target as text, met / not met / n/a."""

    name: str
    value: float | None
    unit: str
    target: str
    status: str


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts and rates of one window of the store's records (see the module docstring)."""

    since: datetime | None
    audits: int
    attempted: int
    committed: int
    rolled_back: int
    breaker_refused: int
    recovery_attempts: int
    recovery_successes: int
    rollbacks_restored: int
    breaker_opens: int
    days: float
    transaction_success_rate: float | None
    rollback_rate: float | None
    recovery_success_rate: float | None
    rollback_success_rate: float | None
    breaker_opens_per_day: float | None
    reset_p50_ms: float | None
    reset_p99_ms: float | None

    def figures(self) -> list[Figure]:
        """The plan's success metrics, each beside its target."""
        return [
            Figure(
                "transaction success rate",
                self.transaction_success_rate,
                "%",
                "> 99.5%",
                _status(self.transaction_success_rate, lambda v: v > TRANSACTION_SUCCESS_TARGET),
            ),
            Figure(
                "rollback rate",
                self.rollback_rate,
                "%",
                "alert > 0.5%",
                _status(self.rollback_rate, lambda v: v <= 0.005),
            ),
            Figure(
                "recovery success rate",
                self.recovery_success_rate,
                "%",
                "> 95%",
                _status(self.recovery_success_rate, lambda v: v > RECOVERY_SUCCESS_TARGET),
            ),
            Figure(
                "rollback success rate",
                self.rollback_success_rate,
                "%",
                "100%",
                _status(self.rollback_success_rate, lambda v: v >= ROLLBACK_SUCCESS_TARGET),
            ),
            Figure(
                "breaker opens per day",
                self.breaker_opens_per_day,
                "/day",
                "< 1 per day",
                _status(self.breaker_opens_per_day, lambda v: v < BREAKER_OPENS_PER_DAY_TARGET),
            ),
            Figure(
                "reset duration p50",
                self.reset_p50_ms,
                "ms",
                "< 5 ms",
                _status(self.reset_p50_ms, lambda v: v < RESET_DURATION_TARGET_MS),
            ),
            Figure(
                "reset duration p99",
                self.reset_p99_ms,
                "ms",
                "< 5 ms",
                _status(self.reset_p99_ms, lambda v: v < RESET_DURATION_TARGET_MS),
            ),
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field (``since`` as ISO text) and the figures."""
        out = {k: v for k, v in asdict(self).items() if k != "since"}
        out["since"] = self.since.isoformat() if self.since is not None else None
        out["figures"] = [asdict(f) for f in self.figures()]
        return out


def _status(value: float | None, ok: Any) -> str:
    if value is None:
        return NA
    return MET if ok(value) else NOT_MET


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]); None for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    >>> percentile([1.0, 2.0, 3.0, 4.0], 99)
    4.0
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def compute_stats(store: StateStore, since: datetime | None = None) -> Stats:
    """The success metrics over the audits and recovery attempts at or after ``since``."""
    audits = [a for a in store.audits() if since is None or a.at >= since]
    attempts = [r for r in store.recovery_attempts() if since is None or r.at >= since]

    attempted = [a for a in audits if a.outcome.ran]
    committed = sum(1 for a in attempted if a.outcome is AuditOutcome.COMMITTED)
    rolled = [a for a in attempted if a.outcome is AuditOutcome.ROLLED_BACK]
    refused = sum(1 for a in audits if a.outcome is AuditOutcome.BREAKER_OPEN)
    successes = sum(1 for r in attempts if r.succeeded)
    restored = _restored(store, rolled)
    opens = _breaker_runs(audits)

    times = [a.at for a in audits] + [r.at for r in attempts]
    days = 0.0
    if times:
        start = since if since is not None else min(times)
        days = max(1.0, (max(times) - start).total_seconds() / SECONDS_PER_DAY)
    durations_ms = [a.duration_s * 1000.0 for a in attempted if math.isfinite(a.duration_s)]

    return Stats(
        since=since,
        audits=len(audits),
        attempted=len(attempted),
        committed=committed,
        rolled_back=len(rolled),
        breaker_refused=refused,
        recovery_attempts=len(attempts),
        recovery_successes=successes,
        rollbacks_restored=restored,
        breaker_opens=opens,
        days=days,
        transaction_success_rate=_ratio(committed, len(attempted)),
        rollback_rate=_ratio(len(rolled), len(attempted)),
        recovery_success_rate=_ratio(successes, len(attempts)),
        rollback_success_rate=_ratio(restored, len(rolled)),
        breaker_opens_per_day=opens / days if audits else None,
        reset_p50_ms=percentile(durations_ms, 50),
        reset_p99_ms=percentile(durations_ms, 99),
    )


def _restored(store: StateStore, rolled: list[ResetAudit]) -> int:
    """Rolled-back transactions whose reading's stored result is not a committed reset."""
    if not rolled:
        return 0
    outcomes: dict[tuple[str, str], ResetOutcome | None] = {}
    for user_id in {a.user_id for a in rolled}:
        for row in store.history(user_id):
            outcomes[(user_id, row.measurement.reading_id)] = row.result.reset_outcome
    restored = 0
    for a in rolled:
        key = (a.user_id, a.reading_id)
        if key in outcomes and outcomes[key] != ResetOutcome.COMMITTED:
            restored += 1
    return restored


def _breaker_runs(audits: list[ResetAudit]) -> int:
    """Maximal runs of consecutive ``breaker_open`` audits (a lower bound on opens)."""
    runs, inside = 0, False
    for a in audits:
        if a.outcome is AuditOutcome.BREAKER_OPEN:
            if not inside:
                runs += 1
            inside = True
        else:
            inside = False
    return runs
