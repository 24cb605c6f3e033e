"""Counting users for the partitions' bounds holds the counts, not the blocks (issue 11).

polars' ``value_counts`` of a block's user column points into the block's text; the counts of
the blocks waiting to be merged held every such block's text alive (a 10 M-row run peaked at
342 MB while reading). Measured in a fresh interpreter with the allocator settings of the
``weightstream`` command, so that freed memory is given back at once and the figure is the
memory still held.
"""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import io, os
from weightstream.cli import ALLOCATOR_ENV
os.environ.update(ALLOCATOR_ENV)
import polars as pl
from weightstream.ingest.partitions import _UserCounts

def anon_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

# A block of 16,000 rows (~1.6 MB of text), 400 users.
text = "".join(f"user-{k // 40:08d}-{'x' * 20},{'note-' * 12}{k:08d}\\n" for k in range(16000))
data = text.encode()
counts = _UserCounts()
frame = pl.read_csv(io.BytesIO(data), has_header=False, new_columns=["user", "note"])
counts.add(frame.get_column("user"))
del frame
before = anon_mb()
for _ in range(80):
    frame = pl.read_csv(io.BytesIO(data), has_header=False, new_columns=["user", "note"])
    counts.add(frame.get_column("user"))
    del frame
print("GROWN", round(anon_mb() - before, 1))
"""


def test_counting_users_does_not_hold_the_blocks() -> None:
    """80 blocks of 1.6 MB counted (fewer users than a merge needs, so all 80 wait): less
    than 16 MB more is held (holding the blocks' text was ~50 MB)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=False
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("GROWN")]
    assert lines, done.stderr
    grown = float(lines[-1].split()[1])
    assert grown < 16, grown
