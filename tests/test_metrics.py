"""MetricsObserver: each hook moves the right series, labels stay bounded, exposition works."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from weightstream.metrics import (
    BREAKER_STATES,
    MULTIPROCESS_ENV,
    READING_DURATION_BUCKETS,
    RESET_DURATION_BUCKETS,
    ROLLBACK_OPERATIONS,
    TRANSACTION_RESULTS,
    MetricsObserver,
    read_counters,
)
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
from weightstream.resets.breaker import CircuitState
from weightstream.resets.validator import ResetOperation

AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SOURCES = ("patient-device", "care-team-upload")


@pytest.fixture
def observer() -> MetricsObserver:
    return MetricsObserver(known_sources=SOURCES)


def value(observer: MetricsObserver, name: str, **labels: str) -> float:
    """One sample read back through the text exposition (0.0 if absent)."""
    samples = read_counters(observer.render().decode())
    return samples.get((name, frozenset(labels.items())), 0.0)


def audit(
    *,
    outcome: str = "committed",  # the stored text, as the Prometheus rules see it
    reset_type: ResetType = ResetType.HARD,
    fallback: ResetOutcome | None = None,
    failed_operation: str | None = None,
    duration_s: float = 0.002,
    user_id: str = "user-123",
    reading_id: str = "reading-456",
) -> ResetAudit:
    return ResetAudit(
        user_id=user_id,
        reading_id=reading_id,
        reset_type=reset_type,
        trigger="gap",
        outcome=AuditOutcome(outcome),
        failed_operation=failed_operation,
        reason=None if outcome == "committed" else "validation_failed",
        duration_s=duration_s,
        at=AT,
        fallback=fallback,
    )


def result(
    verdict: Verdict = Verdict.ACCEPTED, reason: str = Reason.OK, source: str | None = None
) -> Result:
    return Result(
        reading_id="reading-456",
        user_id="user-123",
        verdict=verdict,
        reason=reason,
        source=source,
        timestamp=AT,
        weight_kg=87.654,
        filtered_weight=87.5,
    )


def exercise_every_hook(observer: MetricsObserver) -> None:
    observer.reading_processed(result(source="patient-device"), 0.0001)
    observer.reading_processed(result(Verdict.REJECTED, Reason.INNOVATION_OUTLIER, "x"), 0.0002)
    observer.reset_finished(audit())
    observer.reset_finished(
        audit(
            outcome="rolled_back",
            fallback=ResetOutcome.RECOVERED_HISTORY,
            failed_operation="state_persist",
        )
    )
    observer.rollback_verified("state_persist", True)
    observer.breaker_changed("closed", "open")
    observer.recovery_attempted(
        RecoveryAttempt("user-123", "reading-456", "history", True, "ok", AT)
    )
    observer.store_committed(0.003, 12)


def test_reading_processed_counts_verdict_reason_source_and_duration(
    observer: MetricsObserver,
) -> None:
    """A processed reading adds 1 to its (verdict, reason, source) counter and one observation."""
    observer.reading_processed(result(source="patient-device"), 0.0004)
    observer.reading_processed(result(source="patient-device"), 0.0004)
    observer.reading_processed(
        result(Verdict.REJECTED, Reason.RATE_OF_CHANGE, "care-team-upload"), 0.00002
    )
    total = "weightstream_readings_total"
    assert value(observer, total, verdict="accepted", reason="ok", source="patient-device") == 2
    assert (
        value(
            observer, total, verdict="rejected", reason="rate_of_change", source="care-team-upload"
        )
        == 1
    )
    assert value(observer, "weightstream_reading_duration_seconds_count") == 3
    assert value(observer, "weightstream_reading_duration_seconds_sum") == pytest.approx(0.00082)
    assert value(observer, "weightstream_reading_duration_seconds_bucket", le="5e-05") == 1
    assert value(observer, "weightstream_reading_duration_seconds_bucket", le="0.0005") == 3


def test_source_label_is_bounded_to_known_sources(observer: MetricsObserver) -> None:
    """A missing source is `unknown`, an unlisted one `other`, a listed one itself."""
    observer.reading_processed(result(source=None), 0.0)
    observer.reading_processed(result(source="https://evil.example/u/user-123"), 0.0)
    observer.reading_processed(result(source="some-new-scale"), 0.0)
    observer.reading_processed(result(source="care-team-upload"), 0.0)
    total = "weightstream_readings_total"
    assert value(observer, total, verdict="accepted", reason="ok", source="unknown") == 1
    assert value(observer, total, verdict="accepted", reason="ok", source="other") == 2
    assert value(observer, total, verdict="accepted", reason="ok", source="care-team-upload") == 1
    sources = {
        dict(labels)["source"]
        for (name, labels) in read_counters(observer.render().decode())
        if name == total
    }
    assert sources == {"unknown", "other", "care-team-upload"}


def test_default_known_sources_are_the_configured_ones() -> None:
    """Without known_sources, the sources of the default SourceConfig are the known ones."""
    observer = MetricsObserver()
    observer.reading_processed(result(source="https://connectivehealth.io"), 0.0)
    assert (
        value(
            observer,
            "weightstream_readings_total",
            verdict="accepted",
            reason="ok",
            source="https://connectivehealth.io",
        )
        == 1
    )


def test_unknown_reason_code_becomes_other(observer: MetricsObserver) -> None:
    """A reason that is not a Reason code (free text) is counted under `other`."""
    observer.reading_processed(result(Verdict.INVALID, "weight 87.654 looks odd"), 0.0)
    assert (
        value(
            observer,
            "weightstream_readings_total",
            verdict="invalid",
            reason="other",
            source="unknown",
        )
        == 1
    )


def test_committed_reset_counts_once_per_series(observer: MetricsObserver) -> None:
    """A committed reset adds 1 to resets{committed} and transactions{committed}, no rollback."""
    observer.reset_finished(audit(reset_type=ResetType.SOFT, duration_s=0.003))
    assert value(observer, "weightstream_resets_total", type="soft", outcome="committed") == 1
    assert (
        value(observer, "weightstream_reset_transactions_total", type="soft", result="committed")
        == 1
    )
    assert (
        value(observer, "weightstream_reset_transactions_total", type="soft", result="rolled_back")
        == 0
    )
    rollbacks = [
        v
        for (name, _), v in read_counters(observer.render().decode()).items()
        if name == "weightstream_transaction_rollbacks_total"
    ]
    assert rollbacks and sum(rollbacks) == 0
    assert value(observer, "weightstream_reset_duration_seconds_count") == 1
    assert value(observer, "weightstream_reset_duration_seconds_sum") == pytest.approx(0.003)
    assert value(observer, "weightstream_reset_duration_seconds_bucket", le="0.0025") == 0
    assert value(observer, "weightstream_reset_duration_seconds_bucket", le="0.005") == 1


@pytest.mark.parametrize(
    "fallback",
    [
        ResetOutcome.FALLBACK_LAST_GOOD,
        ResetOutcome.RECOVERED_HISTORY,
        ResetOutcome.RECOVERED_INTERPOLATED,
        ResetOutcome.CONSERVATIVE,
        ResetOutcome.FAILED,
    ],
)
def test_rolled_back_reset_counts_its_fallback_path(
    observer: MetricsObserver, fallback: ResetOutcome
) -> None:
    """A rolled-back reset is counted under its fallback path, as a rollback of its operation."""
    observer.reset_finished(
        audit(outcome="rolled_back", fallback=fallback, failed_operation="kalman_reset")
    )
    assert value(observer, "weightstream_resets_total", type="hard", outcome=fallback.value) == 1
    assert value(observer, "weightstream_resets_total", type="hard", outcome="committed") == 0
    assert (
        value(observer, "weightstream_reset_transactions_total", type="hard", result="rolled_back")
        == 1
    )
    assert (
        value(observer, "weightstream_transaction_rollbacks_total", operation="kalman_reset") == 1
    )


def test_rollback_without_fallback_or_known_operation(observer: MetricsObserver) -> None:
    """No fallback means outcome `failed`; a missing or unknown operation means `unknown`."""
    observer.reset_finished(audit(outcome="rolled_back", failed_operation=None))
    observer.reset_finished(audit(outcome="rolled_back", failed_operation="user-123 exploded"))
    assert value(observer, "weightstream_resets_total", type="hard", outcome="failed") == 2
    assert value(observer, "weightstream_transaction_rollbacks_total", operation="unknown") == 2


def test_rollback_verification_results(observer: MetricsObserver) -> None:
    """A verified rollback counts as restored or mismatch."""
    observer.rollback_verified("buffer_update", True)
    observer.rollback_verified("buffer_update", True)
    observer.rollback_verified("state_persist", False)
    name = "weightstream_rollback_verifications_total"
    assert value(observer, name, result="restored") == 2
    assert value(observer, name, result="mismatch") == 1


def test_breaker_gauge_and_transitions(observer: MetricsObserver) -> None:
    """The breaker gauge follows the state (0/1/2) and each transition is counted."""
    assert value(observer, "weightstream_breaker_state") == 0
    observer.breaker_changed("closed", "open")
    assert value(observer, "weightstream_breaker_state") == 1
    observer.breaker_changed("open", "half_open")
    assert value(observer, "weightstream_breaker_state") == 2
    observer.breaker_changed("half_open", "open")
    observer.breaker_changed("open", "half_open")
    observer.breaker_changed("half_open", "closed")
    assert value(observer, "weightstream_breaker_state") == 0
    name = "weightstream_breaker_transitions_total"
    assert value(observer, name, from_state="closed", to_state="open") == 1
    assert value(observer, name, from_state="open", to_state="half_open") == 2
    assert value(observer, name, from_state="half_open", to_state="open") == 1
    assert value(observer, name, from_state="half_open", to_state="closed") == 1


def test_recovery_attempts_by_strategy_and_result(observer: MetricsObserver) -> None:
    """Each recovery attempt adds 1 under its strategy and success/failure."""
    observer.recovery_attempted(RecoveryAttempt("u", "r", "history", True, "", AT))
    observer.recovery_attempted(RecoveryAttempt("u", "r", "interpolate", False, "", AT))
    observer.recovery_attempted(RecoveryAttempt("u", "r", "interpolate", False, "", AT))
    name = "weightstream_recovery_attempts_total"
    assert value(observer, name, strategy="history", result="success") == 1
    assert value(observer, name, strategy="interpolate", result="failure") == 2


def test_store_commit_duration_and_results(observer: MetricsObserver) -> None:
    """A store commit observes its duration and adds its row count."""
    observer.store_committed(0.004, 100)
    observer.store_committed(0.02, 5)
    assert value(observer, "weightstream_store_committed_results_total") == 105
    assert value(observer, "weightstream_store_commit_duration_seconds_count") == 2
    assert value(observer, "weightstream_store_commit_duration_seconds_sum") == pytest.approx(0.024)


def test_bad_durations_are_not_observed(observer: MetricsObserver) -> None:
    """A NaN duration is skipped and a negative one (clock stepped back) counts as 0."""
    observer.reading_processed(result(), float("nan"))
    observer.reading_processed(result(), -0.5)
    assert value(observer, "weightstream_reading_duration_seconds_count") == 1
    assert value(observer, "weightstream_reading_duration_seconds_sum") == 0


def test_bounded_series_exist_at_zero_before_any_event(observer: MetricsObserver) -> None:
    """Every bounded label combination is exported at 0 so rate() and the ratios see it."""
    samples = read_counters(observer.render().decode())
    for reset_type in ResetType:
        for outcome in ResetOutcome:
            key = frozenset({"type": reset_type.value, "outcome": outcome.value}.items())
            assert samples[("weightstream_resets_total", key)] == 0
        for res in ("committed", "rolled_back"):
            key = frozenset({"type": reset_type.value, "result": res}.items())
            assert samples[("weightstream_reset_transactions_total", key)] == 0
    for res in ("restored", "mismatch"):
        key = frozenset({"result": res}.items())
        assert samples[("weightstream_rollback_verifications_total", key)] == 0
    key = frozenset({"from_state": "closed", "to_state": "open"}.items())
    assert samples[("weightstream_breaker_transitions_total", key)] == 0


def test_label_sets_are_the_enums_values() -> None:
    """Each bounded label set is read off its enum, and keeps the text the rules match."""
    assert list(BREAKER_STATES) == [state.value for state in CircuitState]
    assert BREAKER_STATES == {"closed": 0, "open": 1, "half_open": 2}  # the gauge's documented codes
    assert (*(op.value for op in ResetOperation), "unknown") == ROLLBACK_OPERATIONS
    assert tuple(o.value for o in AuditOutcome if o is not AuditOutcome.BREAKER_OPEN) == TRANSACTION_RESULTS
    assert TRANSACTION_RESULTS == ("committed", "rolled_back")  # deploy/prometheus matches these


def test_every_failed_operation_has_its_own_rollback_series(observer: MetricsObserver) -> None:
    """A rollback in each ResetOperation counts under that operation's name, not ``unknown``."""
    for op in ResetOperation:
        observer.reset_finished(audit(outcome="rolled_back", failed_operation=op.value))
        assert value(observer, "weightstream_transaction_rollbacks_total", operation=op.value) == 1
    assert value(observer, "weightstream_transaction_rollbacks_total", operation="unknown") == 0


