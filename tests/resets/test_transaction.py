"""ResetTransaction: the plan's three tests, ported, plus the contract they were reaching for.

Porting notes. The plan's failed-validation test expected ``ValueError``: ours raises
:class:`ResetValidationError`, which *is* a ``ValueError``, so that test is kept as written and
additionally pins the subclass. The plan's exception test expected the ``RuntimeError`` itself
to escape: ours raises :class:`ResetError` chained to it (``__cause__``), naming user, operation
and reason, so that test expects ``ResetError`` and checks the chain.
"""

from __future__ import annotations

import pytest

from weightstream.errors import ResetError, ResetValidationError
from weightstream.model import ResetType
from weightstream.resets.transaction import ResetTransaction
from weightstream.resets.validator import ResetOperation
from weightstream.testing import FakeClock

VALID_KALMAN = {
    "x": [100.0, 0.0],
    "P": [[1.0, 0.0], [0.0, 0.01]],
    "F": [[1.0, 1.0], [0.0, 1.0]],
    "H": [[1.0, 0.0]],
    "Q": [[0.02, 0.0], [0.0, 2e-5]],
    "R": [[0.64]],
}


class TestPlanPorted:
    def test_successful_transaction(self) -> None:
        """A block whose checkpoint validates commits and keeps its completed operation."""
        with ResetTransaction("user1") as txn:
            txn.save_checkpoint(ResetOperation.KALMAN_RESET, VALID_KALMAN)
            assert txn.validate_checkpoint(ResetOperation.KALMAN_RESET)
            txn.mark_completed(ResetOperation.KALMAN_RESET)

        assert txn.completed_operations == [ResetOperation.KALMAN_RESET]
        assert txn.outcome == "committed"

    def test_failed_validation_rollback(self) -> None:
        """Leaving after a failed validation raises ResetValidationError (a ValueError)."""
        with pytest.raises(ValueError) as info:
            with ResetTransaction("user1") as txn:
                txn.save_checkpoint(ResetOperation.KALMAN_RESET, {"invalid": "state"})
                assert not txn.validate_checkpoint(ResetOperation.KALMAN_RESET)
        assert isinstance(info.value, ResetValidationError)
        assert txn.outcome == "rolled_back"

    def test_exception_triggers_rollback(self) -> None:
        """An exception in the block becomes ResetError chained to it (the plan expected the RuntimeError)."""
        with pytest.raises(ResetError) as info:
            with ResetTransaction("user1") as txn:
                txn.save_checkpoint(ResetOperation.KALMAN_RESET, VALID_KALMAN)
                raise RuntimeError("Simulated failure")
        assert isinstance(info.value.__cause__, RuntimeError)
        assert not isinstance(info.value, ResetValidationError)
        assert txn.outcome == "rolled_back"


def test_validation_error_names_user_operation_and_why() -> None:
    """The validation error carries the user, the failing operation and the validator's reason."""
    with pytest.raises(ResetValidationError) as info:
        with ResetTransaction("u7", reading_id="r9") as txn:
            txn.save_checkpoint(ResetOperation.KALMAN_RESET, {**VALID_KALMAN, "Q": [[0.0, 0], [0, 1]]})
            txn.validate_checkpoint(ResetOperation.KALMAN_RESET)
    err = info.value
    assert (err.user_id, err.reading_id, err.operation) == ("u7", "r9", "kalman_reset")
    assert "non-positive diagonal" in str(err)
    assert "user=u7" in str(err) and "operation=kalman_reset" in str(err)


def test_exception_error_names_the_operation_in_progress() -> None:
    """An exception after two completed steps is attributed to the third step."""
    with pytest.raises(ResetError) as info:
        with ResetTransaction("u1") as txn:
            txn.mark_completed(ResetOperation.KALMAN_RESET)
            txn.mark_completed(ResetOperation.ADAPTATION_CREATE)
            raise OSError("disk gone")
    assert info.value.operation == "buffer_update"
    assert "OSError: disk gone" in str(info.value)
    assert txn.failed_operation is ResetOperation.BUFFER_UPDATE


def test_require_valid_raises_at_once_and_stops_the_block() -> None:
    """require_valid raises at the failing step, so later steps never run."""
    ran_after = []
    with pytest.raises(ResetValidationError) as info:
        with ResetTransaction("u1") as txn:
            txn.require_valid(ResetOperation.BUFFER_UPDATE, {"buffer": [], "max_size": 20})
            txn.require_valid(ResetOperation.ADAPTATION_CREATE, {"adaptation_factor": 2.0})
            ran_after.append(True)
    assert ran_after == []
    assert info.value.operation == "adaptation_create"
    assert info.value.__cause__ is None  # not double-wrapped
    assert txn.completed_operations == [ResetOperation.BUFFER_UPDATE]


