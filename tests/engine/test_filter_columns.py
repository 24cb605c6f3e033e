"""The filter phase's column-wise helpers give what their one-reading forms give.

The file engine computes content keys, buffer times and duplicate verdicts a group at a time;
``process_one`` computes them a reading at a time. Stored keys and verdicts must not depend
on which did it. Randomised with fixed seeds.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from weightstream.batch import Batch
from weightstream.engine.group import _duplicates
from weightstream.model import (
    Reason,
    content_key_at,
    content_keys,
    from_micros,
    times_at,
)

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_content_keys_are_content_key_at_reading_by_reading(seed: int) -> None:
    """Each key of a column equals the one-reading key (units normalised alike)."""
    rng = random.Random(seed)
    n = 300
    users = [rng.choice(["u1", "ü-2", "3 3", ""]) for _ in range(n)]
    micros = [rng.randrange(-(10**15), 10**17) for _ in range(n)]
    values = [rng.choice([80.0, 1e-7, 123.456789, rng.uniform(1, 400)]) for _ in range(n)]
    units = [rng.choice(["kg", " KG ", "lb", "Lbs", "st\t"]) for _ in range(n)]
    sources = [rng.choice(["patient-device", "care-team-upload", "x"]) for _ in range(n)]
    many = content_keys(users, micros, values, units, sources)
    one = [content_key_at(*r) for r in zip(users, micros, values, units, sources, strict=True)]
    assert many == one
    assert len(set(many)) == len(
        set(zip(users, micros, values, [u.strip().lower() for u in units], sources, strict=True))
    )  # noqa: E501


def test_content_key_is_unchanged() -> None:
    """The stored definition of a content key does not move (a stored-format change)."""
    assert content_key_at("u1", 0, 80.0, " KG", "patient-device") == (
        "h:"
        + __import__("hashlib")
        .blake2b(b"u1\x1f0\x1f80.0\x1fkg\x1fpatient-device", digest_size=16)
        .hexdigest()
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_times_at_is_from_micros(seed: int) -> None:
    """The column form of from_micros gives equal aware times, to the microsecond."""
    rng = random.Random(seed)
    micros = [rng.randrange(-(10**16), 10**17) for _ in range(500)]
    got = list(times_at(micros))
    assert got == [from_micros(m) for m in micros]
    assert all(t.tzinfo is from_micros(0).tzinfo for t in got)


def _reference(
    users: list[str], ids: list[str], contents: list[str], known: set[Any], staged: set[Any]
) -> list[str | None]:
    """Batch's one-by-one duplicate rule, as written before the column-wise version."""
    seen = set(staged)
    out: list[str | None] = []
    for user, key, content in zip(users, ids, contents, strict=True):
        k, c = (user, key), (user, content)
        if k in seen or k in known:
            out.append(str(Reason.DUPLICATE_KEY))
        elif c in seen or c in known:
            out.append(str(Reason.DUPLICATE_CONTENT))
        else:
            out.append(None)
            seen.add(k)
            seen.add(c)
    return out


class _FakeBatch:
    def __init__(self, known: set[Any], staged: set[Any]) -> None:
        self.known_keys = known
        self.staged_keys = staged


@pytest.mark.parametrize("seed", range(40))
def test_duplicates_column_wise_match_the_one_by_one_rule(seed: int) -> None:
    """Same verdict for every reading, with ids shared, contents shared, ids equal to other
    readings' content keys, stored and staged keys (small pools make many collisions)."""
    rng = random.Random(seed)
    n = rng.randrange(1, 400)
    pool = [f"k{j}" for j in range(rng.randrange(1, 60))]
    cpool = [f"h:{j}" for j in range(rng.randrange(1, 60))]
    users = sorted(rng.choice(["a", "b", "c"]) for _ in range(n))
    contents = [rng.choice(cpool) for _ in range(n)]
    ids = [c if rng.random() < 0.4 else rng.choice(pool + cpool[:3]) for c in contents]
    every = list(zip(users, ids, strict=True)) + list(zip(users, contents, strict=True))
    known = set(rng.sample(every, k=min(len(every), rng.randrange(0, 5))))
    staged = set(rng.sample(every, k=min(len(every), rng.randrange(0, 5))))
    expected = _reference(users, ids, contents, known, staged)
    got = _duplicates(users, ids, contents, _FakeBatch(known, staged))  # type: ignore[arg-type]
    assert got == expected, f"seed {seed}"


def test_duplicates_of_a_group_without_any_are_all_new() -> None:
    """Distinct keys, nothing stored: every reading is new."""
    users = ["a"] * 5 + ["b"] * 5
    ids = [f"id{k}" for k in range(10)]
    contents = [f"h:{k}" for k in range(10)]
    assert _duplicates(users, ids, contents, _FakeBatch(set(), set())) == [None] * 10  # type: ignore[arg-type]


def test_a_stretchs_keys_count_as_staged_once_asked_for() -> None:
    """Keys staged by a stretch (Batch.stage_keys) are in staged_keys when a check asks."""
    batch = Batch.__new__(Batch)
    batch._staged_keys = {("u", "x")}
    batch._pending_keys = []
    batch.stage_keys("u", ["id1", "id2"], ["h:1", "h:2"])
    assert batch.staged_keys == {("u", "x"), ("u", "id1"), ("u", "id2"), ("u", "h:1"), ("u", "h:2")}
    assert batch._pending_keys == []
