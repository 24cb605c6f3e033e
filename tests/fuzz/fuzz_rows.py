"""Coverage-guided fuzzing of the row parser with atheris (libFuzzer).

Arbitrary bytes follow a valid header; the reader and ``to_measurement`` must turn every
non-blank line into exactly one item (a row or a malformed-row marker) and then into a
Measurement or a typed RowProblem, and nothing may raise. A Measurement must be sane:
finite weight inside the configured range, aware UTC time.

Run by hand for longer: ``.venv/bin/python tests/fuzz/fuzz_rows.py -max_total_time=600``.
``tests/ingest/test_fuzz_smoke.py`` runs it for a few seconds on every ``make test``.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from datetime import UTC, datetime

import atheris

from weightstream.config import Config  # imported first: pydantic is not what we fuzz
from weightstream.model import Measurement

with atheris.instrument_imports(include=["weightstream.ingest"]):
    from weightstream.ingest import RowProblem, open_csv, to_measurement

CONFIG = Config()
NOW = datetime(2026, 1, 1, tzinfo=UTC)
HEADER = b"id,user_id,effectiveDateTime,source_type,weight,unit\n"
_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
_FD, PATH = tempfile.mkstemp(suffix=".csv", dir=_DIR)
os.close(_FD)


def check(data: bytes) -> None:
    with open(PATH, "wb") as handle:
        handle.write(HEADER + data)
    items = list(open_csv(PATH))
    lines = [item.line for item in items]
    assert lines == sorted(set(lines)), "line numbers must strictly increase"
    physical = HEADER.count(b"\n") + data.count(b"\n") + data.count(b"\r") + 1
    assert len(items) <= physical, "more items than physical lines"
    for item in items:
        out = to_measurement(item, config=CONFIG, now=NOW)
        if isinstance(out, Measurement):
            v = CONFIG.validation
            assert math.isfinite(out.weight_kg)
            assert v.min_weight_kg <= out.weight_kg <= v.max_weight_kg
            assert out.timestamp.tzinfo is not None and out.timestamp.utcoffset().total_seconds() == 0
        else:
            assert isinstance(out, RowProblem), type(out)


def main() -> None:
    try:
        atheris.Setup(sys.argv, check)
        atheris.Fuzz()
    finally:
        os.unlink(PATH)


if __name__ == "__main__":
    main()
