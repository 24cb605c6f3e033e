"""Issue 13's decisions: each one changes an outcome, and switching it off brings the old one back.

Every test runs the same readings twice, with the default configuration and with the one
setting off, so it fails if the rule is missing (or does nothing).
"""

from __future__ import annotations

import pytest

from weightstream.config import Config, ResetConfig, RuleConfig
from weightstream.model import Reason, ResetType, Result, Verdict
from weightstream.processor import Processor
from weightstream.rules import TOO_FAST, RuleContext, rate_of_change, rate_slack
from weightstream.store.memory import MemoryStore
from weightstream.testing import T0, measurement

DEFAULT = Config()
IGLUCOSE = "https://api.iglucose.com"
#: The filter's variance for an iglucose reading (R = 0.64 x 3).
R_IGLUCOSE = 0.64 * 3.0
R_DEVICE = 0.64


def _rules(**changes: object) -> Config:
    return Config(rules=DEFAULT.rules.model_copy(update=changes))


def _resets(**changes: object) -> Config:
    return Config(resets=DEFAULT.resets.model_copy(update=changes))


def _run(config: Config, readings: list[tuple[float, float, str]]) -> list[Result]:
    """(kg, day, source) readings of one user through a fresh processor."""
    p = Processor(MemoryStore(), config)
    return [p.process_one(measurement(kg, day, source=src)) for kg, day, src in readings]


def _decisions(results: list[Result]) -> list[tuple[Verdict, ResetType | None]]:
    return [(r.verdict, r.reset_type) for r in results]


# -- the rate rule: its slack grows with the source's noise and the days between readings ------


def _rate_ctx(change: float, days: float, r: float, config: RuleConfig) -> RuleContext:
    q_w, p_trend = 0.02, 0.0025  # the defaults' level walk and a fresh filter's trend doubt
    return RuleContext(
        weight_kg=80.0 + change,
        timestamp=T0,
        expected_kg=80.0,
        innovation=change,
        innovation_var=1.0,
        last_accepted_kg=80.0,
        days_since_accepted=days,
        trend_kg_per_day=0.0,
        adapting=False,
        config=config,
        change_var=2.0 * r + q_w * days + p_trend * days * days,
    )


def test_the_rate_rule_allows_more_for_a_noisy_source() -> None:
    """9 kg in half a day: two iglucose readings' scatter (sd 2 kg) allows it, a scale's does not."""
    noisy = _rate_ctx(9.0, 0.5, R_IGLUCOSE, DEFAULT.rules)
    assert rate_of_change(noisy) is None
    assert rate_of_change(_rate_ctx(9.0, 0.5, R_DEVICE, DEFAULT.rules)) is TOO_FAST
    fixed = RuleConfig(rate_noise_sigmas=0.0)
    assert rate_of_change(_rate_ctx(9.0, 0.5, R_IGLUCOSE, fixed)) is TOO_FAST


def test_the_rate_rules_noise_allowance_grows_with_the_square_root_of_the_days() -> None:
    """The slack for noise is k sqrt(2R + q d + P_trend d^2): it grows with d, never below 6 kg."""
    cfg = DEFAULT.rules
    slack = [rate_slack(cfg, _rate_ctx(0.0, d, R_IGLUCOSE, cfg).change_var) for d in (0, 4, 16)]
    assert slack[0] < slack[1] < slack[2]
    assert slack[0] == pytest.approx(cfg.rate_noise_sigmas * (2.0 * R_IGLUCOSE) ** 0.5)
    assert rate_slack(cfg, 2.0 * R_DEVICE) == cfg.rate_slack_kg  # a scale: the fixed slack
    assert rate_slack(RuleConfig(rate_noise_sigmas=0.0), 100.0) == cfg.rate_slack_kg


def test_a_noisy_integrations_jump_is_not_rejected_as_too_fast() -> None:
    """An iglucose user's second reading 8.5 kg off half a day later: noise, not a body change."""
    readings = [(80.0, 0.0, IGLUCOSE), (88.5, 0.5, IGLUCOSE)]
    assert _run(DEFAULT, readings)[1].verdict is Verdict.ACCEPTED
    old = _run(_rules(rate_noise_sigmas=0.0), readings)[1]
    assert (old.verdict, old.reason) == (Verdict.REJECTED, Reason.RATE_OF_CHANGE)


# -- a first reading that the next one disproves --------------------------------------------


def test_a_bmi_sized_first_value_gives_way_to_the_next_reading_at_once() -> None:
    """29 'kg' then 80 kg: the first was a BMI; the filter restarts at 80 without rejecting it."""
    readings = [(29.0, 0.0, "patient-device"), (80.0, 1.0, "patient-device")]
    new = _run(DEFAULT, readings)[1]
    assert (new.verdict, new.reset_type) == (Verdict.ACCEPTED, ResetType.HARD)
    assert new.filtered_weight == pytest.approx(80.0)
    assert _run(_rules(baseline_checks=False), readings)[1].verdict is Verdict.REJECTED


def test_a_typed_first_entry_gives_way_to_the_scale() -> None:
    """A questionnaire's 177 (for 77), then the scale's 77: the scale wins at its first reading."""
    readings = [(177.0, 0.0, "initial-questionnaire"), (77.0, 1.0, "patient-device")]
    new = _run(DEFAULT, readings)[1]
    assert (new.verdict, new.reset_type) == (Verdict.ACCEPTED, ResetType.HARD)
    assert _run(_rules(baseline_checks=False), readings)[1].verdict is Verdict.REJECTED


