"""End-to-end throughput: synthetic CSV in, results CSV out, state and history durable in SQLite.

Run by hand (not a timed test)::

    .venv/bin/python benchmarks/throughput.py --users 20000 --per-user 50   # 1,000,000 rows

Reports readings per second for the whole ``process`` job (parse, validate, sort, filter,
commit in groups with the input position, write the results file) and the peak RSS of the
process (``resource.getrusage``; the generator runs in a child process so its memory is not
counted). The system this replaces did about 540 readings/s on the same kind of data.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from weightstream.config import Config
from weightstream.pipeline import process_file
from weightstream.store.sqlite import SQLiteStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--group", type=int, default=None, help="commit group size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export.csv"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "weightstream.cli",
                "synth",
                "--users",
                str(args.users),
                "--per-user",
                str(args.per_user),
                "--seed",
                str(args.seed),
                "--out",
                str(export),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        config = (
            Config() if args.group is None else Config(processing={"commit_group_size": args.group})
        )
        store = SQLiteStore.from_config(config.store, Path(tmp) / "bench.db")
        started = time.perf_counter()
        summary = process_file(export, store, config, out=Path(tmp) / "results.csv")
        seconds = time.perf_counter() - started
        store.close()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "rows": summary.rows,
                    "seconds": round(seconds, 2),
                    "readings_per_second": round(summary.rows / seconds),
                    "peak_rss_mb": round(peak_mb, 1),
                    "accepted": summary.verdicts["accepted"],
                    "group_size": config.processing.commit_group_size,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
