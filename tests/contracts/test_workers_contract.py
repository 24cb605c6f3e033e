"""Several workers on one store (RELIABILITY.md rows H1, H3, H4), on every back-end that has them.

H1 runs on memory, SQLite and PostgreSQL: two workers commit conflicting units for one user at
the same moment; exactly one wins, the other gets ConflictError and redoes its unit from the
stored state, and nothing is lost or applied twice. H3 runs where a worker is a process
(SQLite, PostgreSQL): a child SIGKILLed between BEGIN and COMMIT leaves nothing of its unit,
and the same unit committed again afterwards is complete. H4 is PostgreSQL's own: the server
stopped with ``pg_ctl stop -m immediate`` (a crash: no shutdown checkpoint) while a writer
commits; after the restart every acknowledged unit is there, whole, and no unit is half there.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pytest

from weightstream.errors import ConflictError, StorageError
from weightstream.faults import FaultPoints
from weightstream.model import UserState
from weightstream.store.base import StateStore, UnitOfWork

from .conftest import Backend
from .test_store_contract import assert_nothing_of, full_unit, reading, state, unit_keys


class _Gate(FaultPoints):
    """Crash points that make every writer wait at ``store.after_begin`` for the other one.

    On a store whose BEGIN takes the write lock (SQLite's ``BEGIN IMMEDIATE``) the second
    writer cannot get there until the first commits, so the wait is bounded and a broken
    barrier is ignored: the writers then meet at the lock instead.
    """

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def crash_point(self, name: str) -> None:
        if name == "store.after_begin":
            with suppress(threading.BrokenBarrierError):
                self.barrier.wait(timeout=1.0)


def _next_unit(store: StateStore, tag: str) -> UnitOfWork:
    """A worker's unit for ``u1``: one new reading of its own, on the stored state."""
    stored = store.load_state("u1")
    assert stored is not None
    unit = UnitOfWork()
    unit.put_state(state("u1", stored.version + 1, 80.0 + stored.version / 10), stored.version)
    unit.readings.append(
        reading("u1", 50 + stored.version, 81.0 + "ab".index(tag), rid=f"worker-{tag}")
    )
    return unit


def test_h1_two_workers_on_one_user(backend: Backend):
    """H1: two workers commit for one user at once: one wins, the other conflicts and redoes."""
    first = backend.open()
    first.commit(full_unit("u1", version=1, expected=0))
    barrier = threading.Barrier(2)
    stores: list[StateStore] = []
    for _ in range(2):
        if backend.open_faulty is not None:
            stores.append(backend.open_faulty(_Gate(barrier)))
        else:
            stores.append(backend.reopen())
    units = [_next_unit(stores[k], tag) for k, tag in enumerate("ab")]
    outcomes: list[Any] = [None, None]
    start = threading.Barrier(2)

    def work(k: int) -> None:
        start.wait()
        try:
            stores[k].commit(units[k])
            outcomes[k] = "committed"
        except ConflictError as exc:
            outcomes[k] = exc

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(map(type, outcomes), key=str) == sorted([str, ConflictError], key=str), outcomes
    loser = 0 if isinstance(outcomes[0], ConflictError) else 1
    # The loser stored nothing; redone on the stored state, it commits.
    assert_nothing_of(units[loser], backend.reopen())
    redo = _next_unit(stores[loser], "ab"[loser])
    stores[loser].commit(redo)
    other = backend.reopen()
    final = other.load_state("u1")
    assert isinstance(final, UserState) and final.version == 3
    ids = [h.measurement.reading_id for h in other.history("u1")]
    assert ids.count("worker-a") == 1 and ids.count("worker-b") == 1
    assert len(ids) == 5


def _killed_child(open_faulty: Callable[[Any], StateStore], unit: UnitOfWork) -> None:
    """In the child: commit ``unit`` with a SIGKILL armed between BEGIN and COMMIT."""
    store = open_faulty(FaultPoints(crash_at=("store.before_commit", 1)))
    store.commit(unit)


@pytest.fixture(params=["sqlite", "postgres"])
def process_backend(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """The back-ends whose workers are processes (memory has no second process)."""
    name = "sqlite_backend" if request.param == "sqlite" else "postgres_backend"
    return request.getfixturevalue(name)


def test_h3_worker_killed_mid_transaction(process_backend: Backend):
    """H3: a worker SIGKILLed between BEGIN and COMMIT leaves nothing; the rerun completes it."""
    backend = process_backend
    store = backend.open()
    store.commit(full_unit("u1", version=1, expected=0))
    unit = full_unit("u1", version=2, expected=1, first_row=4, position=6, d=10)
    assert backend.open_faulty is not None
    child = multiprocessing.get_context("fork").Process(
        target=_killed_child, args=(backend.open_faulty, unit)
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -9, "the child must die by SIGKILL inside the transaction"
    other = backend.reopen()
    assert_nothing_of(unit, other)
    assert other.load_state("u1").version == 1  # type: ignore[union-attr]
    assert other.position("in.csv") == 3
    # The next run commits the same unit whole (the killed one holds no lock any more).
    store.commit(unit)
    after = backend.reopen()
    assert after.load_state("u1") == unit.states["u1"]
    assert after.existing_keys(unit_keys(unit)) == set(unit_keys(unit))
    assert after.position("in.csv") == 6
    assert [r.row for r in after.results_for_input("in.csv")] == [1, 2, 3, 4, 5, 6]


def test_h4_server_crash_keeps_acknowledged_units():
    """H4: ``pg_ctl stop -m immediate`` during writes; after restart every acked unit is whole."""
    from weightstream.store.pg_local import TempPostgres
    from weightstream.store.postgres import PostgresStore

    server = TempPostgres(prefix="ws-pg-h4-")
    try:
        server.start()
        dsn = server.dsn()
        writer = PostgresStore(dsn, pool_size=1, lock_timeout_ms=1000, connect_timeout_s=2)
        acked: list[int] = []
        attempted: list[UnitOfWork] = []
        enough = threading.Event()
        stopped = threading.Event()

        def write() -> None:
            version = 0
            while not stopped.is_set():
                user = f"u{version % 5}"
                n = len(attempted)
                unit = full_unit(user, version=version // 5 + 1, expected=version // 5,
                                 input_id="h4.csv", position=3 * (n + 1), first_row=3 * n + 1,
                                 d=float(n))  # fmt: skip
                attempted.append(unit)
                try:
                    writer.commit(unit)
                except StorageError:
                    return
                acked.append(n)
                version += 1
                if len(acked) >= 25:
                    enough.set()

        thread = threading.Thread(target=write)
        thread.start()
        assert enough.wait(timeout=120), "the writer did not get 25 units acknowledged"
        server.stop("immediate")
        stopped.set()
        thread.join(timeout=60)
        writer.close()
        server.start()
        with PostgresStore(dsn, pool_size=1) as after:
            for n in acked:
                unit = attempted[n]
                assert after.existing_keys(unit_keys(unit)) == set(unit_keys(unit)), n
            # Not acknowledged (in flight at the crash): whole or absent, never half there.
            for unit in attempted[len(acked) :]:
                found = after.existing_keys(unit_keys(unit))
                assert found in (set(), set(unit_keys(unit)))
            assert after.position("h4.csv") >= 3 * len(acked)
            assert len(list(after.results_for_input("h4.csv"))) == after.position("h4.csv")
    finally:
        server.cleanup()
