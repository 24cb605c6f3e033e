"""Observers: how metrics and logs attach to the pipeline without living inside its logic.

The processor, the reset transaction, the breaker and the store call one :class:`Observer`
at well-defined events; :class:`weightstream.metrics.MetricsObserver` and
:class:`weightstream.logs.LogObserver` implement it. :class:`Observers` fans one event out to
several; an observer that raises is logged and ignored (observability must never break
ingestion).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from weightstream.model import RecoveryAttempt, ResetAudit, Result

__all__ = ["Observer", "Observers", "ReadingEvent"]

#: One row's result as the bulk hook sees it: (user id, reading id, verdict, reason, source).
ReadingEvent = tuple[str | None, str | None, str, str, str | None]

_log = logging.getLogger(__name__)


class Observer:
    """Base observer: every hook is a no-op. Subclass and override what you need."""

    def reading_processed(self, result: Result, duration_s: float) -> None:
        """One input row got its result (any verdict). ``duration_s``: time spent on it."""

    def readings_processed(self, rows: Sequence[ReadingEvent], duration_s: float) -> None:
        """Many rows got their results at once (the file engine's common path).

        Each row is (user id, reading id, verdict, reason, source); ``duration_s`` is the time
        spent per row. The default hands each to :meth:`reading_processed`'s counterpart
        hooks only if a subclass overrides this.
        """

    def reset_finished(self, audit: ResetAudit) -> None:
        """A reset transaction ended (committed or rolled back, with its fallback path)."""

    def rollback_verified(self, operation: str, restored: bool) -> None:
        """After a rollback: was the state exactly the pre-transaction value?"""

    def breaker_changed(self, old_state: str, new_state: str) -> None:
        """The reset circuit breaker moved between closed / open / half_open."""

    def recovery_attempted(self, attempt: RecoveryAttempt) -> None:
        """The recovery service tried one strategy."""

    def store_committed(self, duration_s: float, results: int) -> None:
        """A unit of work (``results`` rows) committed in ``duration_s``."""

    def wal_checkpointed(self, log_pages: int | None) -> None:
        """SQLite's checkpoint thread ran a round (:mod:`weightstream.store.checkpointer`):
        the log held ``log_pages``; None: the round failed."""


class Observers(Observer):
    """Fan events out to several observers; an observer's own error never propagates."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers = list(observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def _each(self, name: str, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, name)(*args)
            except Exception:  # noqa: BLE001 - observability must not break ingestion
                _log.exception("observer %r failed on %s", observer, name)

    def reading_processed(self, result: Result, duration_s: float) -> None:
        self._each("reading_processed", result, duration_s)

    def readings_processed(self, rows: Sequence[ReadingEvent], duration_s: float) -> None:
        self._each("readings_processed", rows, duration_s)

    def reset_finished(self, audit: ResetAudit) -> None:
        self._each("reset_finished", audit)

    def rollback_verified(self, operation: str, restored: bool) -> None:
        self._each("rollback_verified", operation, restored)

    def breaker_changed(self, old_state: str, new_state: str) -> None:
        self._each("breaker_changed", old_state, new_state)

    def recovery_attempted(self, attempt: RecoveryAttempt) -> None:
        self._each("recovery_attempted", attempt)

    def store_committed(self, duration_s: float, results: int) -> None:
        self._each("store_committed", duration_s, results)

    def wal_checkpointed(self, log_pages: int | None) -> None:
        self._each("wal_checkpointed", log_pages)
