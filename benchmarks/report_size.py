"""Size and time of a whole report site (run by hand; issue 15's targets).

    .venv/bin/python benchmarks/report_size.py [--users 10000] [--per-user 60] [--jobs 1 2]
        [--db EXISTING.db --input EXPORT.csv] [--keep DIR]

Synthesises ``--users`` x ``--per-user`` readings of the ``mixed`` scenario (seeded), processes
them into a fresh SQLite store (both timed apart, not part of the figure), then writes the
report of every user once per ``--jobs`` value and prints one JSON object: for each run the
wall time and CPU time (this process and its workers), and the pages' sizes (largest, mean
and 99th percentile of the user pages, the index, the cohort page, the library written once).
Targets: each user page well under 1 MB; the site written in under a minute. With ``--db``
an existing store is reported instead (``--input`` its export, for duplicate/invalid rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from weightstream.config import Config
from weightstream.pipeline import process_file
from weightstream.report.site import PLOTLY_ASSET, write_site
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _sizes(out: Path) -> dict[str, Any]:
    pages = sorted(p.stat().st_size for p in (out / "users").glob("*.html"))
    n = len(pages)
    return {
        "user_pages": n,
        "user_page_max_kib": round(pages[-1] / 1024, 1) if n else None,
        "user_page_mean_kib": round(sum(pages) / n / 1024, 1) if n else None,
        "user_page_p99_kib": round(pages[min(n - 1, int(0.99 * n))] / 1024, 1) if n else None,
        "user_pages_total_mib": round(sum(pages) / 2**20, 1),
        "index_kib": round((out / "index.html").stat().st_size / 1024, 1),
        "cohort_kib": round((out / "cohort.html").stat().st_size / 1024, 1),
        "library_kib": round((out / PLOTLY_ASSET).stat().st_size / 1024, 1),
        "library_files": len(list(out.rglob("*.js"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--per-user", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20261215)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--db", type=Path, help="report this existing store instead")
    parser.add_argument("--input", type=Path, action="append", default=[])
    parser.add_argument("--keep", type=Path, help="write the (last) site here and keep it")
    args = parser.parse_args()
    config = Config()
    work = Path(tempfile.mkdtemp(prefix="report-bench-"))
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_before": os.getloadavg()}
    try:
        db, inputs = args.db, list(args.input)
        if db is None:
            export, db = work / "export.csv", work / "w.db"
            started = time.perf_counter()
            rows = write_stream(args.users, args.per_user, args.seed, export)
            result["synth_s"] = round(time.perf_counter() - started, 1)
            store = SQLiteStore.from_config(config.store, db, create=True)
            started = time.perf_counter()
            process_file(export, store, config)
            store.close()
            result["process_s"] = round(time.perf_counter() - started, 1)
            result["rows"] = rows
            inputs = [export]
        runs = []
        for jobs in args.jobs:
            out = args.keep if args.keep is not None else work / f"site-{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            store = SQLiteStore.from_config(config.store, db, create=False)
            cpu, started = _cpu(), time.perf_counter()
            summary = write_site(
                store,
                config,
                out,
                inputs=inputs,
                jobs=jobs,
                open_store=lambda: SQLiteStore.from_config(config.store, db, create=False),
            )
            wall = time.perf_counter() - started
            store.close()
            runs.append(
                {
                    "jobs": jobs,
                    "users": summary.users,
                    "wall_s": round(wall, 1),
                    "cpu_s": round(_cpu() - cpu, 1),
                    "target_wall_s": 60,
                    "target_user_page_kib": 1024,
                    **_sizes(out),
                }
            )
        result["runs"] = runs
        result["load_avg_after"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
