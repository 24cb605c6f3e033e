"""Mass units to kilograms, with exact factors; units that are not a mass are refused.

Policy
------
* The unit text is trimmed and compared case-insensitively. Plain words and UCUM codes are
  both understood:

  =============================================  ==========================================
  unit text                                      kilograms per unit
  =============================================  ==========================================
  ``kg`` ``kgs`` ``kilogram`` ``kilograms``      1
  ``g`` ``gram`` ``grams``                       0.001 (computed as ``value / 1000``)
  ``lb`` ``lbs`` ``pound`` ``pounds``            0.45359237 (exact, by the 1959 definition)
  ``[lb_av]``
  ``st`` ``stone`` ``stones`` ``[stone_av]``     6.35029318 (= 14 lb, exact)
  ``[lb_ap]``                                    see below
  =============================================  ==========================================

* ``[lb_ap]`` is UCUM's apothecaries' pound (0.3732417216 kg). Real clinical exports put it on
  ordinary pound readings, so with ``UnitConfig.lb_ap_is_pound`` (the default) it is read as an
  avoirdupois pound; set it False to apply the UCUM factor literally.
* A missing or empty unit means kilograms: exports that omit the unit column (or leave it
  empty) are in kg. A unit text of ``NULL`` is *not* missing; it is an unknown unit.
* A unit that is not a mass is refused, never converted: ``kg/m2`` (``kg/m^2``, ``kg/m²``,
  ``bmi``) is a body-mass index (``Reason.UNIT_IS_BMI``); ``m2`` (``m^2``, ``m²``) is a body
  surface area (``Reason.UNIT_IS_BSA``); anything else is ``Reason.UNKNOWN_UNIT``.
* A conversion is one multiplication (or the division by 1000 for grams), so
  ``to_kg(x, "lb", cfg) == x * 0.45359237`` exactly. The value itself is not checked here
  (see :mod:`weightstream.ingest.numbers` and the range check in :mod:`weightstream.ingest.rows`).
"""

from __future__ import annotations

from typing import Final

from weightstream.config import UnitConfig
from weightstream.ingest._problem import RowProblem, quote_short
from weightstream.model import Reason

__all__ = ["to_kg", "conversion", "KG_PER_LB", "KG_PER_STONE", "KG_PER_LB_AP"]

#: The international avoirdupois pound, exactly (1959).
KG_PER_LB: Final = 0.45359237
#: 14 avoirdupois pounds, exactly.
KG_PER_STONE: Final = 6.35029318
#: UCUM ``[lb_ap]``: the apothecaries' pound, 5760 grains of 64.79891 mg, exactly.
KG_PER_LB_AP: Final = 0.3732417216

_LB_AP: Final = "[lb_ap]"

_FACTORS: Final[dict[str, float]] = {
    **dict.fromkeys(("kg", "kgs", "kilogram", "kilograms"), 1.0),
    **dict.fromkeys(("lb", "lbs", "pound", "pounds", "[lb_av]"), KG_PER_LB),
    **dict.fromkeys(("st", "stone", "stones", "[stone_av]"), KG_PER_STONE),
}
_GRAMS: Final = frozenset({"g", "gram", "grams"})
_BMI: Final = frozenset({"kg/m2", "kg/m^2", "kg/m²", "bmi"})
_BSA: Final = frozenset({"m2", "m^2", "m²"})


def to_kg(value: float, unit: str | None, config: UnitConfig) -> float | RowProblem:
    """``value`` given in ``unit``, in kilograms; or a :class:`RowProblem` for a non-mass unit.

    >>> cfg = UnitConfig()
    >>> to_kg(80.0, " KG ", cfg), to_kg(2500.0, "g", cfg), to_kg(100.0, "[lb_av]", cfg)
    (80.0, 2.5, 45.359237)
    >>> to_kg(70.0, None, cfg)
    70.0
    >>> to_kg(27.1, "kg/m2", cfg).reason
    <Reason.UNIT_IS_BMI: 'unit_is_bmi'>
    """
    if unit is None:
        return value
    how = conversion(unit, config)
    if isinstance(how, RowProblem):
        return how
    op, factor = how
    return value * factor if op == "*" else value / factor


def conversion(unit: str, config: UnitConfig) -> tuple[str, float] | RowProblem:
    """How :func:`to_kg` converts a value in ``unit``: ``("*", factor)`` or ``("/", 1000.0)``.

    The columnar reader applies it to a whole column, so both paths convert alike.

    >>> conversion("lb", UnitConfig()), conversion("", UnitConfig()), conversion("g", UnitConfig())
    (('*', 0.45359237), ('*', 1.0), ('/', 1000.0))
    """
    key = unit.strip().lower()
    factor = _FACTORS.get(key)
    if factor is not None:
        return ("*", factor)
    if not key:
        return ("*", 1.0)
    if key in _GRAMS:
        return ("/", 1000.0)
    if key == _LB_AP:
        return ("*", KG_PER_LB if config.lb_ap_is_pound else KG_PER_LB_AP)
    return _refuse(unit, key)


def _refuse(unit: str, key: str) -> RowProblem:
    """The problem for a unit that is not a known mass unit."""
    if key in _BMI:
        return RowProblem(
            Reason.UNIT_IS_BMI,
            "unit",
            f"unit {quote_short(unit.strip())} is a body-mass index, not a weight",
        )
    if key in _BSA:
        return RowProblem(
            Reason.UNIT_IS_BSA,
            "unit",
            f"unit {quote_short(unit.strip())} is a body surface area, not a weight",
        )
    return RowProblem(
        Reason.UNKNOWN_UNIT,
        "unit",
        f"unknown unit {quote_short(unit.strip())} (expected kg, g, lb, st or a UCUM mass code)",
    )