def test_audit_outcomes_keep_their_stored_text() -> None:
    """The audit outcomes are the strings already stored in databases; only breaker_open ran none."""
    assert {o.value: o.ran for o in AuditOutcome} == {
        "committed": True, "rolled_back": True, "breaker_open": False,
    }


def test_histogram_buckets_cover_the_thresholds() -> None:
    """Reset buckets span 10 µs..1 s with 5 ms and 10 ms bounds; reading buckets 1 µs..100 ms."""
    assert RESET_DURATION_BUCKETS[0] == 1e-5 and RESET_DURATION_BUCKETS[-1] == 1.0
    assert 0.005 in RESET_DURATION_BUCKETS and 0.01 in RESET_DURATION_BUCKETS
    assert READING_DURATION_BUCKETS[0] == 1e-6 and READING_DURATION_BUCKETS[-1] == 0.1
    for buckets in (RESET_DURATION_BUCKETS, READING_DURATION_BUCKETS):
        assert list(buckets) == sorted(set(buckets))


def test_no_metric_carries_a_per_user_label(observer: MetricsObserver) -> None:
    """After every hook has fired, no label is user-like and no value is a user or reading id."""
    exercise_every_hook(observer)
    forbidden = {"user", "user_id", "userid", "patient", "patient_id", "reading_id", "id"}
    seen_names: set[str] = set()
    for family in observer.registry.collect():
        for sample in family.samples:
            seen_names.add(sample.name)
            for label, label_value in sample.labels.items():
                assert label.lower() not in forbidden, (sample.name, label)
                assert "user" not in label.lower() and "patient" not in label.lower()
                assert "user-123" not in label_value and "reading-456" not in label_value
                assert "87.654" not in label_value
    # Every metric family was exercised (the check above is not vacuous).
    for name in (
        "weightstream_readings_total",
        "weightstream_resets_total",
        "weightstream_reset_transactions_total",
        "weightstream_transaction_rollbacks_total",
        "weightstream_rollback_verifications_total",
        "weightstream_breaker_state",
        "weightstream_breaker_transitions_total",
        "weightstream_recovery_attempts_total",
        "weightstream_store_committed_results_total",
        "weightstream_store_commit_duration_seconds_count",
        "weightstream_reset_duration_seconds_count",
        "weightstream_reading_duration_seconds_count",
    ):
        assert name in seen_names


