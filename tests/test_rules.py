"""Outlier rules: each fires exactly in its case and not just outside it (G3, G4, G5)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from weightstream.config import RuleConfig
from weightstream.model import Reason
from weightstream.rules import (
    LB_PER_KG,
    Rejection,
    RuleContext,
    bmi_value,
    default_rules,
    first_rejection,
    innovation_gate,
    rate_of_change,
    reset_rules,
    unit_error,
)
from weightstream.testing import T0

CFG = RuleConfig()
# Default posterior variance after an initial reset plus R: 4 * 0.5 + 0.64 (about 1.6 kg sd).
S_RESET = 4 * 0.5 + 0.64
S_STEADY = 0.3 + 0.64


def ctx(
    weight: float,
    expected: float = 80.0,
    *,
    s: float = S_STEADY,
    last: float | None = None,
    days: float = 1.0,
    trend: float = 0.0,
    adapting: bool = False,
    config: RuleConfig = CFG,
) -> RuleContext:
    """A RuleContext for ``weight`` against ``expected`` (the last accepted defaults to it)."""
    return RuleContext(
        weight_kg=weight,
        timestamp=T0,
        expected_kg=expected,
        innovation=weight - expected,
        innovation_var=s,
        last_accepted_kg=expected if last is None else last,
        days_since_accepted=days,
        trend_kg_per_day=trend,
        adapting=adapting,
        config=config,
    )


def reason(rejection: Rejection | None) -> Reason | None:
    return None if rejection is None else rejection.reason


# -- unit_error (G3) ------------------------------------------------------------------------


def test_unit_error_pounds_labelled_as_kg():
    """G3: 176.4 in an ~80 kg history is pounds labelled as kg."""
    assert reason(unit_error(ctx(176.4, 80.0))) is Reason.PROBABLE_UNIT_ERROR


def test_unit_error_kg_converted_twice():
    """G3: 36.3 in an ~80 kg history is kilograms converted from pounds a second time."""
    assert reason(unit_error(ctx(36.3, 80.0))) is Reason.PROBABLE_UNIT_ERROR


@pytest.mark.parametrize("expected", [45.0, 80.0, 130.0, 220.0])
def test_unit_error_boundaries(expected: float):
    """unit_error fires inside the relative tolerance around x2.2046 and /2.2046, not outside."""
    tol = CFG.unit_error_tolerance
    up = expected * LB_PER_KG
    down = expected / LB_PER_KG
    for centre in (up, down):
        assert unit_error(ctx(centre, expected)) is not None
        assert unit_error(ctx(centre * (1 + 0.9 * tol), expected)) is not None
        assert unit_error(ctx(centre * (1 - 0.9 * tol), expected)) is not None
        assert unit_error(ctx(centre * (1 + 1.2 * tol), expected)) is None
        assert unit_error(ctx(centre * (1 - 1.2 * tol), expected)) is None


def test_unit_error_silent_for_ordinary_readings():
    """A plausible weight near the expectation is not a unit error."""
    for w in (70.0, 78.0, 80.0, 83.5, 95.0, 120.0):
        assert unit_error(ctx(w, 80.0)) is None


# -- bmi_value (G4) --------------------------------------------------------------------------


def test_bmi_value_fires_for_bmi_sized_number():
    """G4: 27.5 where ~90 kg is expected looks like a BMI."""
    assert reason(bmi_value(ctx(27.5, 90.0))) is Reason.PROBABLE_BMI


def test_bmi_value_range_is_inclusive():
    """The BMI range's ends are inside it; just outside them nothing fires."""
    low, high = CFG.bmi_range
    assert bmi_value(ctx(low, 150.0)) is not None
    assert bmi_value(ctx(high, 150.0)) is not None
    assert bmi_value(ctx(low - 0.01, 150.0)) is None
    assert bmi_value(ctx(high + 0.01, 150.0)) is None


def test_bmi_value_needs_a_much_larger_expected_weight():
    """A BMI-sized value is fine when it is near the expected weight (a light person)."""
    assert bmi_value(ctx(25.0, 41.0)) is None  # 25 > 0.6 * 41 = 24.6
    # 0.6 * expected is the boundary: just above it fires, just below it does not.
    assert bmi_value(ctx(40.0, 40.0 / 0.6 + 0.1)) is not None
    assert bmi_value(ctx(40.0, 40.0 / 0.6 - 0.1)) is None
    assert bmi_value(ctx(45.0, 46.0)) is None


# -- rate_of_change --------------------------------------------------------------------------


def test_rate_of_change_limit_grows_with_days():
    """Allowed change is slack + max_rate * days around the last accepted weight."""
    allowed = CFG.rate_slack_kg + CFG.max_rate_kg_per_day * 2.0  # 6 kg over two days
    assert rate_of_change(ctx(80.0 + allowed + 0.1, last=80.0, days=2.0)) is not None
    assert rate_of_change(ctx(80.0 + allowed - 0.1, last=80.0, days=2.0)) is None
    assert rate_of_change(ctx(80.0 - allowed - 0.1, last=80.0, days=2.0)) is not None
    assert rate_of_change(ctx(80.0 - allowed + 0.1, last=80.0, days=2.0)) is None
    assert reason(rate_of_change(ctx(90.0, last=80.0, days=2.0))) is Reason.RATE_OF_CHANGE


SLACK3 = RuleConfig(rate_slack_kg=3.0)


