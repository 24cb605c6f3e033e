"""The garbage collector is tuned while a long job runs, and left as it was found after it."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import weightstream.distributed as distributed
from weightstream.config import Config
from weightstream.heap import long_lived_heap
from weightstream.pipeline import process_file
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FakeClock

YOUNG = 12_345


@pytest.fixture(autouse=True)
def _untouched_collector():
    """Every test starts and must end with the collector as the test process had it."""
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert frozen == 0, "a test left objects frozen"
    yield
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_tuned_inside_and_restored_after() -> None:
    """Inside: young collections every ``young`` allocations, the start's objects frozen."""
    before = gc.get_threshold()
    with long_lived_heap(YOUNG):
        assert gc.get_threshold() == (YOUNG, *before[1:])
        assert gc.get_freeze_count() > 1_000
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_restored_when_the_job_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), long_lived_heap(YOUNG):
        raise RuntimeError("the job failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_zero_leaves_the_collector_alone_and_negative_is_refused() -> None:
    before = gc.get_threshold()
    with long_lived_heap(0):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
    with pytest.raises(ValueError, match="young"), long_lived_heap(-1):
        pass


def test_nested_and_overlapping_jobs_restore_once_the_last_leaves() -> None:
    """A job inside a job, and jobs on two threads that end in the other order than they began:
    the collector stays tuned until the last one leaves."""
    before = gc.get_threshold()
    inner_done, outer_may_end = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def second_thread() -> None:
        with long_lived_heap(YOUNG):
            outer_may_end.set()
            inner_done.wait(10)
        seen["after_thread"] = gc.get_threshold()

    with long_lived_heap(YOUNG):
        with long_lived_heap(YOUNG):
            pass
        assert gc.get_threshold()[0] == YOUNG  # the nested job's end restored nothing
        thread = threading.Thread(target=second_thread)
        thread.start()
        assert outer_may_end.wait(10)
    # The first job ended while the thread's still runs: still tuned.
    assert gc.get_threshold()[0] == YOUNG
    assert gc.get_freeze_count() > 0
    inner_done.set()
    thread.join(10)
    assert seen["after_thread"] == before


def test_a_collector_frozen_by_someone_else_is_left_alone() -> None:
    """Whoever froze the heap (an application embedding the library) keeps it frozen."""
    before = gc.get_threshold()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with long_lived_heap(YOUNG):
            assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("young", [YOUNG, 0])
def test_a_file_run_tunes_the_collector_while_it_decides(
    tmp_path: Path, small_export, young: int
) -> None:
    """process_file with processing.gc_young: tuned at every group, restored at the end."""
    before = gc.get_threshold()
    seen: list[tuple[tuple[int, int, int], int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    config = Config(processing={"commit_group_size": 50, "gc_young": young})
    store = SQLiteStore(tmp_path / "ws.db")
    try:
        summary = process_file(
            small_export.path,
            store,
            config,
            out=tmp_path / "r.csv",
            clock=FakeClock(),
            progress=progress,
        )
    finally:
        store.close()
    assert summary.rows == small_export.rows
    assert len(seen) > 1
    if young:
        assert all(t == (young, *before[1:]) and frozen > 1_000 for t, frozen in seen)
    else:
        assert all(t == before and frozen == 0 for t, frozen in seen)


def test_a_file_run_that_fails_restores_the_collector(tmp_path: Path, small_export) -> None:
    def progress(done: int, total: int) -> None:
        raise KeyboardInterrupt

    store = SQLiteStore(tmp_path / "ws.db")
    try:
        with pytest.raises(KeyboardInterrupt):
            process_file(
                small_export.path,
                store,
                Config(processing={"gc_young": YOUNG}),
                clock=FakeClock(),
                progress=progress,
            )
    finally:
        store.close()


def test_a_bucket_worker_tunes_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_partition (the bucket engines' worker) decides under the tuned collector."""
    seen: list[int] = []
    monkeypatch.setattr(
        distributed, "_run_partition", lambda partition: seen.append(gc.get_threshold()[0])
    )
    partition = SimpleNamespace(config=Config(processing={"gc_young": YOUNG}))
    distributed.run_partition(partition)  # type: ignore[arg-type]
    assert seen == [YOUNG]


def test_entering_walks_no_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    """No full collection on the way in: in a process with millions of objects (a test
    process running hundreds of files) it cost a quarter of a second per job."""

    def collect(*_: object) -> int:
        raise AssertionError("long_lived_heap collected the whole heap")

    monkeypatch.setattr(gc, "collect", collect)
    with long_lived_heap(YOUNG):
        assert gc.get_freeze_count() > 0
