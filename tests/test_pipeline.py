"""A whole file: group commit, positions, interruption and resume, atomic results file."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from weightstream.config import Config
from weightstream.errors import StorageError
from weightstream.pipeline import process_file, write_results
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FakeClock, FaultyStore

GROUP = 7


def _config() -> Config:
    return Config(processing={"commit_group_size": GROUP})


def _run(path: Path, db: Path, out: Path, store_wrapper=None):
    """process_file into ``db`` with a fixed clock; returns (summary, store positions seen)."""
    store = SQLiteStore(db)
    try:
        target = store_wrapper(store) if store_wrapper else store
        return process_file(path, target, _config(), out=out, clock=FakeClock())
    finally:
        store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_export, db_dump, volatile_columns):
    """An uninterrupted run of the small export into a fresh database."""
    work = tmp_path_factory.mktemp("pipeline-ref")
    db, out = work / "ws.db", work / "results.csv"
    summary = _run(small_export.path, db, out)
    return {"summary": summary, "results": out.read_bytes(),
            "tables": db_dump(db, exclude=volatile_columns)}


def test_position_advances_once_per_group(tmp_path, small_export):
    """Every commit carries the next group's end as the input position, up to the row count."""
    seen: list[int] = []

    def record(unit) -> bool:
        seen.append(unit.position[1] if unit.position else -1)
        return False

    summary = _run(small_export.path, tmp_path / "ws.db", tmp_path / "r.csv",
                   lambda s: FaultyStore(s, StorageError("unused"), fail_when=record))
    total = small_export.rows
    assert seen == [*range(GROUP, total, GROUP), total]
    assert summary.processed_now == summary.rows == total


@pytest.mark.parametrize("fail_at", [1, 2, 9, 23])
def test_interrupted_run_resumes_to_the_same_end_state(
    tmp_path, small_export, reference, db_dump, volatile_columns, fail_at
):
    """A store failure on the N-th commit stops the run; a rerun resumes and ends identical."""
    total = small_export.rows
    groups = -(-total // GROUP)
    assert fail_at <= groups
    db, out = tmp_path / "ws.db", tmp_path / "results.csv"
    counter = itertools.count(1)
    with pytest.raises(StorageError, match="injected"):
        _run(small_export.path, db, out,
             lambda s: FaultyStore(s, StorageError("injected"),
                                   fail_when=lambda unit: next(counter) == fail_at))
    committed = (fail_at - 1) * GROUP
    with SQLiteStore(db) as store:
        from weightstream.ingest import file_digest

        input_id = file_digest(small_export.path)
        assert store.position(input_id) == committed
        assert len(list(store.results_for_input(input_id))) == committed  # nothing beyond it
        assert store.integrity_check() == "ok"
    assert not out.exists()

    summary = _run(small_export.path, db, out)
    assert summary.resumed_from == committed
    assert summary.processed_now == total - committed
    assert summary.rows == total
    assert dict(summary.verdicts) == dict(reference["summary"].verdicts)
    assert out.read_bytes() == reference["results"]
    assert db_dump(db, exclude=volatile_columns) == reference["tables"]


def test_rerun_after_completion_processes_nothing(tmp_path, small_export, db_dump):
    """A second process_file on a finished input commits nothing and leaves every table as is."""
    db, out = tmp_path / "ws.db", tmp_path / "r.csv"
    _run(small_export.path, db, out)
    before, results = db_dump(db), out.read_bytes()
    commits: list[object] = []
    summary = _run(small_export.path, db, out,
                   lambda s: FaultyStore(s, StorageError("x"),
                                         fail_when=lambda u: commits.append(u) or False))
    assert commits == [] and summary.processed_now == 0
    assert db_dump(db) == before and out.read_bytes() == results


class _BrokenResults:
    """A store whose results iterator fails after a few rows (a read error mid-write)."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after = inner, after

    def results_for_input(self, input_id):
        for i, r in enumerate(self.inner.results_for_input(input_id)):
            if i == self.after:
                raise StorageError("injected read failure")
            yield r


@pytest.mark.parametrize("failure", ["read", "fsync"])
def test_results_file_is_old_or_new_never_torn(tmp_path, small_export, monkeypatch, failure):
    """A failing results write leaves the old file byte for byte and no temporary file."""
    db, out = tmp_path / "ws.db", tmp_path / "results.csv"
    _run(small_export.path, db, out)
    new = out.read_bytes()
    old = b"row,verdict\n2,old\n"
    out.write_bytes(old)
    from weightstream.ingest import file_digest

    input_id = file_digest(small_export.path)
    with SQLiteStore(db) as store:
        if failure == "read":
            with pytest.raises(StorageError):
                write_results(_BrokenResults(store, after=5), input_id, out)
        else:
            def broken_fsync(fd: int) -> None:
                raise OSError(5, "injected EIO")

            monkeypatch.setattr(os, "fsync", broken_fsync)
            with pytest.raises(StorageError, match="EIO"):
                write_results(store, input_id, out)
            monkeypatch.undo()
        assert out.read_bytes() == old
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        assert write_results(store, input_id, out) == small_export.rows
    assert out.read_bytes() == new