def test_rate_of_change_follows_the_trend():
    """The allowed window is centred on last accepted + trend * days."""
    # trend -0.5 kg/day over 2 days: centre 79, allowed +-6.
    assert rate_of_change(ctx(72.9, last=80.0, days=2.0, trend=-0.5, config=SLACK3)) is not None
    assert rate_of_change(ctx(73.1, last=80.0, days=2.0, trend=-0.5, config=SLACK3)) is None
    assert rate_of_change(ctx(85.1, last=80.0, days=2.0, trend=-0.5, config=SLACK3)) is not None
    assert rate_of_change(ctx(84.9, last=80.0, days=2.0, trend=-0.5, config=SLACK3)) is None


def test_rate_of_change_without_history_or_with_negative_days():
    """No last accepted weight: no opinion; a negative gap counts as zero days."""
    no_history = replace(ctx(200.0), last_accepted_kg=None)
    assert rate_of_change(no_history) is None
    assert rate_of_change(ctx(83.1, last=80.0, days=-5.0, config=SLACK3)) is not None
    assert rate_of_change(ctx(82.9, last=80.0, days=-5.0, config=SLACK3)) is None


# -- innovation gate (G5) -------------------------------------------------------------------


def test_innovation_gate_tighter_than_adapting_gate():
    """A reading between the normal and the adapting gate is rejected only when not adapting."""
    sd = math.sqrt(S_STEADY)
    between = 80.0 + 0.5 * (CFG.gate_sigma + CFG.adapting_gate_sigma) * sd
    assert reason(innovation_gate(ctx(between))) is Reason.INNOVATION_OUTLIER
    assert innovation_gate(ctx(between, adapting=True)) is None
    assert innovation_gate(ctx(80.0 + (CFG.gate_sigma - 0.05) * sd)) is None
    assert innovation_gate(ctx(80.0 - (CFG.gate_sigma + 0.05) * sd)) is not None
    beyond = 80.0 + (CFG.adapting_gate_sigma + 0.05) * sd
    assert innovation_gate(ctx(beyond, adapting=True)) is not None


@pytest.mark.parametrize("s", [0.0, -1.0, math.nan, math.inf])
def test_innovation_gate_rejects_unusable_uncertainty(s: float):
    """A non-positive or non-finite S is itself a rejection, never a division error."""
    assert reason(innovation_gate(ctx(80.0, s=s))) is Reason.INNOVATION_OUTLIER


@pytest.mark.parametrize(("weight", "expected"), [(177.0, 77.0), (59.0, 95.0)])
@pytest.mark.parametrize("adapting", [False, True])
@pytest.mark.parametrize("s", [S_STEADY, S_RESET])
def test_g5_far_readings_rejected_even_while_adapting(
    weight: float, expected: float, adapting: bool, s: float
):
    """G5: 177 for 77 kg and 59 for 95 kg are rejected, even with the adapting gate."""
    c = ctx(weight, expected, s=s, adapting=adapting, days=1.0)
    assert innovation_gate(c) is not None
    assert first_rejection(default_rules(), c) is not None


# -- ordering -------------------------------------------------------------------------------


def test_first_rejection_reports_the_most_specific_reason():
    """A pounds value fails every gate but is reported as a unit error, not an outlier."""
    c = ctx(176.4, 80.0, days=1.0)
    assert rate_of_change(c) is not None and innovation_gate(c) is not None
    assert reason(first_rejection(default_rules(), c)) is Reason.PROBABLE_UNIT_ERROR


def test_unit_error_beats_bmi():
    """36.3 for 80 kg is BMI-sized too, but the unit error is the more specific reason."""
    c = ctx(36.3, 80.0)
    assert bmi_value(c) is not None
    assert reason(first_rejection(default_rules(), c)) is Reason.PROBABLE_UNIT_ERROR


def test_bmi_beats_rate_and_innovation():
    """A BMI-sized value is reported as probable_bmi, not as a rate or innovation outlier."""
    c = ctx(28.0, 90.0)
    assert reason(first_rejection(default_rules(), c)) is Reason.PROBABLE_BMI


def test_rate_beats_innovation():
    """When both fire, the rate-of-change reason comes before the innovation gate."""
    c = ctx(95.0, 80.0)
    assert innovation_gate(c) is not None
    assert reason(first_rejection(default_rules(), c)) is Reason.RATE_OF_CHANGE


def test_plausible_reading_passes_all_rules():
    """A reading near the prediction passes every default rule."""
    assert first_rejection(default_rules(), ctx(80.6, 80.0)) is None
    assert first_rejection((), ctx(500.0, 80.0)) is None


def test_reset_rules_refuse_implausible_jump():
    """A reset-triggering reading more than 35% from the last accepted weight is refused."""
    limit = CFG.reset_max_relative_change
    ok = ctx(80.0 * (1 + limit - 0.01), 80.0, days=60.0)
    bad = ctx(80.0 * (1 + limit + 0.01), 80.0, days=60.0)
    assert first_rejection(reset_rules(), ok) is None
    assert reason(first_rejection(reset_rules(), bad)) is Reason.IMPLAUSIBLE_RESET
    low = ctx(80.0 * (1 - limit - 0.01), 80.0, days=60.0)
    assert reason(first_rejection(reset_rules(), low)) is Reason.IMPLAUSIBLE_RESET
    # A pounds value at a reset is still reported as a unit error first.
    assert reason(first_rejection(reset_rules(), ctx(176.4, 80.0))) is Reason.PROBABLE_UNIT_ERROR
