"""Operator chaos on a synthetic cohort (A5, D1, I3, I4): the safety net on real-shaped data.

``WEIGHTSTREAM_CHAOS="reset:0.3,persist:0.1"`` makes resets and their persist step fail at
random (seeded, printed; reproduce with ``CHAOS_TEST_SEED``). Whatever fails, every input row
still gets exactly one result, no stored state is invalid, and a user none of whose resets
failed (every reset audit ``committed``) gets exactly the results and state of a run without
chaos: a failure never leaks into another user.

Two breaker settings: the default one (3 consecutive failures OPEN it; while OPEN, resets are
refused with audit outcome ``breaker_open``, so those users count as affected too), and one
that never opens, so that many users are affected and many are not.
"""

from __future__ import annotations

import os
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from weightstream.config import load_config
from weightstream.faults import NO_FAULTS, FaultPoints
from weightstream.ingest import file_digest
from weightstream.pipeline import process_file
from weightstream.replay import rebuild_user
from weightstream.resets.validator import StateValidator
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream

CHAOS = "reset:0.3,persist:0.1"
USERS, PER_USER = 40, 20


def _run(
    src: Path, db: Path, out: Path, config: Any, faults: FaultPoints = NO_FAULTS
) -> tuple[list[Any], dict[str, Any]]:
    """Process ``src`` in-process (with ``faults``); the stored results and user states."""
    with SQLiteStore(db) as store:
        process_file(src, store, config, out=out, faults=faults)
        results = list(store.results_for_input(file_digest(src)))
        states = {u: store.load_state(u) for u in store.users()}
    return results, states


@pytest.mark.parametrize("breaker", ["default", "never_opens"])
def test_chaos_keeps_every_row_and_leaves_unaffected_users_exact(
    harness: Any, tmp_path: Path, breaker: str
) -> None:
    """Under reset/persist chaos: one result per row, valid states, unaffected users exact."""
    seed = int(os.environ.get("CHAOS_TEST_SEED") or secrets.randbelow(2**32))
    print(f"CHAOS_TEST_SEED={seed} breaker={breaker}")
    src = tmp_path / "cohort.csv"
    rows = write_stream(USERS, PER_USER, seed % 1000, src, None, scenario="mixed")
    extra = "[breaker]\nfailure_threshold = 1000000\n" if breaker == "never_opens" else ""
    config = load_config(harness.write_config(tmp_path / "config.toml", 50, extra))

    clean_results, clean_states = _run(src, tmp_path / "clean.db", tmp_path / "clean.csv", config)

    chaos = FaultPoints.from_environ(
        {"WEIGHTSTREAM_CHAOS": CHAOS, "WEIGHTSTREAM_CHAOS_SEED": str(seed)}
    )
    db = tmp_path / "chaos.db"
    results, states = _run(src, db, tmp_path / "chaos.csv", config, chaos)

    # I3: every input row ends in exactly one result.
    assert len(results) == rows == len(clean_results)
    assert len({r.row for r in results}) == rows
    assert [r.row for r in results] == [r.row for r in clean_results]
    # I4: no stored state is invalid.
    validator = StateValidator()
    bad = {u: p for u, s in states.items() if (p := validator.user_state_problems(s))}
    assert not bad, bad

    with SQLiteStore(db, create=False) as store:
        audits = store.audits()
        affected = {a.user_id for a in audits if a.outcome != "committed" or a.fallback}
        assert store.integrity_check() == "ok"
        unaffected = sorted(set(clean_states) - affected)
        not_rebuilt = [u for u in unaffected if not rebuild_user(store, u, config).equal]
    print(f"{len(affected)} users affected by chaos, {len(unaffected)} not; "
          f"{sum(a.outcome != 'committed' for a in audits)} failed resets")
    assert not not_rebuilt

    by_user: dict[str | None, list[Any]] = defaultdict(list)
    clean_by_user: dict[str | None, list[Any]] = defaultdict(list)
    for r in results:
        by_user[r.user_id].append(r)
    for r in clean_results:
        clean_by_user[r.user_id].append(r)
    for user in unaffected:
        assert by_user[user] == clean_by_user[user], user
        assert states[user] == clean_states[user], user
    assert by_user[None] == clean_by_user[None]  # invalid rows do not depend on chaos
    if breaker == "never_opens":
        assert affected and unaffected
