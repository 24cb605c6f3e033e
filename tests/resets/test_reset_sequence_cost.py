"""The reset path's second cut (issue 11) changes no value, only how it is reached.

* the sequence hands its check a snapshot function and its arguments: a checked sequence
  validates exactly the snapshots it always did, an unchecked one builds none;
* the transaction reads the system clock without its wrapper, and an injected clock as before;
* a reset's quality (no rule context) is remembered per source and equals the formula;
* the policy's ``offsets_empty`` follows the offsets it describes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from weightstream.clock import SYSTEM_CLOCK
from weightstream.config import Config, OffsetConfig
from weightstream.model import Reason, ResetType, Verdict
from weightstream.offsets import from_config
from weightstream.resets import sequence
from weightstream.resets.sequence import run_reset, unchecked
from weightstream.resets.transaction import ResetTransaction
from weightstream.resets.validator import (
    ResetOperation,
    adaptation_snapshot,
    buffer_snapshot,
    kalman_snapshot,
    persist_snapshot,
)
from weightstream.step import Policy, ResetPlan, make_result, step
from weightstream.synth.options import DEFAULT_SOURCE_OFFSETS
from weightstream.testing import FakeClock, measurement


def _plans(policy: Policy) -> list[tuple[ResetPlan, Any]]:
    """An initial reset and a hard one (a 200-day gap), with their readings."""
    first = measurement(80.0, 0, source="patient-device")
    s = step(None, first, policy)
    assert s.reset is not None
    state, _ = run_reset(s.reset, first, policy, unchecked)
    later = measurement(86.0, 200, source="care-team-upload")
    s2 = step(state, later, policy)
    assert s2.reset is not None and s2.reset.decision.reset_type is ResetType.HARD
    return [(s.reset, first), (s2.reset, later)]


@pytest.mark.parametrize("which", [0, 1])
def test_a_checked_sequence_validates_the_same_snapshots(which: int) -> None:
    """Each operation's check receives what the snapshot functions make of the operation's
    own results (a first reading's reset and a hard one)."""
    policy = Policy(Config())
    plan, m = _plans(policy)[which]
    seen: list[tuple[ResetOperation, Any]] = []

    def record(op: ResetOperation, snapshot: Any, /, *args: Any) -> None:
        seen.append((op, snapshot(*args)))

    new, result = run_reset(plan, m, policy, record)
    manager, reset_type = policy.manager, plan.decision.reset_type
    assert new.kalman is not None
    assert seen == [
        (
            ResetOperation.KALMAN_RESET,
            kalman_snapshot(
                new.kalman, manager.reset_noise(reset_type), manager.measurement_var(m.source)
            ),
        ),
        (ResetOperation.ADAPTATION_CREATE, adaptation_snapshot(new.adaptation, m.timestamp)),
        (
            ResetOperation.BUFFER_UPDATE,
            buffer_snapshot(new.buffer, policy.config.resets.buffer_size),
        ),
        (
            ResetOperation.STATE_PERSIST,
            persist_snapshot(
                plan.base if plan.base.version else None,
                new,
                (new.kalman, new.adaptation, new.buffer),
            ),
        ),
    ]
    assert (new, result) == run_reset(plan, m, policy, unchecked)


def test_an_unchecked_sequence_builds_no_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the flag off no snapshot function runs, and the reset is the checked one."""
    policy = Policy(Config())
    checked = [run_reset(plan, m, policy, lambda op, f, /, *a: None) for plan, m in _plans(policy)]

    def refuse(*args: Any) -> Any:
        raise AssertionError("a snapshot was built for an unchecked sequence")

    for name in ("kalman_snapshot", "adaptation_snapshot", "buffer_snapshot", "persist_snapshot"):
        monkeypatch.setattr(sequence, name, refuse)
    plain = [run_reset(plan, m, policy, unchecked) for plan, m in _plans(policy)]
    assert plain == checked


def test_check_still_takes_a_thunk() -> None:
    """``check(op, thunk)`` (no arguments) validates ``thunk()``, as before the cut."""
    txn = ResetTransaction("u1")
    txn.check(ResetOperation.BUFFER_UPDATE, lambda: buffer_snapshot((), 20))
    assert txn.completed_operations == [ResetOperation.BUFFER_UPDATE]
    assert txn.audit().checkpoints == (("buffer_update", True),)


def test_the_transaction_reads_the_system_clock() -> None:
    """On the system clock the checkpoints, duration and audit time are the real clock's."""
    before_mono, before = time.monotonic(), datetime.now(UTC)
    txn = ResetTransaction("u1", clock=SYSTEM_CLOCK)
    txn.require_valid(ResetOperation.BUFFER_UPDATE, buffer_snapshot((), 20))
    txn.commit()
    audit = txn.audit()
    after_mono, after = time.monotonic(), datetime.now(UTC)
    assert before_mono <= txn.checkpoints[0].at <= after_mono
    assert 0.0 <= txn.duration_s <= after_mono - before_mono
    assert before <= audit.at <= after and audit.at.tzinfo is not None


def test_the_transaction_reads_an_injected_clock() -> None:
    """On a fake clock every time the transaction records is the fake clock's."""
    clock = FakeClock()
    txn = ResetTransaction("u1", clock=clock)
    clock.advance(2.0)
    txn.require_valid(ResetOperation.BUFFER_UPDATE, buffer_snapshot((), 20))
    clock.advance(3.0)
    txn.commit()
    clock.advance(7.0)
    audit = txn.audit()
    assert txn.checkpoints[0].at == clock.monotonic() - 10.0
    assert txn.duration_s == 5.0 == audit.duration_s
    assert audit.at == clock.now()


@pytest.mark.parametrize(
    "source", ["patient-device", "care-team-upload", "questionnaire", "no-such-source"]
)
def test_a_resets_quality_is_remembered_per_source(source: str) -> None:
    """A result with no rule context has quality 0.6 + 0.25 + 0.15 x the source's quality,
    the same on every call (first computed, then remembered)."""
    policy = Policy(Config())
    q = policy.source_quality(source)
    m = measurement(80.0, source=source)
    results = [
        make_result(policy, m, Verdict.ACCEPTED, Reason.OK, "", None, None) for _ in range(2)
    ]
    for r in results:
        assert r.quality == 0.6 * 1.0 + 0.25 * 1.0 + 0.15 * q
        assert r.quality_components == (("innovation", 1.0), ("rate", 1.0), ("source", q))


def test_offsets_empty_follows_the_offsets() -> None:
    """``offsets_empty`` is the offsets' ``empty``, also after the offsets are replaced."""
    policy = Policy(Config())
    assert policy.offsets_empty is policy.offsets.empty is True
    policy.offsets = from_config(OffsetConfig(sources=dict(DEFAULT_SOURCE_OFFSETS)))
    assert policy.offsets_empty is policy.offsets.empty is False
