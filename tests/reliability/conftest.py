"""Shared machinery of the reliability tests: a small synthetic export, the real CLI in a child
process, and a snapshot of everything a crash must not change (see /work/shared/RELIABILITY.md).

A snapshot holds the results file bytes, the ``user_states``, ``readings`` and ``input_positions``
rows, the reset audit's identity columns (wall-clock columns such as ``at``, ``duration_s``,
``taken_at`` and ``updated_at`` are left out), ``PRAGMA integrity_check`` and the users whose
rebuild from history differs from the live state.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from weightstream.config import Config, load_config
from weightstream.replay import rebuild_user
from weightstream.store import codec
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream

USERS, PER_USER, SYNTH_SEED, GROUP = 12, 25, 7, 40
CHILD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Workload:
    """One small export and the TOML config that processes it in several commit groups."""

    root: Path
    input: Path
    config_path: Path
    config: Config
    rows: int


def write_config(path: Path, group: int = GROUP, extra: str = "") -> Path:
    """A TOML config with a small commit group (so a run has several groups)."""
    path.write_text(f"[processing]\ncommit_group_size = {group}\n{extra}", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    """12 users x 25 readings of the 'mixed' scenario, commit groups of 40."""
    root = tmp_path_factory.mktemp("reliability")
    src = root / "export.csv"
    rows = write_stream(USERS, PER_USER, SYNTH_SEED, src, None, scenario="mixed")
    cfg = write_config(root / "config.toml")
    return Workload(root, src, cfg, load_config(cfg), rows)


def child_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any WEIGHTSTREAM_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    env.update(extra)
    return env


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m weightstream.cli ARGS`` in a child process; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "weightstream.cli", *map(str, args)],
        env=env if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# A "zygote": a child Python that imports the CLI once, then forks one grandchild per command.
# The grandchild is a real, separate process running the real entry point
# (``weightstream.cli.main``) with its own environment, argv, stdout and stderr; a crash point
# SIGKILLs it exactly as it would a ``python -m weightstream.cli`` process. Forking only saves
# the ~1 s of imports per run (CI has 2 cores and 140 runs to do). The zygote opens no
# database and starts no thread before forking (rule 3: no connection used across fork); the
# entry point reads the crash/chaos environment of each grandchild when it starts, as
# ``python -m weightstream.cli`` does. A request may name another entry point ("module:function",
# e.g. the negative control's ``weightstream.testing:split_unit_cli``). The reference and
# listing runs use a plain ``python -m weightstream.cli`` subprocess, so every crash case also
# cross-checks the zygote against the genuine entry point, byte for byte.
_ZYGOTE = r"""
import atexit, importlib, json, os, sys, traceback
import weightstream.cli as cli
import weightstream.logs, weightstream.metrics, weightstream.observe, weightstream.pipeline
import weightstream.replay, weightstream.store.sqlite, weightstream.testing
import rich.progress
channel = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    req = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            os.dup2(os.open(req["stdout"], flags, 0o644), 1)
            os.dup2(os.open(req["stderr"], flags, 0o644), 2)
            os.environ.clear()
            os.environ.update(req["env"])
            main = cli.main
            if req.get("entry"):
                module, _, name = req["entry"].partition(":")
                main = getattr(importlib.import_module(module), name)
            sys.argv = ["weightstream", *req["args"]]
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                atexit._run_exitfuncs()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    channel.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\n")
    channel.flush()
"""


class Zygote:
    """One pre-imported CLI process that forks a child per command (one command at a time)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            text=True,
        )

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, entry: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI with ``args`` in a forked child; like :func:`run_cli`.

        ``entry`` ("module:function") replaces ``weightstream.cli:main`` as the entry point.
        """
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.count += 1
        out, err = self.scratch / f"{self.count}.out", self.scratch / f"{self.count}.err"
        request = {
            "args": [str(a) for a in args],
            "env": env if env is not None else child_env(),
            "stdout": str(out),
            "stderr": str(err),
            "entry": entry,
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("the CLI zygote died")
        return subprocess.CompletedProcess(
            list(request["args"]), int(json.loads(reply)), out.read_text(), err.read_text()
        )

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=CHILD_TIMEOUT_S)


class ZygotePool:
    """Zygotes shared by worker threads: each run borrows one for its duration."""

    def __init__(self, root: Path, size: int) -> None:
        self._zygotes = [Zygote(_mkdir(root / f"zygote{i}")) for i in range(size)]
        self._free: queue.Queue[Zygote] = queue.Queue()
        for z in self._zygotes:
            self._free.put(z)

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, entry: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI in a forked child of a free zygote (``entry``: see :meth:`Zygote.run`)."""
        zygote = self._free.get(timeout=CHILD_TIMEOUT_S * 4)
        try:
            return zygote.run(*args, env=env, entry=entry)
        finally:
            self._free.put(zygote)

    def close(self) -> None:
        for z in self._zygotes:
            z.close()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def cli_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZygotePool]:
    """Two CLI zygotes (CI has two cores), for running many short CLI children fast."""
    pool = ZygotePool(tmp_path_factory.mktemp("zygotes"), 2)
    yield pool
    pool.close()


