"""End-to-end throughput against the bare Kalman kernel, with peak memory and the time split.

Run by hand (not a timed test)::

    .venv/bin/python benchmarks/throughput.py --users 20000 --per-user 50              # 1 M rows
    .venv/bin/python benchmarks/throughput.py --users 20000 --per-user 50 --scale 10   # + 10 M
    .venv/bin/python benchmarks/throughput.py --users 20000 --per-user 50 --cohort clinical
    .venv/bin/python benchmarks/throughput.py --users 20000 --per-user 50 --workers 2

Prints one JSON object:

- ``readings_per_second``: the whole ``process`` job (parse, validate, sort, filter, commit in
  groups with the input position to durable SQLite, write the results file) over the
  synthetic export; ``seconds`` is its wall time, ``peak_rss_mb`` its process's peak RSS,
  ``load_average`` the machine's 1-minute load average when the job started and when it
  ended (the machine is shared: a figure taken under load says so).
- ``timings``: that job's time split (parse, sort, filter, store, results) when the pipeline's
  ``RunSummary`` reports one, else ``null``.
- ``kernel_readings_per_second``: the floor. A plain-Python loop of
  :func:`weightstream.kalman.predict` and :func:`~weightstream.kalman.update` over the same
  rows (those that parse as a weight and a time), sorted by (user, time): one 2-state filter
  per user started at its first reading, no rules, no resets, no store, no output. Only the
  loop is timed (reading the CSV and sorting are not). ``end_to_end_share_of_kernel`` is the
  end-to-end rate divided by it.
- ``resets`` and ``reset_share``: resets by type and the share of rows that triggered one.
- ``synth_seconds``: how long ``weightstream synth`` took to write the export.
- ``workers`` and ``workers_peak_rss_mb`` (with ``--workers N``): the end-to-end job ran as
  ``process --engine processes`` on N worker processes (:mod:`weightstream.parallel`);
  ``peak_rss_mb`` is then the driver's, and ``workers_peak_rss_mb`` the largest worker's.
  Its ``timings`` add up the workers' filter and store seconds (worker-seconds).
- ``scaled`` (with ``--scale K``): the end-to-end job again on K times the users (10 M rows
  from the 1 M command above), with its own export, peak RSS and time split.

``--cohort clinical`` uses synth's ``sparse_clinical`` scenario (a reading every 3 weeks to 3
months for years, about 15% of rows trigger a reset) instead of the default ``mixed`` one.

Each job (synth, end to end, kernel, each scaled job) runs in its own child process started by
a parent that holds no data, so each peak RSS is that job's own (``VmHWM``, a fresh count after
``exec``) and the generator's memory is never counted. The system weightstream replaces did
about 540 readings/s on the same kind of data.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: --cohort NAME -> synth scenario.
COHORTS = {"mixed": "mixed", "clinical": "sparse_clinical"}
_LB_KG = 0.45359237
_POUNDS = ("lb", "[lb_ap]")


# --- measurements (run in the child processes) -------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux ``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def end_to_end_job(export: Path, work: Path, group: int | None, workers: int = 0) -> dict[str, Any]:
    """``process`` the export into a fresh durable SQLite file, results CSV out; its figures.

    With the allocator settings the ``weightstream`` command sets for itself. ``workers``:
    run ``--engine processes`` with that many worker processes (0: one process).
    """
    from weightstream.cli import ALLOCATOR_ENV

    for name, value in ALLOCATOR_ENV.items():  # before polars is imported
        os.environ.setdefault(name, value)
    from weightstream.config import Config, ProcessingConfig
    from weightstream.pipeline import process_file
    from weightstream.store.sqlite import SQLiteStore

    config = Config()
    if group is not None:
        config = Config(processing=ProcessingConfig(commit_group_size=group))
    store = SQLiteStore.from_config(config.store, work / "bench.db")
    load_before = os.getloadavg()[0]
    try:
        started = time.perf_counter()
        if workers:
            from weightstream.parallel import process_parallel

            summary = process_parallel(
                export, store, config, workers=workers, out=work / "results.csv"
            )
        else:
            summary = process_file(export, store, config, out=work / "results.csv")
        seconds = time.perf_counter() - started
    finally:
        store.close()
    timings = getattr(summary, "timings", None)
    resets = dict(getattr(summary, "resets", {}))
    return {
        "rows": summary.rows,
        "seconds": round(seconds, 2),
        "readings_per_second": round(summary.rows / seconds),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "timings": (
            {name: round(float(value), 3) for name, value in timings.items()}
            if isinstance(timings, dict)
            else None
        ),
        "accepted": summary.verdicts["accepted"],
        "resets": resets,
        "reset_share": round(sum(resets.values()) / summary.rows, 4) if summary.rows else 0.0,
        "group_size": config.processing.commit_group_size,
        "workers": workers,
        # With workers: the largest worker's peak (each is a process of its own).
        "workers_peak_rss_mb": (
            round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
            if workers
            else None
        ),
    }


Reading = tuple[str, float, float, float]  # user, time (days), weight (kg), R (kg²)


def _readings(export: Path) -> list[Reading]:
    """The export's rows that parse as a weight (kg or pounds) and a time, unsorted."""
    from weightstream.clock import SECONDS_PER_DAY
    from weightstream.config import Config

    config = Config()
    base_r, sources = config.filter.measurement_var, config.sources
    readings: list[Reading] = []
    with export.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        column = {name: k for k, name in enumerate(next(reader))}
        c_user, c_time = column["user_id"], column["effectiveDateTime"]
        c_weight, c_unit, c_source = column["weight"], column["unit"], column["source_type"]
        for row in reader:
            unit = row[c_unit]
            if unit != "kg" and unit not in _POUNDS:
                continue
            try:
                kg = float(row[c_weight])
                at = datetime.fromisoformat(row[c_time]).replace(tzinfo=UTC)
            except ValueError:
                continue
            if not math.isfinite(kg):
                continue
            if unit in _POUNDS:
                kg *= _LB_KG
            r = base_r * sources.multiplier(row[c_source])
            readings.append((row[c_user], at.timestamp() / SECONDS_PER_DAY, kg, r))
    return readings


