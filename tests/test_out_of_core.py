"""A file larger than memory (issue 11): partitions, spill files, results put back in order.

``processing.in_memory_rows`` only decides where the rows wait (memory or temporary files):
the processing order, every result and every stored record must be the same either way. The
number of partitions (one per ``PARTITION_BYTES`` of file, made tiny here so that a small
file has many) changes the order between users, never a user's results.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from weightstream import pipeline
from weightstream.clock import SYSTEM_CLOCK
from weightstream.config import Config
from weightstream.engine.content_keys import CONTENT, frame_content_keys
from weightstream.ingest import file_digest, partitions
from weightstream.ingest.partitions import ORDER_KEY, read_order
from weightstream.ingest.spill import Spill
from weightstream.pipeline import process_file, write_results
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FakeClock

GROUP = 40
#: Partitions of 4 KB: the 60-user export (~150 KB) has about 40 of them.
SMALL_PARTITIONS = 4096


def _config(memory_rows: int) -> Config:
    return Config(processing={"commit_group_size": GROUP, "in_memory_rows": memory_rows})


def _run(export: Path, work: Path, memory_rows: int, **kwargs: Any) -> tuple[bytes, Path, Any]:
    work.mkdir()
    db, out = work / "ws.db", work / "results.csv"
    with SQLiteStore(db) as store:
        summary = process_file(
            export, store, _config(memory_rows), out=out, clock=FakeClock(), **kwargs
        )
    return out.read_bytes(), db, summary


def _sorted_tables(db: Path, volatile: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """Every table as a sorted list of rows, wall-clock columns and row numbers (``id``,
    ``seq``, a reference to a reading's ``seq``: they count commits) left out."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cur = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            drop = {*volatile.get(table, ()), "id", "seq"}
            keep = [k for k, n in enumerate(names) if n not in drop and not n.endswith("_seq")]
            out[table] = sorted(repr([row[k] for k in keep]) for row in cur)
        return out
    finally:
        conn.close()


def test_spilled_run_equals_the_in_memory_run(
    synth_export, tmp_path, spill_dir, monkeypatch, db_dump, volatile_columns
):
    """Spilled to disk or held in memory: the same results file byte for byte, the same
    database row for row in commit order, the same summary; no spill directory is left."""
    monkeypatch.setattr(partitions, "PARTITION_BYTES", SMALL_PARTITIONS)
    seen: list[list[str]] = []

    def progress(done: int, total: int) -> None:
        seen.append([p.name for p in spill_dir.iterdir()])

    memory, db_memory, s_memory = _run(synth_export.path, tmp_path / "memory", 10**9)
    spilled, db_spilled, s_spilled = _run(
        synth_export.path, tmp_path / "spilled", 5, progress=progress
    )
    assert seen and all(names and names[0].startswith("weightstream-spill-") for names in seen)
    assert list(spill_dir.iterdir()) == []
    assert spilled == memory
    assert db_dump(db_spilled, exclude=volatile_columns) == db_dump(
        db_memory, exclude=volatile_columns
    )
    skip = {"seconds"}
    assert {k: v for k, v in s_spilled.as_dict().items() if k not in skip} == {
        k: v for k, v in s_memory.as_dict().items() if k not in skip
    }
    assert s_memory.rows == synth_export.rows and memory.count(b"\r\n") == synth_export.rows + 1
    assert s_memory.users == _users(memory) > 50


def _users(results: bytes) -> int:
    """Distinct users in a results file."""
    frame = pl.read_csv(results, infer_schema=False)
    return frame.get_column("user_id").drop_nulls().n_unique()


def test_partitions_change_no_result(
    synth_export, tmp_path, monkeypatch, db_dump, volatile_columns
):
    """One partition (a small file's order) or forty: the same order, so the same results
    file and the same database, row for row in commit order."""
    one, db_one, _ = _run(synth_export.path, tmp_path / "one", 10**9)
    monkeypatch.setattr(partitions, "PARTITION_BYTES", SMALL_PARTITIONS)
    many, db_many, _ = _run(synth_export.path, tmp_path / "many", 10**9)
    assert many == one
    assert db_dump(db_many, exclude=volatile_columns) == db_dump(db_one, exclude=volatile_columns)


def test_partitions_are_user_ranges_of_about_equal_rows(synth_export, monkeypatch):
    """Each partition holds the users between two bounds, and no partition holds more than
    twice its share of the readings (the bounds come from every user's row count)."""
    monkeypatch.setattr(partitions, "PARTITION_BYTES", SMALL_PARTITIONS)
    order = read_order(synth_export.path, _config(10**9), now=SYSTEM_CLOCK.now(), memory_rows=10**9)
    try:
        bounds = order.bounds
        assert len(bounds) == order.partitions - 1 and bounds == sorted(bounds)
        sizes = [order.spill.rows(k) for k in range(order.partitions)]
        share = sum(sizes) / order.partitions
        assert max(sizes) <= 2 * share, sizes
        for k in range(order.partitions):
            frame = order.spill.take(k)
            if frame is None:
                continue
            users = frame.get_column("user")
            if k:
                assert users.min() > bounds[k - 1]
            if k < len(bounds):
                assert users.max() <= bounds[k]
    finally:
        order.close()


@pytest.mark.parametrize("seed", range(20))
def test_bounds_from_a_bounded_sketch_stay_close(monkeypatch, seed):
    """Past its size the user counts merge neighbours: the bounds still cut the rows into
    nearly equal ranges (here 10,000 users, 1 to 5 rows each, kept as at most 64 entries).

    The sketch guarantees that each bound is an entry's last user, so it falls at most one
    entry's rows from the exact cut: a part is within two of the largest entries of its
    share. How near that is depends on the draw: over seeds 0-1,999 the largest part was
    1.42 times its share, and a random seed once broke the 1.25 this test asserted (751974:
    4,773 rows against a share of 3,741). So the seeds are fixed, and "nearly equal" is 1.5.
    """
    monkeypatch.setattr(partitions, "_SKETCH_USERS", 64)
    rng = random.Random(seed)
    users = [f"user-{k:05d}" for k in range(10_000) for _ in range(rng.randint(1, 5))]
    rng.shuffle(users)
    counts = partitions._UserCounts()
    for start in range(0, len(users), 997):  # blocks
        counts.add(pl.Series("user", users[start : start + 997]))
    bounds = counts.bounds(8)
    assert len(bounds) == 7 and bounds == sorted(bounds)
    column = pl.Series(users)
    sizes = pl.Series(bounds).search_sorted(column, side="left").value_counts()
    assert sizes.height == 8
    share = len(users) / 8
    assert counts._counts is not None
    largest = counts._counts.get_column("n").max()
    parts = sizes.get_column("count")
    assert max(parts.max() - share, share - parts.min()) <= 2 * largest, (sizes, largest)
    assert parts.max() <= 1.5 * share and parts.min() >= 0.5 * share, sizes


def _rows(groups: Iterator[Any], position: int) -> list[tuple[bool, int]]:
    """(invalid?, line) of each row of the groups from ``position``, checking their bounds."""
    out: list[tuple[bool, int]] = []
    for g in groups:
        assert g.start == position + len(out) and g.end - g.start == len(g.invalid) + g.valid.height
        out += [(True, line) for line, _ in g.invalid]
        out += [(False, line) for line in g.valid.get_column("line").to_list()]
    return out


@pytest.mark.parametrize("memory_rows", [5, 10**9])
def test_groups_from_any_position_are_the_rest_of_the_order(
    synth_export, monkeypatch, spill_dir, memory_rows
):
    """Every row once: invalid rows by line first, then partition by partition the readings
    in key order (users together, each in time and content order); from a position p the
    groups give exactly the rows after p of the whole order."""
    monkeypatch.setattr(partitions, "PARTITION_BYTES", SMALL_PARTITIONS)
    config = _config(memory_rows)
    now = SYSTEM_CLOCK.now()

    def order() -> Any:
        return read_order(synth_export.path, config, now=now, memory_rows=memory_rows)

    whole = order()
    assert whole.on_disk == (memory_rows == 5) and whole.partitions > 10
    frames: list[pl.DataFrame] = []
    try:
        for g in whole.groups(0, 17):
            frames.append(g.valid)
    finally:
        whole.close()
    valid = pl.concat(frames)
    assert len(whole) == synth_export.rows
    # Partition by partition is the whole sorted order: users together, each in key order.
    assert valid.equals(valid.sort(list(ORDER_KEY)))
    # Each reading carries its content key, made for its whole partition.
    assert valid.get_column(CONTENT).to_list() == frame_content_keys(valid)
    seed = random.randrange(10**6)
    print(f"seed {seed}")
    rng = random.Random(seed)
    first = order()
    try:
        reference = _rows(first.groups(0, 17), 0)
    finally:
        first.close()
    invalid = [line for bad, line in reference if bad]
    assert invalid == sorted(invalid) and reference[: len(invalid)] == [(True, x) for x in invalid]
    assert sorted(line for _, line in reference) == list(range(2, synth_export.rows + 2))
    for position in [0, 1, len(invalid), len(invalid) + 1, *rng.sample(range(len(reference)), 5)]:
        again = order()
        try:
            size = rng.randint(1, 60)
            assert _rows(again.groups(position, size), position) == reference[position:]
        finally:
            again.close()
    assert list(spill_dir.iterdir()) == []


@pytest.mark.parametrize("stop_after", [1, 7])
def test_interrupted_spilled_run_resumes_to_the_same_end(
    synth_export, tmp_path, spill_dir, monkeypatch, stop_after, db_dump, volatile_columns
):
    """A spilled run stopped after k groups resumes from its position; the results file (its
    first rows from the store) and the database equal an uninterrupted run's; the stopped
    run's spill files (its order and its results so far) are removed."""
    monkeypatch.setattr(partitions, "PARTITION_BYTES", SMALL_PARTITIONS)
    monkeypatch.setattr(pipeline, "_SLICE_ROWS", 10)  # results reach the spill every group
    reference, db_ref, _ = _run(synth_export.path, tmp_path / "ref", 5)
    calls = 0

    def stop(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(synth_export.path, tmp_path / "run", 5, progress=stop)
    assert list(spill_dir.iterdir()) == []
    work = tmp_path / "run"
    with SQLiteStore(work / "ws.db") as store:
        summary = process_file(
            synth_export.path, store, _config(5), out=work / "results.csv", clock=FakeClock()
        )
    assert summary.resumed_from == stop_after * GROUP
    assert summary.users == _users(reference) and summary.rows == synth_export.rows
    assert (work / "results.csv").read_bytes() == reference
    assert db_dump(work / "ws.db", exclude=volatile_columns) == db_dump(
        db_ref, exclude=volatile_columns
    )
    assert list(spill_dir.iterdir()) == []


class _Shuffled:
    """A store that hands out an input's results in a random order (no ORDER BY row)."""

    def __init__(self, inner: SQLiteStore, seed: int) -> None:
        self.inner, self.seed = inner, seed

    def results_for_input(self, input_id: str) -> Iterator[Any]:
        rows = list(self.inner.results_for_input(input_id))
        random.Random(self.seed).shuffle(rows)
        return iter(rows)


@pytest.mark.parametrize("memory_rows", [7, 10**9])
def test_results_from_the_store_are_put_in_row_order(
    synth_export, tmp_path, spill_dir, memory_rows
):
    """``write_results`` sorts the stored results by row itself, in memory or through
    spill files: a store that gives them in any order writes the same bytes."""
    reference, db, _ = _run(synth_export.path, tmp_path / "ref", 10**9)
    seed = random.randrange(10**6)
    print(f"seed {seed}")
    out = tmp_path / "again.csv"
    with SQLiteStore(db) as store:
        rows = write_results(
            _Shuffled(store, seed), file_digest(synth_export.path), out, memory_rows=memory_rows
        )
    assert rows == synth_export.rows
    assert out.read_bytes() == reference
    assert list(spill_dir.iterdir()) == []


def test_spill_gives_frames_back_in_order_from_memory_or_disk(spill_dir):
    """Frames come back per key in the order added, before and after the spill to disk;
    a taken key is gone; closing removes the directory."""
    spill = Spill(memory_rows=10)
    frames = {k: [pl.DataFrame({"x": [k * 100 + i] * (i + 1)}) for i in range(4)] for k in (3, 0)}
    for i in range(4):
        for k in (3, 0):
            spill.add(k, frames[k][i])
            assert spill.on_disk == (sum(range(1, i + 2)) * 2 - (k == 3) * (i + 1) > 10)
    spill.add(5, pl.DataFrame({"x": []}, schema={"x": pl.Int64}))  # empty frames are dropped
    assert spill.used_keys() == [0, 3] and spill.rows(3) == 10
    assert [f.to_dict(as_series=False) for f in spill.frames(3)] == [
        f.to_dict(as_series=False) for f in frames[3]
    ]
    taken = spill.take(0)
    assert taken is not None and taken.equals(pl.concat(frames[0]))
    assert spill.take(0) is None and spill.used_keys() == [3]
    assert len(list(spill_dir.iterdir())) == 1
    spill.close()
    assert list(spill_dir.iterdir()) == []


def test_a_killed_run_s_spill_directory_is_removed_by_the_next_spill(spill_dir):
    """A directory left by a process that no longer exists (SIGKILL) is removed when the next
    spill goes to disk there; a live process's directory and other files are left alone."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = spill_dir / f"weightstream-spill-{int(done.stdout)}-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "0.arrows").write_bytes(b"x")
    live = spill_dir / f"weightstream-spill-{os.getpid()}-def"
    live.mkdir()
    other = spill_dir / "weightstream-spill-notapid-x"
    other.mkdir()
    with Spill(memory_rows=0) as spill:
        spill.add(1, pl.DataFrame({"x": [1]}))
        assert spill.on_disk
        names = sorted(p.name for p in spill_dir.iterdir())
    assert dead.name not in names and live.name in names and other.name in names
    assert sorted(p.name for p in spill_dir.iterdir()) == sorted([live.name, other.name])
