"""``serve --workers``: the supervisor around the workers (the served readings, metrics and
shutdown are in test_same_as_cli.py, test_shutdown.py and test_group_commit.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from weightstream.service.workers import SPEC_ENV, WorkerSpec

_RUN = """
import sys
from weightstream.service.workers import WorkerSpec, run_workers
spec = WorkerSpec(db=sys.argv[1])
print("stopped by", run_workers(spec, 2, host="127.0.0.1", port=0, log_config=None))
"""


def test_workers_that_cannot_start_stop_the_supervisor(tmp_path: Path) -> None:
    """A worker whose app cannot be built (here: no database) exits as a failed start, and
    the supervisor stops instead of spawning it again; the multiprocess metrics directory
    and the environment it set are gone."""
    missing = tmp_path / "absent" / "x.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    env["TMPDIR"] = str(tmp_path)
    res = subprocess.run(
        [sys.executable, "-c", _RUN, str(missing)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "stopped by None"
    assert res.stderr.count("a worker could not start: StoreOpenError") >= 1
    assert "Traceback" not in res.stderr
    assert not list(tmp_path.glob("weightstream-metrics-*"))


def test_the_spec_goes_through_the_environment(monkeypatch) -> None:
    """What the parent writes is what a worker reads."""
    spec = WorkerSpec(db="/d/x.db", config="/c.toml", log_json=True, settings={"max_batch": 5})
    monkeypatch.setenv(SPEC_ENV, spec.to_env())
    assert WorkerSpec.from_env() == spec
