"""The answer of POST /v1/measurements, encoded by orjson, says what result_json says, whether
a result is a Result or a row the compiled loop staged."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import orjson

from weightstream.model import Reason, ResetOutcome, ResetType, Result, Verdict
from weightstream.service.readings import result_json, results_body
from weightstream.store.codec import result_to_row, row_to_result


def _number(rng: random.Random) -> float | None:
    return rng.choice([None, math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-7, 1e17, 72.35])


def _result(rng: random.Random) -> Result:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(
        microseconds=rng.choice([0, 1, 123456])
    )
    return Result(
        reading_id=rng.choice([None, "r-1", 'q"uote\u00e9']),
        user_id=rng.choice([None, "u1"]),
        verdict=rng.choice(list(Verdict)),
        reason=rng.choice(list(Reason)),
        message=rng.choice(["", "line 3: weight: not a number", "tab\there"]),
        row=rng.choice([None, 7]),
        timestamp=rng.choice([None, when]),
        source=rng.choice([None, "scale"]),
        weight_kg=_number(rng),
        filtered_weight=_number(rng),
        trend_kg_week=_number(rng),
        std_kg=_number(rng),
        reset_type=rng.choice([None, *ResetType]),
        reset_outcome=rng.choice([None, *ResetOutcome]),
        quality=_number(rng),
        offset_kg=_number(rng),
    )


def test_orjson_answer_equals_the_result_json_objects() -> None:
    """Enums by value, times as isoformat, non-finite floats as null, fields in file order."""
    seed = 20261202
    print("seed", seed)
    rng = random.Random(seed)
    results = [_result(rng) for _ in range(300)]
    got = orjson.loads(results_body(results))
    want = {"results": [result_json(r, i + 1) for i, r in enumerate(results)]}
    assert got == json.loads(json.dumps(want))
    assert [list(item) for item in got["results"]] == [list(w) for w in want["results"]]


def test_a_staged_row_is_answered_as_its_result() -> None:
    """A result row (codec order) gives the JSON its decoded Result gives, mixed with Results."""
    seed = 20261203
    print("seed", seed)
    rng = random.Random(seed)
    results = [_result(rng) for _ in range(300)]
    rows = [result_to_row(None, r) for r in results]
    mixed = [row if i % 2 else r for i, (r, row) in enumerate(zip(results, rows, strict=True))]
    decoded = [row_to_result(row) for row in rows]
    assert results_body(rows) == results_body(decoded) == results_body(mixed)
