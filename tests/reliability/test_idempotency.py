"""Idempotency under resubmission (A8, G8): a reading key is applied at most once.

The first submission is processed into a fresh SQLite store; then the same readings come
again (the same file, a copy with the rows reordered, single readings resubmitted after a
"lost acknowledgement" through a new connection). Every resubmitted row must get a
``duplicate`` verdict (or stay ``invalid``), and no user state, reading or audit row may change.
"""

from __future__ import annotations

import csv
import io
import os
import random
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from weightstream.clock import SYSTEM_CLOCK
from weightstream.ingest import MalformedRow, file_digest, open_csv, to_measurement
from weightstream.model import Measurement, Reason, Verdict
from weightstream.pipeline import process_file
from weightstream.processor import Processor
from weightstream.store.sqlite import SQLiteStore


def _process(w: Any, db: Path, src: Path, out: Path) -> Any:
    with SQLiteStore(db) as store:
        return process_file(src, store, w.config, out=out)


def _readings(w: Any) -> list[Measurement]:
    now = SYSTEM_CLOCK.now()
    out = []
    for raw in open_csv(w.input):
        if isinstance(raw, MalformedRow):
            continue
        item = to_measurement(raw, config=w.config, now=now)
        if isinstance(item, Measurement):
            out.append(item)
    return sorted(out, key=lambda m: (m.user_id, m.timestamp))


@pytest.fixture
def processed(harness: Any, workload: Any, reference: Any, tmp_path: Path) -> Path:
    """A fresh store holding the workload once (equal to the CLI's reference run)."""
    db = tmp_path / "weightstream.db"
    _process(workload, db, workload.input, tmp_path / "first.csv")
    assert not harness.snapshot(db, tmp_path / "first.csv", workload.config).differences(
        reference
    )
    return db


def test_same_file_again_changes_nothing(
    harness: Any, workload: Any, processed: Path, tmp_path: Path
) -> None:
    """Processing the same file again resumes at its end: nothing processed, nothing changed."""
    before = harness.snapshot(processed, tmp_path / "first.csv", workload.config)
    summary = _process(workload, processed, workload.input, tmp_path / "again.csv")
    assert summary.processed_now == 0 and summary.rows == workload.rows
    assert (tmp_path / "again.csv").read_bytes() == before.results_file
    assert not harness.snapshot(processed, tmp_path / "first.csv", workload.config).differences(
        before
    )


def test_reordered_copy_gives_duplicates_and_no_state_change(
    harness: Any, workload: Any, processed: Path, tmp_path: Path
) -> None:
    """A second file with the same rows in another order: all duplicates, state untouched."""
    seed = int(os.environ.get("IDEMPOTENCY_SEED") or secrets.randbelow(2**32))
    print(f"IDEMPOTENCY_SEED={seed}")
    header, *lines = workload.input.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == workload.rows
    random.Random(seed).shuffle(lines)
    copy = tmp_path / "reordered.csv"
    copy.write_text(header + "".join(lines), encoding="utf-8")
    assert file_digest(copy) != file_digest(workload.input)

    before = harness.snapshot(processed, tmp_path / "first.csv", workload.config)
    summary = _process(workload, processed, copy, tmp_path / "second.csv")
    after = harness.snapshot(processed, tmp_path / "first.csv", workload.config)

    first = Counter(row["verdict"] for row in csv.DictReader(io.StringIO(
        before.results_file.decode("utf-8"), newline="")))
    assert summary.rows == workload.rows
    assert summary.verdicts["invalid"] == first["invalid"]
    assert summary.verdicts["duplicate"] == workload.rows - first["invalid"], summary.as_dict()
    for name in ("user_states", "readings", "audits"):
        assert getattr(after, name) == getattr(before, name), name
    assert after.results_file == before.results_file
    assert after.integrity == "ok" and not after.rebuild_mismatches


def test_resubmission_after_lost_ack_is_applied_once(
    harness: Any, workload: Any, processed: Path, tmp_path: Path
) -> None:
    """A client that lost the ack resubmits through a new connection: duplicate, no change."""
    readings = _readings(workload)
    before = harness.snapshot(processed, None, workload.config)
    with SQLiteStore(processed, create=False) as store:
        processor = Processor(store, workload.config)
        results = [processor.process_one(m) for m in readings]
        # Same key, other content (a client retry that re-serialised the reading).
        m = readings[len(readings) // 2]
        changed = Measurement(
            m.reading_id, m.user_id, m.timestamp, m.value + 1.0, m.unit, m.weight_kg + 1.0,
            m.source,
        )
        again = processor.process_one(changed)
    assert {r.verdict for r in results} == {Verdict.DUPLICATE}
    assert all(r.reason in (Reason.DUPLICATE_KEY, Reason.DUPLICATE_CONTENT) for r in results)
    assert again.verdict is Verdict.DUPLICATE and again.reason is Reason.DUPLICATE_KEY
    after = harness.snapshot(processed, None, workload.config)
    assert not after.differences(before), after.differences(before)
