"""The trouble injectors: what goes wrong with a reading on its way into an export.

Which rows of a user are in trouble is drawn by :func:`duplicate_counts` (duplicates take
slots of ``per_user``), :func:`row_kinds` (bursts of another person on the scale, then one
uniform draw per row for the per-row kinds, then manual readings that are off) and
:func:`place_duplicates`; :func:`inject` writes a troubled reading's text. The same weighing
exported twice (``duplicates`` scenario: a pound row at the same instant, a copy with its clock
shifted) is drawn by :func:`twice_counts` and :func:`place_twice`, only for plans that have it,
so no other scenario's draws move. The kinds, rates
and what an ideal processor should say are in the package docstring and
:data:`~weightstream.synth.options.EXPECTED`.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable

from weightstream.synth.options import SynthOptions, _Plan
from weightstream.synth.sources import MANUAL_SOURCES, _kg_text, _lb_text, _with_year

__all__ = [
    "duplicate_counts",
    "twice_counts",
    "row_kinds",
    "place_duplicates",
    "place_twice",
    "inject",
]


def duplicate_counts(rand: Callable[[], float], plan: _Plan, per_user: int) -> tuple[int, int]:
    """(exact copies, same content under a new id) among ``per_user`` rows; at most
    ``per_user - 1`` in all, so every user keeps at least one distinct reading."""
    n_dup_id = n_dup_content = 0
    if plan.dup_id or plan.dup_content:
        a, b = plan.dup_id, plan.dup_id + plan.dup_content
        for _ in range(per_user):
            r = rand()
            if r < a:
                n_dup_id += 1
            elif r < b:
                n_dup_content += 1
        excess = n_dup_id + n_dup_content - max(per_user - 1, 0)
        if excess > 0:
            cut = min(excess, n_dup_content)
            n_dup_content -= cut
            n_dup_id -= excess - cut
    return n_dup_id, n_dup_content


def twice_counts(rand: Callable[[], float], plan: _Plan, budget: int) -> tuple[int, int]:
    """(pound copies, clock-shifted copies) among ``budget`` rows. Each reading has at most one
    copy of each kind, and at least one reading stays: both counts are at most the readings
    left, ``budget`` minus the copies."""
    n_unit = n_shift = 0
    a, b = plan.dup_unit, plan.dup_unit + plan.dup_shift
    for _ in range(budget):
        r = rand()
        if r < a:
            n_unit += 1
        elif r < b:
            n_shift += 1
    while n_unit + n_shift and max(n_unit, n_shift) > budget - n_unit - n_shift:
        if n_unit >= n_shift:
            n_unit -= 1
        else:
            n_shift -= 1
    return n_unit, n_shift


def place_twice(
    rand: Callable[[], float],
    kinds: list[str],
    n_unit: int,
    n_shift: int,
    dups: dict[int, list[str]],
) -> None:
    """Add to ``dups`` which readings are exported twice, and how: distinct clean readings
    for each kind (any reading when there are too few clean ones)."""
    m = len(kinds)
    for dup_kind, count in (("duplicate_unit", n_unit), ("clock_shift", n_shift)):
        pool = [i for i in range(m) if kinds[i] == "clean"]
        if len(pool) < count:
            pool = list(range(m))
        for _ in range(count):
            i = pool.pop(int(rand() * len(pool)))
            dups.setdefault(i, []).append(dup_kind)


def row_kinds(
    rng: random.Random,
    plan: _Plan,
    opts: SynthOptions,
    srcs: list[str],
    main_source: str,
    true_kg: list[float],
    sds: dict[str, float],
) -> tuple[list[str], dict[int, float]]:
    """The kind of each reading, and the weight each burst outlier shows (by index)."""
    rand = rng.random
    m = len(srcs)
    kinds = ["clean"] * m
    outlier_kg: dict[int, float] = {}
    n_bursts = 0
    if plan.burst_scenario and opts.scenario_rate > 0:
        n_bursts = max(1, round(opts.scenario_rate * m / 4))
    elif plan.burst_rate and rand() < plan.burst_rate:
        n_bursts = 1
    if n_bursts:
        main_idx = [i for i in range(m) if srcs[i] == main_source]
        for _ in range(n_bursts):
            length = rng.randint(3, 5)
            if len(main_idx) < length:
                break
            k = rng.randrange(len(main_idx) - length + 1)
            run = main_idx[k : k + length]
            if any(kinds[i] != "clean" for i in run):
                continue
            offset = rng.uniform(15.0, 40.0)
            if true_kg[run[0]] - offset >= 35.0 and rand() < 0.5:
                offset = -offset
            for i in run:
                kinds[i] = "outlier"
                outlier_kg[i] = true_kg[i] + offset + rng.gauss(0.0, sds[srcs[i]])
    kind_cum, kind_names = plan.kind_cum, plan.kind_names
    total_rate = kind_cum[-1] if kind_cum else 0.0
    manual_off = plan.manual_off
    for i in range(m):
        if kinds[i] != "clean":
            continue
        if total_rate:
            r = rand()
            if r < total_rate:
                kinds[i] = kind_names[bisect_right(kind_cum, r)]
                continue
        if manual_off and srcs[i] in MANUAL_SOURCES and rand() < manual_off:
            kinds[i] = "manual_off"
    return kinds, outlier_kg


def place_duplicates(
    rand: Callable[[], float], kinds: list[str], n_dup_id: int, n_dup_content: int
) -> dict[int, list[str]]:
    """Which readings are duplicated, and how (of clean readings when there are any)."""
    m = len(kinds)
    dups: dict[int, list[str]] = {}
    if n_dup_id or n_dup_content:
        pool = [i for i in range(m) if kinds[i] == "clean"] or list(range(m))
        for dup_kind in ["duplicate_id"] * n_dup_id + ["duplicate_content"] * n_dup_content:
            dups.setdefault(pool[int(rand() * len(pool))], []).append(dup_kind)
    return dups


def inject(
    rng: random.Random,
    kind: str,
    source: str,
    kg: float,
    true_kg: float,
    other: float | None,
    h2: float,
    effective: str,
) -> tuple[str, float, str, str]:
    """A reading of ``kg`` with trouble ``kind``: (weight text, measured kg, unit, effective)."""
    text, value = _kg_text(source, kg)
    unit = "kg"
    if kind in ("lb", "unit_error"):
        text, value = _lb_text(source, kg)
        if kind == "lb":
            unit = "[lb_ap]" if rng.random() < 0.7 else "lb"
    elif kind == "manual_off":
        off = rng.uniform(2.0, 5.0) * (1.0 if rng.random() < 0.5 else -1.0)
        text, value = _kg_text(source, true_kg + off)
    elif kind == "outlier":
        text = _outlier_text(rng, source, kg, other)
    elif kind in ("bmi_as_kg", "bmi_unit"):
        text = repr(round(min(max(kg / h2, 20.5), 45.0), 1))
        if kind == "bmi_unit":
            unit = "kg/m2"
    elif kind == "bsa_unit":
        height_cm = 100.0 * math.sqrt(h2)
        bsa = min(max(math.sqrt(height_cm * kg / 3600.0), 1.6), 2.6)  # Mosteller
        text, unit = repr(round(bsa, 2)), "m2"
    elif kind == "null":
        text = ""
    elif kind == "bad_number":
        if rng.random() < 0.7:
            text = repr(round(kg, 1)).replace(".", ",")
        else:
            text = ("abc", "n/a", "#VALUE!")[rng.randrange(3)]
    elif kind == "future":
        effective = _with_year(effective, "2099")
    elif kind == "ancient":
        effective = _with_year(effective, "1850")
    elif kind == "bad_timestamp":
        choice = rng.randrange(5)
        if choice == 0:
            effective = effective[:8] + "32" + effective[10:]
        elif choice == 1:
            effective = effective[:11] + "25" + effective[13:]
        elif choice == 2:
            effective = "0000-00-00 00:00:00"
        elif choice == 3:
            effective = ("not a date", "N/A", "yesterday")[rng.randrange(3)]
        else:
            effective = ""
    else:  # pragma: no cover - every kind is handled above
        raise AssertionError(kind)
    return text, value, unit, effective


def _outlier_text(rng: random.Random, source: str, kg: float, other: float | None) -> str:
    """Another person's weight (bursts, devices) or a typing error (manual sources)."""
    if other is None and source in MANUAL_SOURCES:
        typed = round(kg, 1)
        whole = int(typed)
        tens, units = divmod(whole, 10)
        swapped = units * 10 + tens + (typed - whole)
        if whole < 100 and units >= 3 and abs(swapped - typed) >= 18 and rng.random() < 0.5:
            return repr(round(swapped, 1))  # 59 typed as 95
        return repr(round(typed + 100.0, 1))  # 77 typed as 177
    if other is None:
        offset = rng.uniform(15.0, 40.0)
        other = kg + offset if kg - offset < 35.0 or rng.random() < 0.5 else kg - offset
    return _kg_text(source, other)[0]
