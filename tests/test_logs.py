"""Logging: JSON lines carry the event fields, and no weight reaches INFO or above."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from weightstream.errors import ConfigError
from weightstream.logs import JsonFormatter, LogObserver, configure_logging
from weightstream.model import (
    AuditOutcome,
    Reason,
    RecoveryAttempt,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
    Verdict,
)
from weightstream.observe import Observers

AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
WEIGHT = "87.654"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[LogObserver, Collect]]:
    logger = logging.getLogger("weightstream.tests.logs")
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield LogObserver(logger), handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.fixture
def clean_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def rolled_back_audit(reason: str | None = "validation_failed") -> ResetAudit:
    return ResetAudit(
        user_id="u-17",
        reading_id="r-99",
        reset_type=ResetType.HARD,
        trigger="gap",
        outcome=AuditOutcome.ROLLED_BACK,
        failed_operation="kalman_reset",
        reason=reason,
        duration_s=0.0042,
        at=AT,
        fallback=ResetOutcome.RECOVERED_HISTORY,
    )


def test_json_mode_emits_parseable_reset_lines(clean_root: None) -> None:
    """With json=True a reset outcome is one JSON object holding every reset field."""
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    LogObserver().reset_finished(rolled_back_audit())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "INFO"
    assert entry["logger"] == "weightstream.events"
    assert entry["event"] == "reset_finished"
    assert entry["user_id"] == "u-17"
    assert entry["reading_id"] == "r-99"
    assert entry["reset_type"] == "hard"
    assert entry["outcome"] == "rolled_back"
    assert entry["fallback"] == "recovered_history"
    assert entry["failed_operation"] == "kalman_reset"
    assert entry["reason"] == "validation_failed"
    assert entry["duration_ms"] == 4.2
    assert datetime.fromisoformat(entry["ts"]).tzinfo is not None


def test_readable_mode_is_the_default(clean_root: None) -> None:
    """By default a line is human-readable text with the fields as key=value."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    LogObserver().reset_finished(rolled_back_audit())
    line = stream.getvalue().strip()
    assert not line.startswith("{")
    assert "INFO weightstream.events: reset_finished" in line
    assert "user_id=u-17" in line and "outcome=rolled_back" in line
    assert "fallback=recovered_history" in line and "duration_ms=4.2" in line


def test_configure_logging_is_idempotent_and_filters_by_level(clean_root: None) -> None:
    """A second call replaces the first handler, and records below the level are dropped."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(json=True, level="warning", stream=second)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "weightstream"]
    assert len(ours) == 1
    observer = LogObserver()
    observer.reset_finished(rolled_back_audit())  # INFO: dropped
    observer.breaker_changed("closed", "open")  # WARNING: kept
    assert first.getvalue() == ""
    [line] = second.getvalue().splitlines()
    assert json.loads(line)["event"] == "breaker_changed"


def test_unknown_level_is_a_config_error(clean_root: None) -> None:
    """An unknown level name is refused with ConfigError."""
    with pytest.raises(ConfigError):
        configure_logging(level="LOUD")


def test_breaker_transitions_log_at_warning(captured: tuple[LogObserver, Collect]) -> None:
    """Each breaker transition is one WARNING naming both states."""
    observer, handler = captured
    observer.breaker_changed("closed", "open")
    observer.breaker_changed("open", "half_open")
    assert [r.levelno for r in handler.records] == [logging.WARNING, logging.WARNING]
    fields = handler.records[0].event_fields  # type: ignore[attr-defined]
    assert fields == {"event": "breaker_changed", "from_state": "closed", "to_state": "open"}


def test_recovery_attempt_logs_info_and_detail_only_at_debug(
    captured: tuple[LogObserver, Collect],
) -> None:
    """A recovery attempt is INFO (strategy, succeeded, user); its detail text is DEBUG only."""
    observer, handler = captured
    observer.recovery_attempted(
        RecoveryAttempt("u-17", "r-99", "interpolate", False, "gap too long", AT)
    )
    info = [r for r in handler.records if r.levelno == logging.INFO]
    debug = [r for r in handler.records if r.levelno == logging.DEBUG]
    assert len(info) == 1
    fields = info[0].event_fields  # type: ignore[attr-defined]
    assert fields["strategy"] == "interpolate"
    assert fields["succeeded"] is False
    assert fields["user_id"] == "u-17"
    assert "gap too long" not in info[0].getMessage()
    assert len(debug) == 1 and "gap too long" in debug[0].getMessage()


def test_rollback_mismatch_logs_at_error(captured: tuple[LogObserver, Collect]) -> None:
    """A rollback that did not restore the state is an ERROR; a restored one only DEBUG."""
    observer, handler = captured
    observer.rollback_verified("state_persist", True)
    observer.rollback_verified("state_persist", False)
    assert [r.levelno for r in handler.records] == [logging.DEBUG, logging.ERROR]


def test_no_weight_reaches_info_or_above(captured: tuple[LogObserver, Collect]) -> None:
    """Across a run of events carrying the weight 87.654, no INFO+ line contains it."""
    observer, handler = captured
    fan_out = Observers([observer])
    result = Result(
        reading_id="r-99",
        user_id="u-17",
        verdict=Verdict.REJECTED,
        reason=Reason.INNOVATION_OUTLIER,
        message=f"{WEIGHT} kg is 9 sigma from 78.1 kg",
        timestamp=AT,
        source="patient-device",
        weight_kg=87.654,
        filtered_weight=87.654,
        std_kg=0.87654,
    )
    fan_out.reading_processed(result, 0.0001)
    fan_out.reset_finished(rolled_back_audit(reason=f"checkpoint kalman_reset: x[0]={WEIGHT}"))
    fan_out.reset_finished(rolled_back_audit(reason="validation_failed"))
    fan_out.rollback_verified("kalman_reset", True)
    fan_out.breaker_changed("closed", "open")
    fan_out.recovery_attempted(
        RecoveryAttempt("u-17", "r-99", "history", True, f"restored weight {WEIGHT} kg", AT)
    )
    fan_out.store_committed(0.002, 3)

    formatters = [logging.Formatter("%(levelname)s %(name)s %(message)s"), JsonFormatter()]
    loud = [r for r in handler.records if r.levelno >= logging.INFO]
    assert len(loud) >= 4  # both resets, the breaker, the recovery
    for record in loud:
        for formatter in formatters:
            assert WEIGHT not in formatter.format(record), record.getMessage()
    # The free text did reach the observer: it is kept, at DEBUG only.
    quiet = [r for r in handler.records if r.levelno < logging.INFO]
    assert any(WEIGHT in JsonFormatter().format(r) for r in quiet)
