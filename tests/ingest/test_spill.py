"""The spill's memory does not grow with the frames it keeps on disk (issue 11).

A file's blocks each send a frame to every partition, so the frames of a large file grow with
the square of its size; what the spill keeps in memory per key must not grow with them.
"""

from __future__ import annotations

import gc
import tracemalloc

import polars as pl

from weightstream.ingest import spill as spill_module
from weightstream.ingest.spill import Spill


def _traced_growth(spill: Spill, keys: int, frames: int, first: int) -> int:
    """Bytes of Python memory still held, allocated with the spill's code on the stack,
    after adding ``frames`` one-row frames to each key.

    Only what the spill allocated counts: tracemalloc sees every thread of the process, and
    an earlier test's threads (a database's, a server's) may allocate meanwhile.
    """
    frame = pl.DataFrame({"x": [7]})
    mine = [tracemalloc.Filter(True, spill_module.__file__, all_frames=True)]
    gc.collect()
    tracemalloc.start(8)
    try:
        before = tracemalloc.take_snapshot().filter_traces(mine)
        for n in range(frames):
            for key in range(keys):
                spill.add(key, frame.with_columns(pl.lit(first + n).alias("n")))
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(mine)
        return sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    finally:
        tracemalloc.stop()


def test_frames_on_disk_hold_no_memory_per_frame(spill_dir):
    """5,000 more frames on disk (50 keys x 100) leave less than 16 KB more Python memory
    held (a table of frames would hold at least 16 bytes each: 80 KB, in every round); all
    come back in order. The least of three rounds counts: a library's one-off allocation
    (a lazy import, a cache filled) may land in any one of them."""
    with Spill(memory_rows=0) as spill:
        _traced_growth(spill, keys=50, frames=20, first=0)  # the keys' entries exist
        grown = [_traced_growth(spill, keys=50, frames=100, first=20 + 100 * k) for k in range(3)]
        assert min(grown) < 16_384, grown
        assert spill.on_disk and spill.rows(42) == 320
        back = spill.take(42)
        assert back is not None
        assert back.get_column("n").to_list() == list(range(320))
        assert spill.take(42) is None and spill.rows(42) == 0