def test_a_scale_reading_that_agrees_with_a_manual_first_entry_restarts_nothing() -> None:
    """A questionnaire's 78, then the scale's 77.2: within soft_threshold_kg, an ordinary step."""
    readings = [(78.0, 0.0, "initial-questionnaire"), (77.2, 1.0, "patient-device")]
    assert _decisions(_run(DEFAULT, readings))[1] == (Verdict.ACCEPTED, None)


def test_a_filter_resting_on_one_reading_gives_way_to_two() -> None:
    """125 (another person), then 80 and 80.1: the second real reading restarts the filter."""
    readings = [(125.0, 0.0, "patient-device"), (80.0, 1.0, "patient-device")]
    readings.append((80.1, 2.0, "patient-device"))
    assert _decisions(_run(DEFAULT, readings))[1:] == [
        (Verdict.REJECTED, None),
        (Verdict.ACCEPTED, ResetType.HARD),
    ]
    old = _decisions(_run(_rules(streak_single_reading=3), readings))
    assert old[2] == (Verdict.REJECTED, None)


# -- manual entries ---------------------------------------------------------------------------


def _history() -> list[tuple[float, float, str]]:
    return [(80.0 + 0.1 * (i % 3), float(i), "patient-device") for i in range(12)]


def test_a_manual_entry_a_few_kg_off_is_a_reading_not_a_reset() -> None:
    """A care-team entry 4 kg off a settled filter: accepted without a reset, and it moves the
    filter no further than a 1.5-sigma reading would (a Huber step)."""
    entry = (84.0, 12.0, "care-team-upload")
    results = _run(DEFAULT, [*_history(), entry])
    before, new = results[-2], results[-1]
    assert (new.verdict, new.reset_type) == (Verdict.ACCEPTED, None)
    assert before.filtered_weight is not None and new.filtered_weight is not None
    moved = new.filtered_weight - before.filtered_weight
    plain = _run(_rules(manual_robust_sigma=0.0), [*_history(), entry])[-1]
    assert plain.filtered_weight is not None
    assert 0.0 < moved < 0.5 * (plain.filtered_weight - before.filtered_weight)
    old = _run(_resets(manual_reset_sigma=0.0), [*_history(), entry])[-1]
    assert old.reset_type is ResetType.SOFT  # the plan: 3 kg off a manual entry resets


def test_a_manual_entry_beyond_the_gate_but_within_the_reset_sigma_is_accepted() -> None:
    """A care-team entry 5.5 kg off (about 6 sigma): the gate of 4.5 would reject it, a manual
    entry is judged at manual_reset_sigma instead."""
    results = _run(DEFAULT, [*_history(), (85.5, 12.0, "care-team-upload")])
    assert _decisions(results)[-1] == (Verdict.ACCEPTED, None)
    device = _run(DEFAULT, [*_history(), (85.5, 12.0, "patient-device")])[-1]
    assert device.verdict is Verdict.REJECTED  # the same value from a scale is an outlier


def test_a_manual_entry_far_beyond_the_reset_sigma_still_resets() -> None:
    """A care-team entry 12 kg off (many sigmas): the soft reset of the plan."""
    results = _run(DEFAULT, [*_history(), (92.0, 12.0, "care-team-upload")])
    assert _decisions(results)[-1] == (Verdict.ACCEPTED, ResetType.SOFT)


# -- a new level after a long gap -------------------------------------------------------------


def test_a_consistent_new_level_after_a_gap_wins() -> None:
    """45 days, then 115 kg after 80 (+44%, beyond the 35% a reset may jump): the first two are
    rejected as implausible, the third that agrees with them restarts the filter."""
    after = [(115.0 + 0.2 * i, 57.0 + i, "patient-device") for i in range(5)]
    results = _run(DEFAULT, [*_history(), *after])[12:]
    assert [r.reason for r in results[:2]] == [Reason.IMPLAUSIBLE_RESET] * 2
    assert _decisions(results)[2:] == [
        (Verdict.ACCEPTED, ResetType.HARD),
        (Verdict.ACCEPTED, None),
        (Verdict.ACCEPTED, None),
    ]
    old = _run(_rules(gap_streak=0), [*_history(), *after])[12:]
    assert all(r.reason is Reason.IMPLAUSIBLE_RESET for r in old)  # rejected for ever


def test_scattered_readings_after_a_gap_do_not_make_a_level() -> None:
    """After the gap, 115, 130, 145: they disagree with each other, so none becomes the level."""
    after = [(115.0, 57.0, "patient-device"), (130.0, 58.0, "patient-device")]
    after.append((145.0, 59.0, "patient-device"))
    results = _run(DEFAULT, [*_history(), *after])[12:]
    assert all(r.reason is Reason.IMPLAUSIBLE_RESET for r in results)


def test_the_plans_reset_settings_are_what_the_old_defaults_were() -> None:
    """Switching every issue-13 decision off is the plan's configuration (a sanity check of the
    switches the tests above compare against)."""
    off = Config(
        rules=RuleConfig(
            manual_robust_sigma=0.0,
            rate_noise_sigmas=0.0,
            baseline_checks=False,
            streak_single_reading=3,
            gap_streak=0,
        ),
        resets=ResetConfig(manual_reset_sigma=0.0),
    )
    assert off != DEFAULT
    readings = [(125.0, 0.0, "patient-device")]
    readings += [(80.0 + 0.1 * i, 1.0 + i, "patient-device") for i in range(4)]
    assert [r.verdict for r in _run(off, readings)[1:3]] == [Verdict.REJECTED] * 2
