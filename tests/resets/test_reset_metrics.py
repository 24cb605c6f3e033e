"""Metrics of the reset path stay what they were when their bookkeeping is cut (issue 11).

The observer remembers labelled children and takes a stretch's per-row durations at once; the
exposition must be the same series with the same values as the plain calls give.
"""

from __future__ import annotations

import random

import pytest

from weightstream.metrics import (
    READING_DURATION_BUCKETS,
    MetricsObserver,
    _Histogram,
    read_counters,
)
from weightstream.model import (
    AuditOutcome,
    Reason,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
    Verdict,
)
from weightstream.observe import ReadingEvent
from weightstream.testing import T0

SOURCES = ["patient-device", "questionnaire"]


def _plain(observer: MetricsObserver) -> MetricsObserver:
    """``observer`` with nothing remembered: every call derives its labels afresh."""
    observer._reading_children = _Forgetful()  # type: ignore[assignment]
    observer._reset_children = _Forgetful()  # type: ignore[assignment]
    return observer


class _Forgetful(dict):  # type: ignore[type-arg]
    def __setitem__(self, key: object, value: object) -> None:
        pass


def _counts(observer: MetricsObserver) -> dict[object, float]:
    return {
        key: value
        for key, value in read_counters(observer.render().decode()).items()
        if not key[0].endswith(("_created", "_sum"))
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_remembered_children_give_the_same_series_and_counts(seed: int) -> None:
    """Random readings and resets: the same exposition with and without remembered children."""
    rng = random.Random(seed)
    observers = [
        MetricsObserver(known_sources=SOURCES),
        _plain(MetricsObserver(known_sources=SOURCES)),
    ]
    for _ in range(300):
        result = Result(
            f"r{rng.random()}",
            "u1",
            rng.choice(list(Verdict)),
            reason=rng.choice([*Reason, "bogus"]),  # type: ignore[arg-type]
            source=rng.choice([*SOURCES, "other-device", None, ""]),
        )
        audit = ResetAudit(
            user_id="u1",
            reading_id="r",
            reset_type=rng.choice([*ResetType, "bogus"]),  # type: ignore[arg-type]
            trigger="t",
            outcome=rng.choice(list(AuditOutcome)),
            failed_operation=rng.choice([None, "kalman_reset", "bogus"]),
            reason=None,
            duration_s=rng.choice([1e-5, 4e-5, 0.3]),
            at=T0,
            fallback=rng.choice([None, *ResetOutcome]),
        )
        rows: list[ReadingEvent] = [
            ("u1", "r", str(result.verdict), str(result.reason), result.source)
        ] * rng.randint(0, 3)
        for observer in observers:
            observer.reading_processed(result, 2e-5)
            observer.reset_finished(audit)
            observer.readings_processed(rows, 3e-6)
    remembered, plain = (_counts(o) for o in observers)
    assert remembered == plain
    assert any(v > 0 for k, v in remembered.items() if k[0] == "weightstream_resets_total")


@pytest.mark.parametrize(
    "amount", [0.0, 1e-6, 1.5e-6, 5e-6, 0.1, 0.2, 3.0, *READING_DURATION_BUCKETS[::5]]
)
@pytest.mark.parametrize("times", [0, 1, 7])
def test_observe_repeated_is_observe_that_many_times(amount: float, times: int) -> None:
    """Bucket counts, count and sum of one observe_repeated equal those of repeated observes."""
    from prometheus_client import CollectorRegistry

    many = _Histogram("h", "h", buckets=READING_DURATION_BUCKETS, registry=CollectorRegistry())
    once = _Histogram("h", "h", buckets=READING_DURATION_BUCKETS, registry=CollectorRegistry())
    many.observe(0.003)
    once.observe(0.003)
    for _ in range(times):
        many.observe(amount)
    once.observe_repeated(amount, times)

    def samples(h: _Histogram) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, s.value)
            for metric in h.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        ]

    assert samples(once) == samples(many)


def test_log_lines_that_are_off_derive_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """At WARNING (the CLI's level), a reset's and a reading's log lines build no fields."""
    import logging

    from weightstream import logs

    def boom(value: object) -> str | None:
        raise AssertionError("fields derived for a line that is off")

    monkeypatch.setattr(logs, "_code", boom)
    logger = logging.getLogger("weightstream.test.reset_lines")
    logger.setLevel(logging.WARNING)
    observer = logs.LogObserver(logger)
    audit = ResetAudit(
        "u1", "r", ResetType.HARD, "gap", AuditOutcome.COMMITTED, None, None, 1e-5, T0
    )
    observer.reset_finished(audit)
    observer.reading_processed(Result("r", "u1", Verdict.ACCEPTED), 1e-5)
    logger.setLevel(logging.INFO)
    with pytest.raises(AssertionError, match="line that is off"):
        observer.reset_finished(audit)  # on: its fields are derived (so the check above bites)
