"""Unit conversion: exact factors, and non-mass units refused (G3, G4)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightstream.config import UnitConfig
from weightstream.ingest import RowProblem, to_kg
from weightstream.ingest.units import KG_PER_LB, KG_PER_LB_AP, KG_PER_STONE
from weightstream.model import Reason

CFG = UnitConfig()


@pytest.mark.parametrize("unit", ["kg", "KG", " kg ", "kgs", "Kilogram", "kilograms"])
def test_kilogram_spellings_are_identity(unit: str) -> None:
    """Every spelling of kilograms returns the value unchanged."""
    assert to_kg(81.25, unit, CFG) == 81.25


@pytest.mark.parametrize("unit", [None, "", "   ", "\t"])
def test_missing_unit_means_kilograms(unit: str | None) -> None:
    """An absent or empty unit is read as kilograms, the exports' default."""
    assert to_kg(72.5, unit, CFG) == 72.5


@pytest.mark.parametrize("unit", ["g", "G", "gram", "grams"])
def test_grams_divide_by_one_thousand(unit: str) -> None:
    """Grams are converted by an exact division by 1000."""
    assert to_kg(80_500.0, unit, CFG) == 80.5


@pytest.mark.parametrize("unit", ["lb", "LBS", "pound", "Pounds", "[lb_av]", "[LB_AV]"])
def test_pound_spellings_use_the_exact_factor(unit: str) -> None:
    """Every pound spelling multiplies by exactly 0.45359237."""
    assert to_kg(176.37, unit, CFG) == 176.37 * 0.45359237


def test_pound_factor_round_trips_80_kg() -> None:
    """80 kg expressed in pounds converts back to 80 kg within 1e-9 relative."""
    pounds = 80.0 / 0.45359237  # 176.3698097... lb; note 176.37 lb is 80.0000863 kg
    result = to_kg(pounds, "lb", CFG)
    assert isinstance(result, float)
    assert math.isclose(result, 80.0, rel_tol=1e-9)
    assert math.isclose(to_kg(176.37, "lb", CFG), 80.0000863, rel_tol=1e-8)  # type: ignore[arg-type]


@given(st.floats(min_value=1.0, max_value=2000.0))
def test_pound_conversion_is_one_exact_multiplication(value: float) -> None:
    """For any value, the lb conversion equals value * 0.45359237 bit for bit."""
    assert to_kg(value, "lb", CFG) == value * KG_PER_LB


@pytest.mark.parametrize("unit", ["st", "stone", "STONES", "[stone_av]"])
def test_stone_is_fourteen_pounds(unit: str) -> None:
    """A stone is 6.35029318 kg, the same as 14 lb to within rounding."""
    result = to_kg(12.0, unit, CFG)
    assert result == 12.0 * KG_PER_STONE
    assert math.isclose(12.0 * KG_PER_STONE, 12.0 * 14 * KG_PER_LB, rel_tol=1e-15)


def test_lb_ap_is_an_ordinary_pound_by_default() -> None:
    """With the default config, [lb_ap] is converted as an avoirdupois pound."""
    assert to_kg(200.0, "[lb_ap]", UnitConfig()) == 200.0 * 0.45359237


def test_lb_ap_uses_the_apothecaries_factor_when_configured() -> None:
    """With lb_ap_is_pound=False, [lb_ap] uses UCUM's 0.3732417216 kg."""
    result = to_kg(200.0, "[LB_AP]", UnitConfig(lb_ap_is_pound=False))
    assert result == 200.0 * KG_PER_LB_AP
    assert KG_PER_LB_AP == 0.3732417216


@pytest.mark.parametrize("unit", ["kg/m2", "KG/M2", " kg/m^2 ", "kg/m²", "BMI"])
def test_bmi_units_are_refused(unit: str) -> None:
    """A body-mass-index unit is refused with UNIT_IS_BMI, never converted."""
    result = to_kg(27.4, unit, CFG)
    assert isinstance(result, RowProblem)
    assert result.reason is Reason.UNIT_IS_BMI
    assert result.field == "unit"
    assert "27.4" not in result.message


@pytest.mark.parametrize("unit", ["m2", "M2", "m^2", "m²"])
def test_bsa_units_are_refused(unit: str) -> None:
    """A body-surface-area unit is refused with UNIT_IS_BSA."""
    result = to_kg(1.9, unit, CFG)
    assert isinstance(result, RowProblem)
    assert result.reason is Reason.UNIT_IS_BSA


@pytest.mark.parametrize("unit", ["oz", "kgf", "NULL", "cm", "[lb_tr]", "k g", "%"])
def test_unknown_units_are_refused_and_quoted(unit: str) -> None:
    """Any other unit is UNKNOWN_UNIT and the message quotes the unit text."""
    result = to_kg(80.0, unit, CFG)
    assert isinstance(result, RowProblem)
    assert result.reason is Reason.UNKNOWN_UNIT
    assert repr(unit.strip()) in result.message
    assert "80" not in result.message
