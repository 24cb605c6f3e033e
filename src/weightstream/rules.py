"""Outlier rules: small policies that look at a reading against the filter and return a verdict.

Each rule is a callable ``rule(ctx) -> Rejection | None``. The engine runs them in order and
the first rejection wins, so the most specific reason is reported (a pound value mistaken for
kilograms is a ``probable_unit_error``, not merely an innovation outlier). Adding a rule means
adding a callable to :func:`default_rules`; the processor does not change. A rejection is a
value, never an exception, and a rejected reading never touches the filter or the buffer.

Suspicious values are excluded with a reason and never "corrected" (the reference system
multiplied 15-50 kg values by a default height, turning 45 kg into 125.5 kg).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from weightstream.config import RuleConfig
from weightstream.frozen import fast_init
from weightstream.model import Reason

__all__ = [
    "RuleContext",
    "Rejection",
    "Rule",
    "unit_error",
    "bmi_value",
    "rate_of_change",
    "rate_slack",
    "innovation_gate",
    "default_rules",
    "reset_rules",
    "ORDINARY_RULES",
    "RESET_RULES",
    "POUND_CORRECTION_RULES",
    "STREAK_UP_RULES",
    "STREAK_DOWN_RULES",
    "first_rejection",
    "LB_PER_KG",
    "POUNDS_AS_KG",
    "KG_CONVERTED_TWICE",
    "BMI_SIZED",
    "TOO_FAST",
    "UNCERTAINTY_UNUSABLE",
    "sigma_message",
]

LB_PER_KG = 1.0 / 0.45359237  # 2.2046226...


@fast_init
@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule may look at: the reading, the prediction and the last accepted weight.

    Weights are on the reference scale: ``weight_kg`` is the reading less its offset
    (:attr:`~weightstream.model.Measurement.filter_kg`), as the filter takes it.
    """

    weight_kg: float
    timestamp: datetime
    expected_kg: float  # predicted (or, for a reset, last accepted) weight
    innovation: float  # weight_kg - predicted
    innovation_var: float  # S = P00 + R
    last_accepted_kg: float | None
    days_since_accepted: float
    trend_kg_per_day: float
    adapting: bool
    config: RuleConfig
    # The variance of the change since the last accepted reading that noise explains: two
    # readings of this source and the level's drift over the days between them
    # (2 R + q_weight days + P_trend days^2; 0: not known, the fixed slack only).
    change_var: float = 0.0
    # The innovation gate is at least this many sigmas (a manual entry's: see
    # resets.manual_reset_sigma; 0: the configured gates alone).
    gate_floor_sigma: float = 0.0


@fast_init
@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    message: str


Rule = Callable[[RuleContext], Rejection | None]

# The rules' fixed verdicts (the innovation gate's message carries its sigma, so it has none).
# The file engine's compiled loop reports them by code and names them from here.
POUNDS_AS_KG = Rejection(Reason.PROBABLE_UNIT_ERROR, "value looks like pounds labelled as kg")
KG_CONVERTED_TWICE = Rejection(Reason.PROBABLE_UNIT_ERROR, "value looks like kg converted twice")
BMI_SIZED = Rejection(Reason.PROBABLE_BMI, "value is BMI-sized, far below the expected weight")
TOO_FAST = Rejection(Reason.RATE_OF_CHANGE, "change since the last accepted reading too fast")
UNCERTAINTY_UNUSABLE = Rejection(Reason.INNOVATION_OUTLIER, "filter uncertainty unusable")


def sigma_message(z: float) -> str:
    """The innovation gate's message for a reading ``z`` sigma from the prediction."""
    return f"{z:.1f} sigma from the prediction"


def unit_error(ctx: RuleContext) -> Rejection | None:
    """A value near expected x 2.2046 (pounds sent as kg) or expected / 2.2046."""
    tol = ctx.config.unit_error_tolerance
    ratio = ctx.weight_kg / ctx.expected_kg
    if abs(ratio / LB_PER_KG - 1.0) <= tol:
        return POUNDS_AS_KG
    if abs(ratio * LB_PER_KG - 1.0) <= tol:
        return KG_CONVERTED_TWICE
    return None


def bmi_value(ctx: RuleContext) -> Rejection | None:
    """A BMI-sized number where a much larger weight is expected."""
    low, high = ctx.config.bmi_range
    if low <= ctx.weight_kg <= high and ctx.weight_kg < 0.6 * ctx.expected_kg:
        return BMI_SIZED
    return None


