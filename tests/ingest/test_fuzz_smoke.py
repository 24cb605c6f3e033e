"""A short atheris run over the row parser on every test run (RELIABILITY G1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
SECONDS = int(os.environ.get("WEIGHTSTREAM_FUZZ_SECONDS", "15"))


def test_row_parser_survives_coverage_guided_fuzzing(tmp_path: Path) -> None:
    """libFuzzer mutates bytes after a valid header for a few seconds; no crash, no bad row."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in (FUZZ / "corpus").iterdir():
        (corpus / seed.name).write_bytes(seed.read_bytes())
    run = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_rows.py"), f"-max_total_time={SECONDS}",
         "-seed=1234", "-max_len=512", "-rss_limit_mb=1024", str(corpus)],
        capture_output=True, text=True, timeout=SECONDS + 120,
    )
    print("fuzz seed 1234;", run.stderr[-2000:])
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Done" in run.stderr
