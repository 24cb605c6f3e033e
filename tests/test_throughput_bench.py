"""``benchmarks/throughput.py`` keeps working: every figure in one run, a kernel that is the
plain filter, and the pipeline's time split printed when there is one.

The runs are tiny (a few hundred rows); the figures themselves are measured by hand. The
benchmark is loaded by path, so the test does not depend on ``benchmarks`` being on
``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import weightstream.pipeline
from weightstream.kalman import predict, update

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def _load() -> ModuleType:
    name = "_weightstream_throughput_bench"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load()


@pytest.mark.parametrize("cohort", ["mixed", "clinical"])
def test_one_run_prints_every_figure(tmp_path: Path, cohort: str) -> None:
    """One run prints the end-to-end rate, the kernel rate and their ratio, the peak RSS of the
    base and the scaled job, the time split (or null) and the synth time, then cleans up."""
    done = subprocess.run(
        [sys.executable, str(_PATH), "--users", "20", "--per-user", "10", "--scale", "2",
         "--cohort", cohort, "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cohort"] == cohort
    assert report["rows"] == 200
    assert 150 <= report["kernel_rows"] <= 200  # rows with a weight and a time
    assert report["readings_per_second"] > 0 and report["kernel_readings_per_second"] > 0
    assert report["end_to_end_share_of_kernel"] == pytest.approx(
        report["readings_per_second"] / report["kernel_readings_per_second"], abs=1e-4
    )
    assert report["peak_rss_mb"] > 10
    assert len(report["load_average"]) == 2 and min(report["load_average"]) >= 0
    assert report["synth_seconds"] > 0
    assert report["timings"] is None or set(report["timings"]) >= {
        "parse", "sort", "filter", "store", "results"
    }  # fmt: skip
    assert sum(report["resets"].values()) >= 20  # every user's first reading at least
    scaled = report["scaled"]
    assert scaled["factor"] == 2 and scaled["rows"] == 400
    assert scaled["peak_rss_mb"] > 10 and scaled["synth_seconds"] > 0
    assert list(tmp_path.iterdir()) == []


def test_workers_run_the_job_on_the_process_engine(tmp_path: Path) -> None:
    """``--workers 2``: the end-to-end job on two worker processes, the same rows and resets
    as one process, with the driver's and the largest worker's peak RSS."""
    runs = {}
    for workers in (0, 2):
        done = subprocess.run(
            [sys.executable, str(_PATH), "--users", "20", "--per-user", "10", "--workers",
             str(workers), "--tmp", str(tmp_path)],
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs[workers] = json.loads(done.stdout)
    one, two = runs[0], runs[2]
    assert one["workers"] == 0 and one["workers_peak_rss_mb"] is None
    assert two["workers"] == 2 and two["workers_peak_rss_mb"] > 10
    assert (two["rows"], two["accepted"], two["resets"]) == (
        one["rows"], one["accepted"], one["resets"]
    )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_the_kernel_restarts_the_filter_for_each_user() -> None:
    """The kernel loop is predict + update per reading, started afresh at each user's first
    reading: the last user's state does not depend on the users before it."""
    a = [("a", 0.0, 80.0, 0.64), ("a", 1.0, 79.5, 0.64), ("a", 3.0, 79.9, 0.32)]
    b = [("b", 10.0, 120.0, 0.64), ("b", 12.0, 119.0, 1.92), ("b", 40.0, 117.5, 0.64)]
    params = (0.02, 5e-5, 0.5, 0.0025)
    x, P = (120.0, 0.0), ((0.5, 0.0), (0.0, 0.0025))
    last = 10.0
    for _, t, z, r in b[1:]:
        x, P = predict(x, P, t - last, 0.02, 5e-5)
        x, P, _, _ = update(x, P, z, r)
        last = t
    assert bench.kalman_loop(a + b, *params) == x
    assert bench.kalman_loop(b, *params) == x


def test_the_kernel_reads_rows_with_a_weight_and_a_time(tmp_path: Path) -> None:
    """The kernel's readings are the rows with a number in kg or pounds and a parseable time;
    pounds are converted and R is the source's measurement variance."""
    export = tmp_path / "export.csv"
    export.write_text(
        "id,user_id,timestamp,effectiveDateTime,source_type,weight,unit\n"
        "1,u,2024-01-02 08:00:00.000,2024-01-01 00:00:00,patient-device,80.5,kg\n"
        "2,u,2024-01-03 08:00:00.000,2024-01-02 00:00:00,care-team-upload,176,lb\n"
        "3,u,2024-01-04 08:00:00.000,2024-01-03 00:00:00,patient-device,27.1,kg/m2\n"
        "4,u,2024-01-05 08:00:00.000,2024-01-04 00:00:00,patient-device,,kg\n"
        "5,u,2024-01-06 08:00:00.000,2024-01-32 00:00:00,patient-device,80.1,kg\n"
        "6,u,2024-01-07 08:00:00.000,2024-01-06 00:00:00,patient-device,\"72,5\",kg\n",
        encoding="utf-8",
    )
    readings = bench._readings(export)
    assert [(u, z) for u, _, z, _ in readings] == [("u", 80.5), ("u", 176 * 0.45359237)]
    assert readings[1][1] - readings[0][1] == pytest.approx(1.0)
    assert [r for *_, r in readings] == pytest.approx([0.64, 0.32])


def _fake_summary(**extra: Any) -> SimpleNamespace:
    return SimpleNamespace(rows=10, verdicts=Counter(accepted=9), resets=Counter(initial=2),
                           **extra)  # fmt: skip


@pytest.mark.parametrize(
    ("timings", "printed"),
    [
        (None, None),
        ({"parse": 1.23456, "sort": 0.2, "filter": 1.0, "store": 3.0, "results": 0.5},
         {"parse": 1.235, "sort": 0.2, "filter": 1.0, "store": 3.0, "results": 0.5}),
    ],
)  # fmt: skip
def test_the_time_split_is_printed_when_the_pipeline_reports_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    timings: dict[str, float] | None,
    printed: dict[str, float] | None,
) -> None:
    """end_to_end_job prints RunSummary.timings (rounded to ms) when the summary has them, and
    null when it does not, so the benchmark runs on either pipeline."""
    summary = _fake_summary() if timings is None else _fake_summary(timings=timings)
    monkeypatch.setattr(weightstream.pipeline, "process_file", lambda *a, **k: summary)
    result = bench.end_to_end_job(tmp_path / "export.csv", tmp_path, None)
    assert result["timings"] == printed
    assert result["rows"] == 10 and result["accepted"] == 9
    assert result["reset_share"] == pytest.approx(0.2)
