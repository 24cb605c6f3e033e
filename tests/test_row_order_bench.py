"""``benchmarks/row_order.py`` keeps working: both orders of the same rows, each commit group
size, every figure (the figures themselves are measured by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "row_order.py"


def test_row_order_bench_runs_both_orders_at_each_group_size() -> None:
    out = subprocess.run(
        [sys.executable, str(_PATH), "--users", "30", "--per-user", "10", "--groups", "40,100"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(out.stdout)
    assert report["rows"] == 300
    runs = report["runs"]
    assert [(r["order"], r["commit_group_size"]) for r in runs] == [
        ("grouped", 40),
        ("grouped", 100),
        ("shuffled", 40),
        ("shuffled", 100),
    ]
    for run in runs:
        assert run["seconds"] > 0 and run["cpu_seconds"] > 0
        assert run["written_mb"] > 0 and run["peak_rss_mb"] > 0
        assert {"parse", "filter", "store"} <= set(run["timings"])
        assert run["readings_per_second"] > 0
