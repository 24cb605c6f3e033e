"""``benchmarks/dask_scaling.py`` keeps working: its projection from measured figures.

The figures themselves are measured by hand (minutes of a real cluster); this only loads the
script by path and checks the arithmetic of the projection on fixed numbers.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "dask_scaling.py"


def _load() -> ModuleType:
    name = "_weightstream_dask_scaling_bench"
    spec = importlib.util.spec_from_file_location(name, _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_projection_from_measured_figures():
    """Driver ceiling = rows / serial seconds; per-core rate = rows / worker-seconds."""
    bench = _load()
    run = {
        "rows": 1_000_000,
        "commits": 500,
        "wal_bytes_per_reading": 1600.0,
        "timings": {"parse": 4.0, "sort": 1.0, "results": 5.0, "filter": 80.0, "store": 120.0},
    }
    p = bench.projection({1: run}, 2000)
    assert p["driver_ceiling_readings_per_second"] == 100_000
    assert p["readings_per_second_per_worker_core"] == 5000
    assert p["store_seconds_per_commit_ms"] == 240.0
    assert p["db_commits_per_second_needed_at_1M_readings_per_second"] == 500
