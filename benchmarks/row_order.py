"""What an export's row order costs the store: the same rows grouped by user and shuffled.

Run by hand (not a timed test)::

    .venv/bin/python benchmarks/row_order.py --users 8000 --per-user 50
    .venv/bin/python benchmarks/row_order.py --users 8000 --per-user 50 --groups 2000,10000

``weightstream synth`` writes its export grouped by user, as the sample export is; the same
lines shuffled stand for an export in time order, where users interleave. Each file is
processed into a fresh durable SQLite file (results CSV out) once per commit group size, each
run in its own child process, and one JSON object is printed: for each (order, group size) the
wall seconds, the child's CPU seconds, the bytes it wrote (``/proc/self/io``: the database, its
WAL and the results file), its peak RSS and the pipeline's time split.

A group's readings come in user order either way; what changes is the input rows of their
results, which the results table's unique (input, row) index is keyed by: near one another in a
grouped export, all over the index in a shuffled one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _child(export: Path, work: Path, group: int) -> dict[str, Any]:
    """Process ``export`` into a fresh store under ``work``; this process's figures."""
    from weightstream.cli import ALLOCATOR_ENV

    for name, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)
    from weightstream.config import Config, ProcessingConfig
    from weightstream.pipeline import process_file
    from weightstream.store.sqlite import SQLiteStore

    config = Config(processing=ProcessingConfig(commit_group_size=group))
    started, cpu = time.perf_counter(), time.process_time()
    with SQLiteStore(work / "ws.db") as store:
        summary = process_file(export, store, config, out=work / "results.csv")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    figures: dict[str, Any] = {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}
    with open("/proc/self/io", encoding="ascii") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                figures["written_mb"] = round(int(line.split()[1]) / 1e6, 1)
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                figures["peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    figures["timings"] = {k: round(v, 2) for k, v in summary.timings.items()}
    figures["readings_per_second"] = round(summary.rows / wall)
    return figures


def _run(export: Path, group: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ws-row-order-") as work:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(export), work, str(group)],
            check=True,
            capture_output=True,
            text=True,
        )
    figures: dict[str, Any] = json.loads(out.stdout)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--groups", default="2000,10000", help="commit group sizes")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        export, work, group = args.child
        print(json.dumps(_child(Path(export), Path(work), int(group))))
        return 0
    groups = [int(g) for g in args.groups.split(",") if g]
    report: dict[str, Any] = {"rows": args.users * args.per_user, "seed": args.seed, "runs": []}
    with tempfile.TemporaryDirectory(prefix="ws-row-order-data-") as data:
        grouped, shuffled = Path(data) / "grouped.csv", Path(data) / "shuffled.csv"
        subprocess.run(
            [
                str(Path(sys.executable).with_name("weightstream")),
                "synth",
                "--users",
                str(args.users),
                "--per-user",
                str(args.per_user),
                "--seed",
                str(args.seed),
                "--out",
                str(grouped),
            ],
            check=True,
            capture_output=True,
        )
        header, *lines = grouped.read_text(encoding="utf-8").splitlines(keepends=True)
        random.Random(args.seed).shuffle(lines)
        shuffled.write_text(header + "".join(lines), encoding="utf-8")
        del lines
        for order, export in (("grouped", grouped), ("shuffled", shuffled)):
            for group in groups:
                run = {"order": order, "commit_group_size": group, **_run(export, group)}
                report["runs"].append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