def test_observers_have_independent_registries() -> None:
    """Two observers never share counters (no process-global registry)."""
    first, second = MetricsObserver(known_sources=()), MetricsObserver(known_sources=())
    first.store_committed(0.001, 3)
    assert value(first, "weightstream_store_committed_results_total") == 3
    assert value(second, "weightstream_store_committed_results_total") == 0


def test_given_registry_is_used() -> None:
    """Metrics register in the registry passed to the constructor."""
    registry = CollectorRegistry()
    observer = MetricsObserver(registry=registry, known_sources=())
    assert observer.registry is registry
    assert registry.get_sample_value("weightstream_breaker_state") == 0


# -- textfile ------------------------------------------------------------------------------


def test_write_textfile_writes_the_exposition(observer: MetricsObserver, tmp_path: Path) -> None:
    """The textfile holds the full exposition, is world-readable and leaves no temp file."""
    exercise_every_hook(observer)
    target = tmp_path / "weightstream.prom"
    observer.write_textfile(target)
    text = target.read_text()
    assert text.encode() == observer.render()
    assert read_counters(text)[("weightstream_store_committed_results_total", frozenset())] == 12
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["weightstream.prom"]


@pytest.fixture
def old_textfile(observer: MetricsObserver, tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    target = tmp_path / "weightstream.prom"
    observer.write_textfile(target)
    old = target.read_bytes()
    exercise_every_hook(observer)  # the next write would differ
    assert observer.render() != old
    yield target, old


def test_write_textfile_keeps_old_file_when_replace_fails(
    observer: MetricsObserver,
    old_textfile: tuple[Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the rename fails the error propagates, the old file is intact and no temp remains."""
    target, old = old_textfile

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "read-only directory")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        observer.write_textfile(target)
    assert target.read_bytes() == old
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_write_textfile_keeps_old_file_when_disk_is_full(
    observer: MetricsObserver,
    old_textfile: tuple[Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If flushing the new text fails (ENOSPC) the old file is intact and no temp remains."""
    target, old = old_textfile

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as raised:
        observer.write_textfile(target)
    assert raised.value.errno == errno.ENOSPC
    assert target.read_bytes() == old
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_write_textfile_to_missing_directory_fails(
    observer: MetricsObserver, tmp_path: Path
) -> None:
    """Writing into a directory that does not exist raises and creates nothing."""
    with pytest.raises(FileNotFoundError):
        observer.write_textfile(tmp_path / "absent" / "weightstream.prom")
    assert list(tmp_path.iterdir()) == []


# -- HTTP ----------------------------------------------------------------------------------


def test_serve_exposes_metrics_over_http(observer: MetricsObserver) -> None:
    """serve(0) listens on 127.0.0.1 and a scrape of /metrics returns this registry."""
    observer.store_committed(0.001, 7)
    server = observer.serve(0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    samples = read_counters(body)
    assert samples[("weightstream_store_committed_results_total", frozenset())] == 7
    assert ("weightstream_breaker_state", frozenset()) in samples


_RECORD = """
import sys
from weightstream.metrics import MetricsObserver, read_counters
from weightstream.model import Result, Verdict

observer = MetricsObserver()
for i in range(int(sys.argv[1])):
    observer.reading_processed(Result(f"r{i}", "u", Verdict.ACCEPTED, source="x"), 0.001)
if sys.argv[2] == "open":
    observer.breaker_changed("closed", "open")
text = observer.render().decode()
total = sum(
    v for (name, _), v in read_counters(text).items() if name == "weightstream_readings_total"
)
state = [line for line in text.splitlines() if line.startswith("weightstream_breaker_state")]
print(total, state[0].split()[-1])
"""


def _record(env: dict[str, str], readings: int, breaker: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _RECORD, str(readings), breaker],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()
    return float(out[0]), float(out[1])


def test_processes_sharing_a_multiprocess_directory_render_each_others_series(
    tmp_path: Path,
) -> None:
    """``serve --workers``: with ``PROMETHEUS_MULTIPROC_DIR`` set, what one process renders
    counts what the others recorded (counters summed; the breaker gauge the largest among
    processes not marked dead); without it, each process renders its own."""
    from prometheus_client import multiprocess

    base = {k: v for k, v in os.environ.items() if k != MULTIPROCESS_ENV}
    shared = {**base, MULTIPROCESS_ENV: str(tmp_path)}
    assert _record(shared, 3, "open") == (3.0, 1.0)
    assert _record(shared, 4, "closed") == (7.0, 1.0)  # the first one's breaker still counts
    for pid_file in tmp_path.glob("gauge_livemax_*.db"):
        pid = pid_file.stem.rsplit("_", 1)[-1]
        multiprocess.mark_process_dead(int(pid), str(tmp_path))  # as the supervisor does
    assert _record(shared, 1, "closed") == (8.0, 0.0)  # counts stay, dead gauges leave
    assert _record(base, 2, "closed") == (2.0, 0.0)
