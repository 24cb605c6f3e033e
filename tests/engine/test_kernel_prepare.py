"""The engine's loop gets its machine code from numba's cache, compiled in a child if cold.

Each test runs a fresh interpreter on a fresh ``NUMBA_CACHE_DIR`` (numba reads it at import),
so what it sees is what the first run after an install sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import weightstream
from weightstream.cli import app
from weightstream.config import Config
from weightstream.engine import kernel as K
from weightstream.pipeline import process_file
from weightstream.store.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not K.COMPILED, reason="numba absent: nothing is compiled")

_PROBE = """
import json, sys
import numpy as np
import weightstream.engine.kernel as K
if sys.argv[1] == "failing-child":
    K.COMPILE_COMMAND = [sys.executable, "-c", "raise SystemExit(3)"]
K.prepare(child=True)
K.prepare(child=True)  # idempotent: no second look, no second child
n = 3
ts = np.arange(n, dtype=np.int64)
z, r, q = np.full(n, 80.0), np.ones(n), np.ones(n)
manual = np.zeros(n, dtype=np.bool_)
sf = np.zeros(K.F_SLOTS)
si = np.zeros(K.I_SLOTS, dtype=np.int64)
si[K.I_LAST_ACCEPTED] = K.NONE  # the loop stops at once: a reset is the step's
rej_w, rej_t = np.zeros(K.REJECTED_KEPT), np.zeros(K.REJECTED_KEPT, dtype=np.int64)
c = np.zeros(K.C_SLOTS)
outs = [np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int8), *(np.zeros(n) for _ in range(7))]
stop = K.run(ts, z, r, manual, q, 0, n, sf, si, rej_w, rej_t, c, *outs)
stats = K.run.stats
print(json.dumps({
    "stop": int(stop),
    "hits": sum(stats.cache_hits.values()),
    "misses": sum(stats.cache_misses.values()),
    "signatures": len(K.run.signatures),
}))
"""


def _probe(cache: Path, mode: str) -> tuple[dict[str, int], str]:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(cache)
    src = str(Path(weightstream.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_cold_cache_is_compiled_in_a_child_and_only_loaded_here(tmp_path: Path) -> None:
    """On an empty cache the process never compiles: a child fills the cache, it loads."""
    seen, _ = _probe(tmp_path, "child")
    assert seen == {"stop": 0, "hits": 1, "misses": 0, "signatures": 1}
    assert list(tmp_path.rglob("*.nbc")), "the child left the loop's code in the cache"


def test_a_warm_cache_starts_no_child(tmp_path: Path) -> None:
    """Once cached, the code is loaded without a child (a failing one would be logged)."""
    _probe(tmp_path, "child")
    seen, stderr = _probe(tmp_path, "failing-child")
    assert seen == {"stop": 0, "hits": 1, "misses": 0, "signatures": 1}
    assert "child failed" not in stderr


def test_a_failed_child_falls_back_to_compiling_here(tmp_path: Path) -> None:
    """If the child cannot compile, the process compiles itself and the loop still runs."""
    seen, stderr = _probe(tmp_path, "failing-child")
    assert seen == {"stop": 0, "hits": 0, "misses": 1, "signatures": 1}
    assert "compiling here" in stderr


def test_the_engine_calls_the_loop_with_the_prepared_signature(tmp_path: Path) -> None:
    """A file through the engine adds no signature to the one prepared (none is compiled)."""
    src, db = tmp_path / "s.csv", tmp_path / "s.db"
    args = ["synth", "--users", "10", "--per-user", "20", "--seed", "5", "--out", str(src)]
    assert CliRunner().invoke(app, args).exit_code == 0
    config = Config()
    store = SQLiteStore.from_config(config.store, db)
    try:
        process_file(src, store, config)
    finally:
        store.close()
    assert K.run.signatures == [K.SIGNATURE]  # type: ignore[attr-defined]
