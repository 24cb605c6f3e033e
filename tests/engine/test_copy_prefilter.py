"""The engine's copy pre-filter never passes over a reading a copy rule could pair.

The compiled loop sends a reading to the step (which applies the copy rules exactly) only if
``_shared_readings`` flags it, or it comes soon after a remembered reading. The flags must be
a superset: every pair of one user's readings at the same time, or with the same source and
weight (as given, or as its buffer entry gives it back) within the clock-shift window, is
flagged on both sides. Checked against a brute force over random groups (seeded).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.copies import MAX_SHIFT_HOURS
from weightstream.engine.group import _shared_readings

HOUR = 3_600_000_000
WINDOW = MAX_SHIFT_HOURS * HOUR

reading = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(["scale", "clinic"]),
    st.sampled_from([80.0, 80.1, 81.23456789, 176.4 * 0.45359237]),
    st.integers(0, 40).map(lambda h: h * HOUR // 2),  # half hours over 20 hours
    st.sampled_from([0.0, 0.0, 0.3, 0.45359237]),
)


def _brute(rows: list[tuple[str, str, float, int, float]]) -> list[bool]:
    out = [False] * len(rows)
    for j, (u1, s1, w1, t1, o1) in enumerate(rows):
        for k, (u2, s2, w2, t2, o2) in enumerate(rows):
            if j == k or u1 != u2:
                continue
            forms1 = {w1, (w1 - o1) + o1}
            forms2 = {w2, (w2 - o2) + o2}
            same_weight = s1 == s2 and (w1 in forms2 or w2 in forms1)
            if t1 == t2 or (same_weight and abs(t1 - t2) <= WINDOW):
                out[j] = out[k] = True
    return out


@settings(max_examples=300, derandomize=True)
@given(st.lists(reading, max_size=25))
def test_every_pair_a_copy_rule_could_make_is_flagged(rows: list) -> None:
    rows.sort(key=lambda r: (r[0], r[3]))  # the group's order: user, then time
    users = [r[0] for r in rows]
    flagged = _shared_readings(
        users,
        [r[1] for r in rows],
        [r[2] for r in rows],
        np.array([r[3] for r in rows], dtype=np.int64),
        np.array([r[4] for r in rows], dtype=np.float64),
    )
    missed = [k for k, (f, e) in enumerate(zip(flagged, _brute(rows), strict=True)) if e and not f]
    assert missed == []


def test_far_apart_equal_weights_are_not_flagged() -> None:
    """A pound scale repeats 0.1 lb steps: equal weights a day apart are no copy candidates."""
    flagged = _shared_readings(
        ["u1", "u1"],
        ["scale", "scale"],
        [80.0, 80.0],
        np.array([0, 24 * HOUR], dtype=np.int64),
        np.zeros(2),
    )
    assert not flagged.any()
