"""``serve --workers``: the supervisor around the workers (the served readings, metrics and
shutdown are in test_same_as_cli.py, test_shutdown.py and test_group_commit.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

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


def _workers_of(pid: int) -> list[int]:
    """The worker processes of a ``serve --workers`` parent (not multiprocessing's tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(c)
        for c in children
        if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text(errors="replace")
    ]


def test_a_killed_worker_is_replaced_and_the_service_goes_on(live_workers) -> None:
    """SIGKILL one of two workers: the supervisor starts another (and says so), readings are
    still answered and stored, and SIGTERM still stops everything cleanly."""
    from .conftest import STARTED  # type: ignore[import-not-found]

    before = _workers_of(live_workers.proc.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while live_workers.log_text().count(STARTED) < 3 or "died and was replaced" not in (
        live_workers.log_text()
    ):
        assert time.monotonic() < deadline, live_workers.log_text()
        time.sleep(0.2)
    after = _workers_of(live_workers.proc.pid)
    assert len(after) == 2 and before[0] not in after and before[1] in after
    for i in range(6):  # new connections: either worker
        r = httpx.post(
            live_workers.url + "/v1/measurements",
            json={
                "id": f"after-kill-{i}",
                "user_id": "u1",
                "timestamp": f"2025-01-0{i + 1}T08:00:00Z",
                "weight": 80.0 + i / 10,
                "source": "patient-device",
            },
            headers=live_workers.auth(),
            timeout=30,
        )
        assert r.status_code == 200, r.text
    conn = sqlite3.connect(live_workers.db)
    (stored,) = conn.execute("SELECT count(*) FROM readings").fetchone()
    conn.close()
    assert stored == 6
    assert live_workers.stop() == -signal.SIGTERM