def kalman_loop(
    readings: list[Reading], q_weight: float, q_trend: float, weight_var: float, trend_var: float
) -> tuple[float, float]:
    """Filter ``readings`` (sorted by user, time): per user, start at the first reading, then
    predict + update on each next one. Returns the last state (so nothing is optimised away)."""
    from weightstream.kalman import predict, update

    user: str | None = None
    last = 0.0
    x: tuple[float, float] = (0.0, 0.0)
    p0 = ((weight_var, 0.0), (0.0, trend_var))
    P = p0
    for u, t, z, r in readings:
        if u != user:
            user, last, x, P = u, t, (z, 0.0), p0
            continue
        x, P = predict(x, P, t - last, q_weight, q_trend)
        x, P, _, _ = update(x, P, z, r)
        last = t
    return x


def kernel_job(export: Path) -> dict[str, Any]:
    """The bare kernel's rate over the export's readings (only the filter loop is timed)."""
    from weightstream.config import Config

    f = Config().filter
    readings = _readings(export)
    readings.sort()
    started = time.perf_counter()
    kalman_loop(readings, f.q_weight, f.q_trend, f.initial_weight_var, f.initial_trend_var)
    seconds = time.perf_counter() - started
    return {
        "rows": len(readings),
        "seconds": round(seconds, 3),
        "readings_per_second": round(len(readings) / seconds),
    }


# --- orchestration (the parent holds no data) --------------------------------------------------


def _child(*args: str) -> dict[str, Any]:
    """Run one job of this script in a fresh Python process; its JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _synth(users: int, per_user: int, seed: int, scenario: str, export: Path) -> float:
    """Write the synthetic export in a child process; the seconds it took."""
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "weightstream.cli",
            "synth",
            "--users",
            str(users),
            "--per-user",
            str(per_user),
            "--seed",
            str(seed),
            "--scenario",
            scenario,
            "--out",
            str(export),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return round(time.perf_counter() - started, 2)


def _note(message: str) -> None:
    print(f"[throughput] {message}", file=sys.stderr, flush=True)


def _end_to_end(work: Path, args: argparse.Namespace, users: int) -> dict[str, Any]:
    """Synth ``users × per_user`` rows, then the end-to-end job on them, each in a child."""
    work.mkdir()
    export = work / "export.csv"
    rows = users * args.per_user
    _note(f"synth {rows:,} rows ({args.cohort})")
    synth_seconds = _synth(users, args.per_user, args.seed, COHORTS[args.cohort], export)
    _note(f"synth took {synth_seconds} s; end to end")
    job = ["--job", "end-to-end", "--export", str(export), "--work", str(work)]
    if args.group is not None:
        job += ["--group", str(args.group)]
    if args.workers:
        job += ["--workers", str(args.workers)]
    result = _child(*job)
    result["synth_seconds"] = synth_seconds
    return result


def _remove(work: Path) -> None:
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "cohort": args.cohort,
        "users": args.users,
        "per_user": args.per_user,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        base = Path(tmp) / "base"
        report.update(_end_to_end(base, args, args.users))
        _note(f"end to end: {report['readings_per_second']:,} readings/s; bare kernel")
        kernel = _child("--job", "kernel", "--export", str(base / "export.csv"))
        report["kernel_rows"] = kernel["rows"]
        report["kernel_seconds"] = kernel["seconds"]
        report["kernel_readings_per_second"] = kernel["readings_per_second"]
        report["end_to_end_share_of_kernel"] = round(
            report["readings_per_second"] / kernel["readings_per_second"], 4
        )
        _remove(base)
        if args.scale:
            scaled = _end_to_end(Path(tmp) / "scaled", args, args.users * args.scale)
            report["scaled"] = {"factor": args.scale, **scaled}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--group", type=int, default=None, help="commit group size")
    parser.add_argument("--cohort", choices=sorted(COHORTS), default="mixed")
    parser.add_argument(
        "--scale",
        type=int,
        default=0,
        metavar="K",
        help="also run end to end on K times the users (peak RSS at 10 M rows: --scale 10)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="end to end with --engine processes on this many worker processes (0: one process)",
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where the files go")
    # The child processes' entry points.
    parser.add_argument("--job", choices=("end-to-end", "kernel"), help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job == "end-to-end":
        print(json.dumps(end_to_end_job(args.export, args.work, args.group, args.workers)))
    elif args.job == "kernel":
        print(json.dumps(kernel_job(args.export)))
    else:
        if args.users <= 0 or args.per_user <= 0 or args.scale < 0 or args.workers < 0:
            parser.error(
                "--users and --per-user must be positive, --scale and --workers non-negative"
            )
        print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