def test_rollback_runs_undos_in_reverse_then_verifies() -> None:
    """Rollback undoes staged writes newest first, then reports whether the original state is back."""
    log: list[str] = []
    verified: list[tuple[str, bool]] = []
    with pytest.raises(ResetError):
        with ResetTransaction(
            "u1",
            verify_restored=lambda: log == ["undo-b", "undo-a"],
            on_rollback_verified=lambda op, ok: verified.append((op, ok)),
        ) as txn:
            txn.add_undo(ResetOperation.KALMAN_RESET, lambda: log.append("undo-a"))
            txn.mark_completed(ResetOperation.KALMAN_RESET)
            txn.add_undo(ResetOperation.STATE_PERSIST, lambda: log.append("undo-b"))
            raise RuntimeError("boom")
    assert log == ["undo-b", "undo-a"]
    assert verified == [("adaptation_create", True)]


def test_a_failing_undo_does_not_stop_the_others() -> None:
    """One undo raising still lets the remaining undos run."""
    log: list[str] = []

    def broken() -> None:
        raise RuntimeError("undo broke")

    with pytest.raises(ResetError):
        with ResetTransaction("u1") as txn:
            txn.add_undo(ResetOperation.KALMAN_RESET, lambda: log.append("first"))
            txn.add_undo(ResetOperation.BUFFER_UPDATE, broken)
            raise ValueError("x")
    assert log == ["first"]


def test_commit_discards_undos() -> None:
    """A committed transaction never runs its undos."""
    log: list[str] = []
    with ResetTransaction("u1") as txn:
        txn.add_undo(ResetOperation.STATE_PERSIST, lambda: log.append("undo"))
    txn.rollback("late")  # after commit: a no-op
    assert log == [] and txn.outcome == "committed"


def test_keyboard_interrupt_rolls_back_and_propagates_unwrapped() -> None:
    """An interrupt undoes staged writes and escapes as itself, not as ResetError."""
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with ResetTransaction("u1") as txn:
            txn.add_undo(ResetOperation.STATE_PERSIST, lambda: log.append("undo"))
            raise KeyboardInterrupt
    assert log == ["undo"] and txn.outcome == "rolled_back"


def test_checkpoints_feed_the_audit() -> None:
    """The audit lists each checkpoint with its verdict, the outcome, failing step, reason and duration."""
    clock = FakeClock()
    with pytest.raises(ResetValidationError):
        with ResetTransaction(
            "u1", reading_id="r1", reset_type=ResetType.HARD, trigger="gap", clock=clock
        ) as txn:
            txn.require_valid(ResetOperation.KALMAN_RESET, VALID_KALMAN)
            clock.advance(0.25)
            txn.require_valid(ResetOperation.BUFFER_UPDATE, {"buffer": 3})
    audit = txn.audit()
    assert audit.checkpoints == (("kalman_reset", True), ("buffer_update", False))
    assert (audit.user_id, audit.reading_id, audit.reset_type, audit.trigger) == (
        "u1", "r1", ResetType.HARD, "gap",
    )
    assert audit.outcome == "rolled_back"
    assert audit.failed_operation == "buffer_update"
    assert audit.reason is not None and "buffer is not a sequence" in audit.reason
    assert audit.duration_s == 0.25
    assert audit.at == clock.now()


def test_committed_audit_has_no_failure() -> None:
    """A committed transaction's audit names no failed operation and no reason."""
    with ResetTransaction("u1") as txn:
        txn.require_valid(ResetOperation.KALMAN_RESET, VALID_KALMAN)
    audit = txn.audit()
    assert (audit.outcome, audit.failed_operation, audit.reason) == ("committed", None, None)


def test_validating_without_checkpoint_fails_the_transaction() -> None:
    """Validating an operation that saved no checkpoint dooms the transaction."""
    with pytest.raises(ResetValidationError, match="no checkpoint for state_persist"):
        with ResetTransaction("u1") as txn:
            assert not txn.validate_checkpoint(ResetOperation.STATE_PERSIST)


def test_first_failure_is_the_one_reported() -> None:
    """After a failed validation, a later failure does not overwrite the reported operation."""
    with pytest.raises(ResetValidationError) as info:
        with ResetTransaction("u1") as txn:
            txn.save_checkpoint(ResetOperation.KALMAN_RESET, {})
            txn.validate_checkpoint(ResetOperation.KALMAN_RESET)
            txn.save_checkpoint(ResetOperation.BUFFER_UPDATE, {})
            txn.validate_checkpoint(ResetOperation.BUFFER_UPDATE)
    assert info.value.operation == "kalman_reset"
