"""Logging: readable lines by default, JSON lines on request, and a :class:`LogObserver`.

:func:`configure_logging` sets up the standard library's :mod:`logging` for the entry points
(CLI, API). It deliberately does not use structlog: one small :class:`JsonFormatter` built on
``json.dumps`` gives JSON lines, and that is not worth another dependency.

:class:`LogObserver` writes one line per event that an operator acts on. Health data stays
out of every line at INFO and above: reset and recovery lines carry ids, types, outcomes,
codes and durations, never a weight (``ResetAudit`` has no weight field, and must not grow
one). Free text that might contain numbers (a recovery attempt's ``detail``, a reason that is
not a plain code) is logged only at DEBUG.

Structured fields travel on the record as ``record.event_fields`` (a dict); the JSON formatter
lifts them to top-level keys, and the message repeats them as ``key=value`` so a plain
formatter shows them too.
"""

from __future__ import annotations

import json as _json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from weightstream.errors import ConfigError
from weightstream.model import RecoveryAttempt, ResetAudit, Result
from weightstream.observe import Observer, ReadingEvent

__all__ = ["configure_logging", "JsonFormatter", "LogObserver", "EVENTS_LOGGER"]

#: The logger :class:`LogObserver` writes to by default.
EVENTS_LOGGER = "weightstream.events"

_READABLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# A code is a short lowercase identifier; no '.', so no decimal number can hide in it.
_CODE = re.compile(r"[a-z][a-z0-9_:-]{0,63}")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "event_fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(str(key), value)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key != "event_fields":
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    json: bool = False, level: str = "INFO", *, stream: TextIO | None = None
) -> logging.Handler:
    """Send log records at ``level`` and above to ``stream`` (stderr), readable or as JSON.

    Configures the root logger, so library and application records share one format.
    Idempotent: a handler installed by an earlier call is replaced, other handlers are left
    alone. Returns the installed handler. An unknown ``level`` is a :class:`ConfigError`.
    """
    levels = logging.getLevelNamesMapping()
    name = level.strip().upper()
    if name not in levels:
        raise ConfigError(f"unknown log level {level!r}; use one of DEBUG, INFO, WARNING, ERROR")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(_READABLE_FORMAT))
    handler.set_name("weightstream")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "weightstream":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(levels[name])
    return handler


def _code(value: object) -> str | None:
    """``value`` as a code if it is one (``gap``, ``kalman_reset``...), else None."""
    if value is None:
        return None
    text = str(value)
    return text if _CODE.fullmatch(text) else None


def _render(event: str, fields: dict[str, Any]) -> str:
    pairs = " ".join(f"{key}={'-' if value is None else value}" for key, value in fields.items())
    return f"{event} {pairs}"


class LogObserver(Observer):
    """Log reset outcomes and recovery attempts (INFO) and breaker transitions (WARNING).

    Readings are logged at DEBUG only (verdict and reason, no values): at INFO one line per
    row would drown the events that matter.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger if logger is not None else logging.getLogger(EVENTS_LOGGER)

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._log.isEnabledFor(level):
            message = _render(event, fields)
            self._log.log(level, "%s", message, extra={"event_fields": {"event": event, **fields}})

    def reading_processed(self, result: Result, duration_s: float) -> None:
        if not self._log.isEnabledFor(logging.DEBUG):
            return  # nothing derived for a line that is off (one call per reading)
        self._emit(
            logging.DEBUG,
            "reading_processed",
            {
                "user_id": result.user_id,
                "reading_id": result.reading_id,
                "verdict": str(result.verdict),
                "reason": _code(result.reason),
                "duration_ms": round(duration_s * 1000.0, 3),
            },
        )

    def readings_processed(self, rows: Sequence[ReadingEvent], duration_s: float) -> None:
        if not self._log.isEnabledFor(logging.DEBUG):
            return
        for user_id, reading_id, verdict, reason, _ in rows:
            self._emit(
                logging.DEBUG,
                "reading_processed",
                {
                    "user_id": user_id,
                    "reading_id": reading_id,
                    "verdict": verdict,
                    "reason": _code(reason),
                    "duration_ms": round(duration_s * 1000.0, 3),
                },
            )

    def reset_finished(self, audit: ResetAudit) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return  # its lines are INFO and DEBUG: both off, nothing to derive
        reason = _code(audit.reason)
        self._emit(
            logging.INFO,
            "reset_finished",
            {
                "user_id": audit.user_id,
                "reading_id": audit.reading_id,
                "reset_type": str(audit.reset_type),
                "trigger": _code(audit.trigger),
                "outcome": _code(audit.outcome),
                "fallback": None if audit.fallback is None else str(audit.fallback),
                "failed_operation": _code(audit.failed_operation),
                "reason": reason,
                "duration_ms": round(audit.duration_s * 1000.0, 3),
            },
        )
        if audit.reason is not None and reason is None:
            # Free text (an exception message, say) may quote numbers: DEBUG only.
            self._emit(
                logging.DEBUG,
                "reset_reason_detail",
                {"user_id": audit.user_id, "reading_id": audit.reading_id, "detail": audit.reason},
            )

    def rollback_verified(self, operation: str, restored: bool) -> None:
        self._emit(
            logging.DEBUG if restored else logging.ERROR,
            "rollback_verified",
            {"operation": _code(operation), "restored": restored},
        )

    def breaker_changed(self, old_state: str, new_state: str) -> None:
        self._emit(
            logging.WARNING,
            "breaker_changed",
            {"from_state": _code(old_state), "to_state": _code(new_state)},
        )

    def recovery_attempted(self, attempt: RecoveryAttempt) -> None:
        self._emit(
            logging.INFO,
            "recovery_attempted",
            {
                "user_id": attempt.user_id,
                "reading_id": attempt.reading_id,
                "strategy": _code(attempt.strategy),
                "succeeded": attempt.succeeded,
            },
        )
        if attempt.detail:
            self._emit(
                logging.DEBUG,
                "recovery_detail",
                {
                    "user_id": attempt.user_id,
                    "reading_id": attempt.reading_id,
                    "detail": attempt.detail,
                },
            )