def rate_of_change(ctx: RuleContext) -> Rejection | None:
    """More change since the last accepted reading than a body can make in that time.

    The allowance is the body's largest rate over the days since, plus a slack for noise:
    ``rate_slack_kg``, or ``rate_noise_sigmas`` standard deviations of the change that noise
    explains (:attr:`RuleContext.change_var`) when that is larger. So the slack grows with
    the source's noise (an integration's heavy scatter) and with the square root of the days
    between the readings (the level's random walk), not only linearly with them.
    """
    if ctx.last_accepted_kg is None:
        return None
    cfg = ctx.config
    days = max(0.0, ctx.days_since_accepted)
    allowed = rate_slack(cfg, ctx.change_var) + cfg.max_rate_kg_per_day * days
    drift = ctx.trend_kg_per_day * days
    if abs(ctx.weight_kg - (ctx.last_accepted_kg + drift)) > allowed:
        return TOO_FAST
    return None


def rate_slack(cfg: RuleConfig, change_var: float) -> float:
    """The rate rule's allowance for noise (kg): the fixed slack, or more for a noisy change.

    >>> rate_slack(RuleConfig(rate_slack_kg=6.0, rate_noise_sigmas=5.0), 4.0)
    10.0
    >>> rate_slack(RuleConfig(rate_slack_kg=6.0, rate_noise_sigmas=0.0), 4.0)
    6.0
    """
    slack = cfg.rate_slack_kg
    if cfg.rate_noise_sigmas > 0.0 and change_var > 0.0:
        noise = cfg.rate_noise_sigmas * math.sqrt(change_var)
        if noise > slack:
            slack = noise
    return slack


def innovation_gate(ctx: RuleContext) -> Rejection | None:
    """Normalised innovation |y| / sqrt(S) beyond the gate (looser while adapting)."""
    gate = ctx.config.adapting_gate_sigma if ctx.adapting else ctx.config.gate_sigma
    if ctx.gate_floor_sigma > gate:
        gate = ctx.gate_floor_sigma
    if ctx.innovation_var <= 0 or not math.isfinite(ctx.innovation_var):
        return UNCERTAINTY_UNUSABLE
    z = abs(ctx.innovation) / math.sqrt(ctx.innovation_var)
    if z > gate:
        return Rejection(Reason.INNOVATION_OUTLIER, sigma_message(z))
    return None


def default_rules() -> tuple[Rule, ...]:
    """Rules for an ordinary reading, most specific first."""
    return ORDINARY_RULES


def reset_rules() -> tuple[Rule, ...]:
    """Rules a reset-triggering reading must pass against the last accepted weight.

    The reference system accepted every reset-triggering reading unchecked, so after a long
    gap another person's weight or a BMI became the new baseline.
    """
    return (unit_error, bmi_value, _reset_jump)


def _reset_jump(ctx: RuleContext) -> Rejection | None:
    limit = ctx.config.reset_max_relative_change
    if abs(ctx.weight_kg / ctx.expected_kg - 1.0) > limit:
        return Rejection(Reason.IMPLAUSIBLE_RESET, "too far from the last accepted weight to reset")
    return None


#: An ordinary reading against the prediction, most specific first.
ORDINARY_RULES: tuple[Rule, ...] = (unit_error, bmi_value, rate_of_change, innovation_gate)
#: A reset-triggering reading (gap, manual entry) against the last accepted weight.
RESET_RULES: tuple[Rule, ...] = (unit_error, bmi_value, _reset_jump)
#: A pound-baseline correction: the reading is the correction, only the BMI check applies.
POUND_CORRECTION_RULES: tuple[Rule, ...] = (bmi_value,)
#: A streak above the baseline: unit error and BMI still apply; the jump is the point.
STREAK_UP_RULES: tuple[Rule, ...] = (unit_error, bmi_value)
#: A streak ~1/2.2046 below the baseline: the baseline was the unit error; only BMI applies.
STREAK_DOWN_RULES: tuple[Rule, ...] = (bmi_value,)


def first_rejection(rules: Sequence[Rule], ctx: RuleContext) -> Rejection | None:
    for rule in rules:
        rejection = rule(ctx)
        if rejection is not None:
            return rejection
    return None
