"""The frozen values' direct-slot constructors (issue 11) build exactly what ``@dataclass`` would.

``weightstream.frozen.fast_init`` gives a frozen slots dataclass an ``__init__`` that stores each
field through the slot's own setter instead of ``object.__setattr__``: the model's values, and
the values a step and a reset build (rule context and rejection, copy, reset plan and step,
the breaker's record, a recovered state). For every such class: the same
parameters in the same order with the same defaults as its fields, every stored value the very
object passed (positionally or by name), the same errors for a missing or unknown argument,
still frozen; and :meth:`Result.with_row` is ``dataclasses.replace(result, row=...)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from datetime import timedelta
from typing import Any

import pytest

from weightstream import model
from weightstream.copies import Copy
from weightstream.model import (
    AdaptationState,
    AuditOutcome,
    BufferedReading,
    KalmanState,
    Measurement,
    Reason,
    RecoveryAttempt,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
    UserState,
    Verdict,
)
from weightstream.resets.breaker import BreakerRecord
from weightstream.resets.recovery import RecoveredState
from weightstream.rules import Rejection, RuleContext
from weightstream.step import ResetPlan, Step
from weightstream.testing import T0, measurement

CLASSES = [
    Measurement,
    KalmanState,
    AdaptationState,
    BufferedReading,
    UserState,
    Result,
    ResetAudit,
    RecoveryAttempt,
    RuleContext,
    Rejection,
    Copy,
    ResetPlan,
    Step,
    BreakerRecord,
    RecoveredState,
]
SEED = 20261202


def _values(cls: type, rng: random.Random) -> dict[str, Any]:
    """A distinct object for every field of ``cls`` (identity is what the test follows)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "timestamp" or f.name.endswith("_at") or f.name == "adaptation_start":
            out[f.name] = T0 + timedelta(seconds=rng.randrange(10**6))
        elif f.name in ("user_id", "reading_id", "unit", "source", "content_key"):
            out[f.name] = f"{f.name}-{rng.randrange(10**6)}"
        else:
            out[f.name] = object()  # the constructor stores; it does not look
    if cls is Measurement:
        out["content_key"] = "h:given"  # a given key: __post_init__ computes nothing
    return out


def _reference(cls: type, values: dict[str, Any]) -> Any:
    """What the dataclass ``__init__`` does: every field through ``object.__setattr__``."""
    obj = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(obj, name, value)
    return obj


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_signature_follows_the_fields(cls: type) -> None:
    """Parameters are the fields in order, each with its field's default (or none)."""
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default is expected


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_stores_the_objects_passed(cls: type) -> None:
    """By position or by name, each slot holds the very object passed (seeded values)."""
    rng = random.Random(SEED)
    values = _values(cls, rng)
    for built in (cls(*values.values()), cls(**values)):
        for name, value in values.items():
            assert getattr(built, name) is value, name
        assert built == _reference(cls, values)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_and_errors(cls: type) -> None:
    """Omitted fields take their defaults; a missing or unknown argument raises TypeError;
    the value stays frozen."""
    fields = dataclasses.fields(cls)
    required = {
        f.name: v
        for f, v in zip(fields, _values(cls, random.Random(SEED)).values(), strict=True)
        if f.default is dataclasses.MISSING
    }
    built = cls(**required)
    for f in fields:
        if f.default is not dataclasses.MISSING and not (
            cls is Measurement and f.name == "content_key"
        ):
            assert getattr(built, f.name) is f.default, f.name
    if required:
        with pytest.raises(TypeError):
            cls(**dict(list(required.items())[1:]))
    with pytest.raises(TypeError):
        cls(**required, no_such_field=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.__setattr__(fields[0].name, None)


def test_measurement_still_computes_its_content_key() -> None:
    """Without a key, ``__post_init__`` still derives it from the reading's content."""
    m = measurement(80.0, 1)
    again = Measurement(
        m.reading_id, m.user_id, m.timestamp, m.value, m.unit, m.weight_kg, m.source
    )
    assert (
        again.content_key
        == m.content_key
        == model.content_key(m.user_id, m.timestamp, m.value, m.unit, m.source)
    )
    assert again.content_key.startswith("h:")


def test_a_blank_state_is_not_adapting() -> None:
    """A state built without an adaptation has the value ``AdaptationState()``."""
    assert UserState("u").adaptation == AdaptationState()
    assert not UserState("u").adaptation.is_adapting


@pytest.mark.parametrize("row", [None, 0, 7])
def test_with_row_is_replace(row: int | None) -> None:
    """``Result.with_row`` equals ``dataclasses.replace`` of the row, every other field kept."""
    rng = random.Random(SEED)
    full = Result(
        "r1",
        "u1",
        Verdict.REJECTED,
        Reason.RATE_OF_CHANGE,
        "m",
        3,
        T0,
        "patient-device",
        80.0,
        79.5,
        -0.1,
        0.4,
        ResetType.HARD,
        ResetOutcome.COMMITTED,
        rng.random(),
        (("innovation", rng.random()),),
        0.25,
    )
    assert all(getattr(full, f.name) != f.default for f in dataclasses.fields(Result))
    for r in (full, Result("r2", None, Verdict.INVALID)):
        assert r.with_row(row) == dataclasses.replace(r, row=row)
        assert r.with_row(row).row == row


def test_audit_fields_keep_their_order() -> None:
    """An audit built by position names its fields as one built by name does."""
    by_name = ResetAudit(
        user_id="u",
        reading_id="r",
        reset_type=ResetType.SOFT,
        trigger="t",
        outcome=AuditOutcome.COMMITTED,
        failed_operation=None,
        reason=None,
        duration_s=0.5,
        at=T0,
    )
    assert by_name == ResetAudit(
        "u", "r", ResetType.SOFT, "t", AuditOutcome.COMMITTED, None, None, 0.5, T0
    )


def _is_fast(cls: type) -> bool:
    """Whether ``cls.__init__`` is :func:`weightstream.frozen.fast_init`'s (it stores through
    the slots' setters, which its namespace holds)."""
    return any(name.startswith("_set_") for name in cls.__init__.__globals__)


def test_every_fast_built_class_is_tested() -> None:
    """Every class of the package given the fast ``__init__`` is one these tests compare with
    ``@dataclass``'s, and each of those has it."""
    import importlib
    import inspect
    import pathlib

    import weightstream

    root = pathlib.Path(weightstream.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        if "fast_init" not in path.read_text(encoding="utf-8") or path.name == "frozen.py":
            continue
        name = ".".join(("weightstream", *path.relative_to(root).with_suffix("").parts))
        module = importlib.import_module(name)
        found |= {
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == name and dataclasses.is_dataclass(c) and _is_fast(c)
        }
    assert found == set(CLASSES)
