"""Micro-benchmarks of the ingest layer (run by hand): microseconds per row.

    .venv/bin/python benchmarks/ingest_micro.py [--rows 200000] [--repeat 3]

Times, on generated data shaped like a real export (seeded, so runs are comparable):
``parse_timestamp`` on ``YYYY-MM-DD HH:MM:SS`` texts, ``TimestampParser`` on the same,
``parse_number`` and ``to_kg``, the CSV reader alone, the reader plus ``to_measurement``,
the columnar reader (``read_blocks``: what a file run parses with), and a file run's whole
parse and sort (``read_order`` and its groups, rows spilled to disk past the default
``processing.in_memory_rows``). Each figure is the best of ``--repeat`` runs, in CPU time
(``time.process_time``: every thread of the process, comparable on a busy machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

if importlib.util.find_spec("weightstream") is None:  # not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from weightstream.clock import SECONDS_PER_DAY  # noqa: E402
from weightstream.config import Config  # noqa: E402
from weightstream.ingest import (  # noqa: E402
    open_csv,
    parse_number,
    parse_timestamp,
    to_kg,
    to_measurement,
)
from weightstream.ingest.columnar import read_blocks  # noqa: E402
from weightstream.ingest.partitions import read_order  # noqa: E402
from weightstream.ingest.timestamps import TimestampParser  # noqa: E402

HEADER = "id,user_id,timestamp,effectiveDateTime,source_type,weight,unit\n"
SOURCES = ("patient-device", "https://api.iglucose.com", "internal-questionnaire", "patient-upload")


def generate(rows: int, seed: int) -> list[str]:
    """``rows`` CSV data lines: 1% lb, 1% quoted source, the rest plain kg rows."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    lines = []
    for n in range(rows):
        when = start + timedelta(seconds=rng.randrange(0, 400 * SECONDS_PER_DAY))
        ingested = when + timedelta(days=rng.randrange(0, 20), milliseconds=rng.randrange(1000))
        weight = rng.uniform(50, 150)
        unit = "kg"
        if rng.random() < 0.01:
            weight, unit = weight / 0.45359237, "[lb_ap]"
        source = rng.choice(SOURCES)
        if rng.random() < 0.01:
            source = f'"{source}"'
        lines.append(
            f"{n:032X},{rng.randrange(1000):032X},{ingested.isoformat(' ', 'milliseconds')},"
            f"{when.isoformat(' ')},{source},{weight:.8f},{unit}\n"
        )
    return lines


def best(repeat: int, count: int, run: Callable[[], object]) -> float:
    """Best CPU time of ``repeat`` runs of ``run``, in microseconds per item."""
    times = []
    for _ in range(repeat):
        began = time.process_time()
        run()
        times.append(time.process_time() - began)
    return min(times) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20250122)
    args = parser.parse_args()

    config = Config()
    now = datetime.now(UTC)
    lines = generate(args.rows, args.seed)
    fields = [line.rstrip("\n").split(",") for line in lines]
    stamps = [f[3] for f in fields]
    weights = [f[5] for f in fields]
    pairs = [(float(f[5]), f[6]) for f in fields]
    parse = TimestampParser(now=now, config=config.validation).parse
    limits, units = config.validation, config.units

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.csv"
        path.write_text(HEADER + "".join(lines), encoding="utf-8")

        def read_only() -> None:
            for _ in open_csv(path):
                pass

        def read_and_convert() -> None:
            for raw in open_csv(path):
                to_measurement(raw, config=config, now=now)

        def columnar() -> None:
            for _ in read_blocks(path, config, now=now):
                pass

        def parse_and_sort() -> None:
            memory_rows = config.processing.in_memory_rows
            order = read_order(path, config, now=now, memory_rows=memory_rows)
            try:
                for _ in order.groups(0, config.processing.commit_group_size):
                    pass
            finally:
                order.close()

        figures = {
            "parse_timestamp": lambda: [parse_timestamp(s, now=now, config=limits) for s in stamps],
            "TimestampParser.parse": lambda: [parse(s) for s in stamps],
            "parse_number": lambda: [parse_number(w) for w in weights],
            "to_kg": lambda: [to_kg(v, u, units) for v, u in pairs],
            "reader": read_only,
            "reader+to_measurement": read_and_convert,
            "columnar read_blocks": columnar,
            "read_order+groups": parse_and_sort,
        }
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{args.rows} rows, best of {args.repeat} (CPU), Python {sys.version.split()[0]}")
        print(f"  load average {load}")
        for name, run in figures.items():
            print(f"  {name:<24} {best(args.repeat, args.rows, run):6.2f} us/row")


if __name__ == "__main__":
    main()