def process_cmd(w: Workload, db: Path, out: Path, input: Path | None = None) -> list[str | Path]:
    """Arguments of ``weightstream process`` for a workload."""
    return ["process", input or w.input, "--db", db, "--out", out, "--config", w.config_path]


def fault_points(stderr: str) -> dict[str, int]:
    """Parse the ``WEIGHTSTREAM_FAULT_POINTS {json}`` line of a ``WEIGHTSTREAM_FAULT=list`` run."""
    for line in stderr.splitlines():
        if line.startswith("WEIGHTSTREAM_FAULT_POINTS "):
            return dict(json.loads(line.split(" ", 1)[1]))
    raise AssertionError(f"no WEIGHTSTREAM_FAULT_POINTS line in stderr:\n{stderr}")


_AUDIT_IDENTITY = "user_id, reading_id, reset_type, trigger, outcome, failed_operation, fallback"


@dataclass(frozen=True)
class Snapshot:
    """What a finished run left behind, minus wall-clock columns."""

    results_file: bytes
    user_states: list[tuple[Any, ...]]
    readings: list[tuple[Any, ...]]
    audits: list[tuple[Any, ...]]
    positions: list[tuple[Any, ...]]
    integrity: str
    rebuild_mismatches: list[str]

    def differences(self, reference: Snapshot) -> list[str]:
        """Human-readable list of what differs from ``reference`` and what is unsound."""
        out = []
        for name in ("results_file", "user_states", "readings", "audits", "positions"):
            if getattr(self, name) != getattr(reference, name):
                out.append(f"{name} differ from the uninterrupted run")
        if self.integrity != "ok":
            out.append(f"integrity_check: {self.integrity}")
        if self.rebuild_mismatches:
            out.append(f"rebuild != live for {self.rebuild_mismatches}")
        return out


def table_rows(store: SQLiteStore, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the store's connection, as tuples."""
    return [tuple(r) for r in store.connection.execute(sql).fetchall()]


def snapshot(db: Path, out: Path | None, config: Config) -> Snapshot:
    """Snapshot ``db`` (and the results file ``out``)."""
    with SQLiteStore(db, create=False) as store:
        states = table_rows(
            store, f"SELECT {', '.join(codec.STATE_COLUMNS)} FROM user_states ORDER BY user_id"
        )
        readings = table_rows(
            store, f"SELECT seq, {', '.join(codec.READING_COLUMNS)} FROM readings ORDER BY seq"
        )
        audits = table_rows(store, f"SELECT {_AUDIT_IDENTITY} FROM reset_audit ORDER BY id")
        positions = table_rows(
            store, "SELECT input_id, position FROM input_positions ORDER BY input_id"
        )
        mismatches = [
            u for u in store.users() if not rebuild_user(store, u, config).equal
        ]
        integrity = store.integrity_check()
    results = out.read_bytes() if out is not None and out.exists() else b""
    return Snapshot(results, states, readings, audits, positions, integrity, mismatches)


@pytest.fixture(scope="session")
def reference(workload: Workload) -> Snapshot:
    """The uninterrupted CLI run of the workload into a fresh database (computed once)."""
    db, out = workload.root / "reference.db", workload.root / "reference.csv"
    done = run_cli(*process_cmd(workload, db, out))
    assert done.returncode == 0, done.stderr
    snap = snapshot(db, out, workload.config)
    assert snap.integrity == "ok" and not snap.rebuild_mismatches
    assert snap.results_file.count(b"\n") == workload.rows + 1
    return snap


@pytest.fixture(scope="session")
def fault_listing(workload: Workload) -> dict[str, int]:
    """Every crash point the CLI reaches on the workload, with its hit count (one run)."""
    root = workload.root / "listing"
    root.mkdir()
    done = run_cli(
        *process_cmd(workload, root / "db", root / "out.csv"),
        env=child_env(WEIGHTSTREAM_FAULT="list"),
    )
    assert done.returncode == 0, done.stderr
    return fault_points(done.stderr)


class Harness:
    """The helpers above, as a fixture (test modules cannot import a conftest by name)."""

    Workload = Workload
    Snapshot = Snapshot
    child_env = staticmethod(child_env)
    run_cli = staticmethod(run_cli)
    Zygote = Zygote
    process_cmd = staticmethod(process_cmd)
    fault_points = staticmethod(fault_points)
    snapshot = staticmethod(snapshot)
    table_rows = staticmethod(table_rows)
    write_config = staticmethod(write_config)


@pytest.fixture(scope="session")
def harness() -> type[Harness]:
    """The shared helpers of the reliability tests."""
    return Harness
