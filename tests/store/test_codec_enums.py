"""Stored codes decode to their enums: a reason is a Reason, an audit outcome an AuditOutcome.

The text in the database is the enum's value (what the Prometheus rules and ``weightstream
resets --outcome`` match), and a stored code the enum does not know is corruption
(StateCorruptionError naming the field), not a free string carried on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from weightstream.errors import StateCorruptionError
from weightstream.model import (
    AuditOutcome,
    Measurement,
    Reason,
    ResetAudit,
    ResetType,
    Result,
    Verdict,
)
from weightstream.store import codec

T = datetime(2025, 2, 1, 7, 30, tzinfo=UTC)
M = Measurement("r1", "u1", T, 80.25, "kg", 80.25, "patient-device")
R = Result("r1", "u1", Verdict.REJECTED, Reason.RATE_OF_CHANGE, row=3, timestamp=T)
AUDIT = ResetAudit("u1", "r1", ResetType.HARD, "gap", AuditOutcome.ROLLED_BACK, None, None, 0.1, T)
#: Where the outcome stands in an audit row (found, not counted: the columns may grow).
OUTCOME = codec.audit_to_row(AUDIT).index("rolled_back")


def with_column(row: tuple[Any, ...], columns: tuple[str, ...], name: str, value: Any) -> tuple:
    out = list(row)
    out[columns.index(name)] = value
    return tuple(out)


def test_codes_are_stored_as_their_text_and_read_back_as_enum_members() -> None:
    """The row holds the plain text; decoding gives the member itself."""
    result_row = codec.result_to_row("in-1", R)
    assert type(result_row[codec.RESULT_COLUMNS.index("reason")]) is str
    assert codec.row_to_result(result_row).reason is Reason.RATE_OF_CHANGE
    _, read = codec.row_to_reading(codec.reading_to_row(M, R))
    assert read.reason is Reason.RATE_OF_CHANGE
    audit_row = codec.audit_to_row(AUDIT)
    assert type(audit_row[OUTCOME]) is str
    assert codec.row_to_audit(audit_row).outcome is AuditOutcome.ROLLED_BACK


@pytest.mark.parametrize("stored", ["rate-of-change", "RATE_OF_CHANGE", "", None, 3])
def test_an_unknown_stored_reason_is_state_corruption(stored: Any) -> None:
    """A results or readings row whose reason is no Reason raises, naming the field."""
    result_row = with_column(codec.result_to_row("in-1", R), codec.RESULT_COLUMNS, "reason", stored)
    with pytest.raises(StateCorruptionError, match="reason") as caught:
        codec.row_to_result(result_row)
    assert (caught.value.user_id, caught.value.reading_id) == ("u1", "r1")
    reading_row = with_column(codec.reading_to_row(M, R), codec.READING_COLUMNS, "reason", stored)
    with pytest.raises(StateCorruptionError, match="reason"):
        codec.row_to_reading(reading_row)


@pytest.mark.parametrize("stored", ["commited", "fallback_last_good", "", None])
def test_an_unknown_stored_audit_outcome_is_state_corruption(stored: Any) -> None:
    """An audit whose outcome is no AuditOutcome (a ResetOutcome is not one) raises."""
    row = list(codec.audit_to_row(AUDIT))
    row[OUTCOME] = stored
    with pytest.raises(StateCorruptionError, match="outcome"):
        codec.row_to_audit(tuple(row))


@pytest.mark.parametrize(
    "checkpoints",
    [
        (),
        (("kalman_reset", True), ("adaptation_create", True)),
        (("kalman_reset", True), ("adaptation_create", False)),
        [["kalman_reset", True]],  # given by hand as lists: not hashable, still stored
    ],
)
def test_an_audit_s_checkpoints_are_stored_as_json_pairs(checkpoints: Any) -> None:
    """The checkpoints' text (made once per distinct list) is the JSON of the pairs, and reads
    back as the same pairs, twice in a row (the second from the remembered text)."""
    audit = ResetAudit(
        "u1",
        "r1",
        ResetType.HARD,
        "gap",
        AuditOutcome.COMMITTED,
        None,
        None,
        0.1,
        T,
        checkpoints=checkpoints,
    )
    for _ in range(2):
        row = codec.audit_to_row(audit)
        assert json.loads(row[-1]) == [[op, ok] for op, ok in checkpoints]
        assert codec.row_to_audit(row).checkpoints == tuple((op, ok) for op, ok in checkpoints)
