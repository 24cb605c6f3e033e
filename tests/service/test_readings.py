"""A batch's readings converted column-wise are the readings converted one by one."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from weightstream.config import Config
from weightstream.service.readings import ReadingIn, to_reading, to_readings

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)

#: Values of each field, valid and not: every rule of a CSV row has a case here.
USERS = ["u1", "u2", " u3 ", "", "null", "NA", "user-ß"]
TIMES: list[str | int | float] = [
    "2025-01-22T07:30:00Z",
    "2025-01-22 07:30:00",
    "2025-01-22T09:30:00+02:00",
    "2025-01-22",
    "2025-01-22x07:30",
    "20250122T073000",
    "1989-12-31",
    "2999-01-01",
    "not a time",
    " 2025-01-23T07:00:00Z ",
    1737550000,
    1737550000000,
    1737550000.5,
    "",
]
WEIGHTS: list[str | int | float] = [
    81.4,
    80,
    "176.37",
    "72,5",
    "",
    "nan",
    -3.0,
    900.0,
    1e308,
    "abc",
    0.1 + 0.2,
]
UNITS = [None, "kg", " KG", "lb", "g", "st", "[lb_av]", "kg/m2", "furlong", ""]
SOURCES = [None, "patient-device", "", "clinic", "care-team"]
IDS = [None, "r1", "r2", "", "x" * 40]


def _random_readings(rng: random.Random, n: int) -> list[ReadingIn]:
    return [
        ReadingIn(
            id=rng.choice(IDS),
            user_id=rng.choice(USERS),
            timestamp=rng.choice(TIMES),
            weight=rng.choice(WEIGHTS),
            unit=rng.choice(UNITS),
            source=rng.choice(SOURCES),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_column_wise_conversion_equals_one_by_one(seed: int) -> None:
    """Each reading of a mixed batch (valid and invalid) gets the same Measurement or the same
    invalid result, with the same reason and message, as :func:`to_reading` gives it."""
    rng = random.Random(seed)
    readings = _random_readings(rng, 400)
    config = Config()
    expected = [to_reading(r, config=config, now=NOW) for r in readings]
    got = to_readings(readings, config=config, now=NOW)
    assert got == expected, f"seed {seed}"
    kinds = {type(x).__name__ for x in got}
    assert kinds == {"Measurement", "Result"}, kinds  # both kinds met


@pytest.mark.parametrize("n", [1, 2, 3])
def test_small_and_all_invalid_batches(n: int) -> None:
    """One reading, a few, and a batch with no valid reading convert as one by one."""
    config = Config()
    good = ReadingIn(user_id="u1", timestamp="2025-01-22T07:30:00Z", weight=81.4)
    bad = ReadingIn(user_id="u1", timestamp="2025-01-22T07:30:00Z", weight="72,5")
    for readings in ([good] * n, [bad] * n, [good, bad] * n):
        expected = [to_reading(r, config=config, now=NOW) for r in readings]
        assert to_readings(readings, config=config, now=NOW) == expected
