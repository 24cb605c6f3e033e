"""The group commit: many requests, one transaction; one request's failure is its own."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest

from weightstream.batch import Batch
from weightstream.config import Config
from weightstream.errors import ConflictError, StorageError
from weightstream.ingest import RawRow, to_measurement
from weightstream.model import Measurement, Result
from weightstream.processor import Processor
from weightstream.service.commit import (
    LOOP_MIN,
    GroupCommitter,
    RequestFailed,
    ServiceClosing,
    as_result,
)
from weightstream.service.readings import result_json
from weightstream.service.settings import ServiceSettings
from weightstream.service.state import Service
from weightstream.store.memory import MemoryStore
from weightstream.testing import FakeClock, FaultyStore

T0 = datetime(2025, 1, 1, 8, tzinfo=UTC)


def m(user: str, i: int) -> Measurement:
    item = to_measurement(
        RawRow(
            0,
            user,
            (T0 + timedelta(days=i)).isoformat(),
            str(80 + i / 10),
            "kg",
            "scale",
            f"{user}-{i}",
        ),
        config=Config(),
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert isinstance(item, Measurement)
    return item


async def _submit_all(committer: GroupCommitter, requests: list[list[Measurement]]):
    committer.start()
    try:
        return await asyncio.gather(
            *(committer.submit(r) for r in requests), return_exceptions=True
        )
    finally:
        await committer.close()


def test_requests_submitted_together_share_one_commit() -> None:
    """Twenty requests submitted at once are decided and committed as one unit."""
    store = MemoryStore()
    commits: list[int] = []
    real = store.commit

    def counting(unit):
        commits.append(len(unit))
        real(unit)

    store.commit = counting  # type: ignore[method-assign]
    committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.01)
    answers = asyncio.run(_submit_all(committer, [[m(f"u{i}", 0)] for i in range(20)]))
    assert all(a[0].verdict == "accepted" for a in answers)
    assert committer.stats.groups == 1 and commits == [20]


def test_one_request_that_raises_fails_alone() -> None:
    """A reading whose decision raises fails its request (RequestFailed); the others commit."""
    store = MemoryStore()
    processor = Processor(store, Config(), clock=FakeClock())
    real_apply = processor.apply

    def apply(state, reading, batch):
        if reading.user_id == "poison":
            raise ZeroDivisionError("a bug")
        return real_apply(state, reading, batch)

    processor.apply = apply  # type: ignore[method-assign]
    committer = GroupCommitter(processor, linger_s=0.01)
    requests = [[m("a", 0)], [m("poison", 0), m("b", 0)], [m("c", 0)]]
    answers = asyncio.run(_submit_all(committer, requests))
    assert isinstance(answers[1], RequestFailed)
    assert [a[0].verdict for i, a in enumerate(answers) if i != 1] == ["accepted", "accepted"]
    assert set(store.users()) == {"a", "c"}  # nothing of the failed request, not even "b"


def test_storage_failure_fails_the_group_and_stores_nothing() -> None:
    """A store that fails: every request of the group gets the StorageError; nothing stored."""
    inner = MemoryStore()
    store = FaultyStore(inner, StorageError("disk gone"))
    committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.01)
    answers = asyncio.run(_submit_all(committer, [[m("a", 0)], [m("b", 0)]]))
    assert all(isinstance(a, StorageError) for a in answers)
    assert inner.users() == []


def _conflicting(inner: MemoryStore, times: int) -> FaultyStore:
    """``inner`` behind a store whose first ``times`` commits meet another writer."""
    store = FaultyStore(inner, ConflictError("another writer"))
    calls = {"n": 0}

    def first_commits(unit) -> bool:
        calls["n"] += 1
        return calls["n"] <= times

    store.fail_when = first_commits
    return store


def test_conflict_is_redone_from_fresh_state() -> None:
    """A group that met another writer is redone (bounded), and then commits."""
    inner = MemoryStore()
    store = _conflicting(inner, times=2)
    committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.0)
    answers = asyncio.run(_submit_all(committer, [[m("a", 0)]]))
    assert answers[0][0].verdict == "accepted"
    assert committer.stats.retries == 2 and inner.users() == ["a"]


def test_after_close_submissions_are_refused() -> None:
    """Once closing, a new submission is refused (nothing stored) with ServiceClosing."""

    async def run() -> None:
        committer = GroupCommitter(Processor(MemoryStore(), Config(), clock=FakeClock()))
        committer.start()
        await committer.close()
        with pytest.raises(ServiceClosing):
            await committer.submit([m("a", 0)])

    asyncio.run(run())


def test_close_answers_everything_already_submitted() -> None:
    """close() decides, commits and answers the submissions queued before it."""

    async def run() -> None:
        store = MemoryStore()
        committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.05)
        committer.start()
        pending = [asyncio.ensure_future(committer.submit([m(f"u{i}", 0)])) for i in range(10)]
        await asyncio.sleep(0)
        await committer.close()
        answers = await asyncio.gather(*pending)
        assert len(answers) == 10 and len(store.users()) == 10

    asyncio.run(run())


def _readings_of_many_users(seed: int) -> list[list[Measurement]]:
    """Requests mixing users with many readings (the loop's) and with one (the step's), with
    a copy of a reading inside the group, in a shuffled order."""
    rng = random.Random(seed)
    readings = [m(f"many{u}", i) for u in range(4) for i in range(rng.randint(3, 9))]
    readings += [m(f"one{u}", 0) for u in range(5)]
    readings.append(readings[2])  # the same reading twice in one group: a duplicate
    rng.shuffle(readings)
    return [readings[i : i + 4] for i in range(0, len(readings), 4)]


def _decided(requests: list[list[Measurement]], *, loop: bool, monkeypatch) -> tuple:
    import weightstream.service.commit as commit

    calls: list[int] = []
    real = commit.run_group

    def counting(processor, batch, group, engine, *args, **kwargs):
        calls.append(len(group))
        return real(processor, batch, group, engine, *args, **kwargs)

    monkeypatch.setattr(commit, "run_group", counting)
    store = MemoryStore()
    committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.05)
    committer.engine.usable = loop
    first = asyncio.run(_submit_all(committer, requests))
    committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.05)
    committer.engine.usable = loop
    again = asyncio.run(_submit_all(committer, requests))  # every reading resubmitted
    history = {
        u: [(h.measurement, result_json(h.result, None)) for h in store.history(u)]
        for u in store.users()
    }

    # What the API answers (the results file's fields), and that no row leaks into a result.
    def said(answers: list) -> list:
        results = [[as_result(r) for r in answer] for answer in answers]
        assert all(r.row is None for answer in results for r in answer)
        return [[result_json(r, None) for r in answer] for answer in results]

    return said(first), said(again), history, calls


def test_users_with_several_readings_go_through_the_loop_with_the_same_results(
    monkeypatch,
) -> None:
    """A group's users with LOOP_MIN+ readings are decided by run_group; every answer, every
    resubmission's answer and the stored history equal those of the reading-by-reading path."""
    seed = 14
    print("seed", seed)
    requests = _readings_of_many_users(seed)
    looped = _decided(requests, loop=True, monkeypatch=monkeypatch)
    one_by_one = _decided(requests, loop=False, monkeypatch=monkeypatch)
    assert looped[3] and sum(looped[3]) >= 4 * LOOP_MIN  # the loop decided the "many" users
    assert one_by_one[3] == []
    assert looped[:3] == one_by_one[:3]
    verdicts = [r["verdict"] for answer in looped[0] for r in answer]
    assert "duplicate" in verdicts and "accepted" in verdicts


def test_a_group_asks_the_store_for_its_stored_keys_once() -> None:
    """The batch looks up the stored keys of every reading of a group (prefetch); the loop's
    users are not asked about again (it was the same query twice: 7% of a batch's CPU at 20
    readings a user). Users with stored readings: a copy of a stored one is still found."""
    store = MemoryStore()
    asked: list[int] = []
    real = store.existing_keys

    def existing_keys(keys):
        keys = list(keys)
        asked.append(len(keys))
        return real(keys)

    store.existing_keys = existing_keys  # type: ignore[method-assign]
    first = [[m("a", i) for i in range(8)], [m("b", i) for i in range(8)], [m("c", 0)]]
    # the same users again: new readings, and a stored one under a new id (a copy by content)
    copy = m("a", 3)
    copy = Measurement(
        "a-copy", copy.user_id, copy.timestamp, copy.value, copy.unit, copy.weight_kg, copy.source
    )
    later = [[m("a", i) for i in range(8, 16)] + [copy], [m("b", i) for i in range(8, 16)]]
    said = []
    for requests in (first, later):
        committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.2)
        committer.engine.usable = True
        asked.clear()
        answers = asyncio.run(_submit_all(committer, requests))
        assert len(asked) == 1, asked  # one group, one lookup
        said.append([[as_result(r) for r in answer] for answer in answers])
    assert {r.verdict for answer in said[0] for r in answer} == {"accepted"}
    (copied,) = [r for answer in said[1] for r in answer if r.reading_id == "a-copy"]
    assert copied.verdict == "duplicate"
    assert sum(r.verdict == "accepted" for answer in said[1] for r in answer) == 16


def test_a_failure_inside_the_loop_is_redone_reading_by_reading(monkeypatch) -> None:
    """The loop raising on one request's reading: the group is redone one by one, and only
    that request fails; the others are decided and stored."""
    store = MemoryStore()
    processor = Processor(store, Config(), clock=FakeClock())
    real_apply = processor.apply

    def apply(state, reading, batch):
        if reading.user_id == "poison":
            raise ZeroDivisionError("a bug")
        return real_apply(state, reading, batch)

    processor.apply = apply  # type: ignore[method-assign]
    committer = GroupCommitter(processor, linger_s=0.05)
    committer.engine.usable = True
    requests = [
        [m("a", i) for i in range(4)],
        [m("poison", i) for i in range(4)],
        [m("c", i) for i in range(4)],
    ]
    answers = asyncio.run(_submit_all(committer, requests))
    assert isinstance(answers[1], RequestFailed)
    assert [len(answers[0]), len(answers[2])] == [4, 4]
    assert set(store.users()) == {"a", "c"}


def test_warm_up_runs_the_loop_and_stores_nothing(monkeypatch) -> None:
    """Before the first request, the loop is compiled through a throwaway memory store: the
    loop decides readings, and neither the service's store nor its processor sees them."""
    import weightstream.service.commit as commit
    from weightstream.engine import kernel as K

    looped: list[int] = []
    real = commit.run_group

    def counting(processor, batch, group, engine, *args):
        looped.append(len(group))
        return real(processor, batch, group, engine, *args)

    monkeypatch.setattr(commit, "run_group", counting)
    store = MemoryStore()
    processor = Processor(store, Config(), clock=FakeClock())
    committer = GroupCommitter(processor)
    committer.warm_up()
    assert looped == [4, 4]
    assert store.users() == [] and processor.load_state("warm-up") is None
    assert K.run.signatures  # compiled (or loaded from numba's cache)


def _commit_threads(store) -> list[str]:
    """The names of the threads that commit to ``store``, in order (recorded as they do)."""
    threads: list[str] = []
    real = store.commit

    def recording(unit):
        threads.append(threading.current_thread().name)
        real(unit)

    store.commit = recording
    return threads


def test_a_small_group_is_decided_on_the_loops_own_thread() -> None:
    """A group of at most inline_max readings, with nothing on the store thread, is decided
    and committed on the event loop's thread (no hand-off); a bigger one on the store thread."""
    store = MemoryStore()
    threads = _commit_threads(store)
    committer = GroupCommitter(
        Processor(store, Config(), clock=FakeClock()), linger_s=0.0, inline_max=2
    )

    async def run() -> list:
        committer.start()
        try:
            small = await committer.submit([m("a", 0), m("b", 0)])
            big = await committer.submit([m("a", 1), m("b", 1), m("c", 1)])
            return [small, big]
        finally:
            await committer.close()

    answers = asyncio.run(run())
    assert [len(a) for a in answers] == [2, 3]
    assert all(as_result(r).verdict == "accepted" for a in answers for r in a)
    assert threads == [threading.main_thread().name, "ws-store_0"]
    assert sorted(store.users()) == ["a", "b", "c"]


def test_a_small_group_waits_while_the_store_thread_has_work() -> None:
    """While a read runs on the store thread, a small group is not decided beside it: it
    goes to the store thread, after the read (the store is never used by two threads)."""
    store = MemoryStore()
    threads = _commit_threads(store)
    committer = GroupCommitter(
        Processor(store, Config(), clock=FakeClock()), linger_s=0.0, inline_max=64
    )
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_read() -> str:
        started.set()
        release.wait(timeout=30)
        order.append("read")
        return "done"

    async def run() -> None:
        committer.start()
        try:
            reading = asyncio.ensure_future(committer.read(slow_read))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
            submitted = asyncio.ensure_future(committer.submit([m("a", 0)]))
            for _ in range(20):  # the writer takes the submission and hands it over
                await asyncio.sleep(0)
            assert committer.store_jobs == 2 and not threads
            release.set()
            assert await reading == "done"
            answer = await submitted
            order.append("group")
            assert as_result(answer[0]).verdict == "accepted"
        finally:
            release.set()
            await committer.close()

    asyncio.run(run())
    assert order == ["read", "group"] and threads == ["ws-store_0"]
    assert committer.store_jobs == 0


def test_a_conflict_on_the_loops_thread_is_retried_on_the_store_thread() -> None:
    """A small group that met another writer does not sleep on the loop's thread before its
    retry: the group is redone on the store thread, and commits there."""
    inner = MemoryStore()
    store = _conflicting(inner, times=1)
    threads = _commit_threads(store)
    clock = FakeClock()
    slept: list[str] = []
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        slept.append(threading.current_thread().name)
        real_sleep(seconds)

    clock.sleep = sleep  # type: ignore[method-assign]
    committer = GroupCommitter(Processor(store, Config(), clock=clock), inline_max=64)
    answers = asyncio.run(_submit_all(committer, [[m("a", 0)]]))
    assert as_result(answers[0][0]).verdict == "accepted"
    assert threads == [threading.main_thread().name, "ws-store_0"]
    assert threading.main_thread().name not in slept and inner.users() == ["a"]


def test_a_request_whose_waiter_is_cancelled_is_stored_all_the_same() -> None:
    """A request whose task is cancelled while it waits (its client went away) still has its
    readings decided and committed with the group, and the other requests are answered."""
    store = MemoryStore()
    committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.01)

    async def run() -> list[object]:
        committer.start()
        try:
            gone = asyncio.ensure_future(committer.submit([m("gone", 0)]))
            kept = asyncio.ensure_future(committer.submit([m("kept", 0)]))
            await asyncio.sleep(0)  # both queued; the writer lingers for more
            gone.cancel()
            return list(await asyncio.gather(gone, kept, return_exceptions=True))
        finally:
            await committer.close()

    gone, kept = asyncio.run(run())
    assert isinstance(gone, asyncio.CancelledError)
    assert isinstance(kept, list) and kept[0].verdict == "accepted"
    assert set(store.users()) == {"gone", "kept"}
    assert committer.stats.groups == 1


class _CountingConflicts(MemoryStore):
    """A memory store that counts the commits it refused as conflicts."""

    conflicts = 0

    def commit(self, unit) -> None:  # type: ignore[no-untyped-def]
        try:
            super().commit(unit)
        except ConflictError:
            self.conflicts += 1
            raise


@pytest.mark.parametrize("shared", [True, False])
def test_a_shared_committer_decides_on_what_another_writer_committed(shared: bool) -> None:
    """Two processes on one store (``serve --workers``): after the other one commits a user's
    reading, a shared committer decides the user's next reading on that commit at once, where
    an unshared one first meets a conflict and redoes the group; the estimate is the store's."""
    store = _CountingConflicts()
    ours = Processor(store, Config(), clock=FakeClock())
    committer = GroupCommitter(ours, shared=shared)
    service = Service(ours, committer, None, ServiceSettings(shared_store=shared), ours.observer)  # type: ignore[arg-type]
    theirs = Processor(store, Config(), clock=FakeClock())

    def theirs_commit(i: int) -> None:
        theirs.forget()  # the other process reads the store afresh (it is not under test)
        batch = Batch(theirs, input_id=None)
        batch.process(m("u", i))
        batch.commit()

    async def scenario() -> list[Result]:
        committer.start()
        try:
            first = await committer.submit([m("u", 0)])
            theirs_commit(1)
            third = await committer.submit([m("u", 2)])
            theirs_commit(3)
            estimate = await committer.read(lambda: service.estimate("u"))
            assert estimate is not None
            assert estimate.version == (4 if shared else 3)  # unshared: what it cached
            return [*first, *third]
        finally:
            await committer.close()

    answers = [as_result(a) for a in asyncio.run(scenario())]
    alone = Processor(MemoryStore(), Config(), clock=FakeClock())
    expected = [alone.process_one(m("u", i)) for i in range(3)]
    assert [(a.verdict, a.filtered_weight) for a in answers] == [
        (e.verdict, e.filtered_weight) for e in (expected[0], expected[2])
    ]
    assert store.conflicts == (0 if shared else 1)
    assert store.load_state("u").version == 4


def test_the_loop_takes_the_content_keys_the_readings_carry(monkeypatch) -> None:
    """A request's readings carry their content keys (made when the request was read); the
    compiled loop's group uses those and does not make them again (~4% of the store thread's
    CPU at 20 readings a user). Their stored keys are the readings' own."""
    import weightstream.engine.group as group

    made: list[int] = []
    real = group.content_keys

    def counting(*columns):
        made.append(len(columns[0]))
        return real(*columns)

    monkeypatch.setattr(group, "content_keys", counting)
    store = MemoryStore()
    committer = GroupCommitter(Processor(store, Config(), clock=FakeClock()), linger_s=0.2)
    committer.engine.usable = True
    requests = [[m(user, i) for i in range(8)] for user in ("a", "b")]
    answers = asyncio.run(_submit_all(committer, requests))
    assert {as_result(r).verdict for answer in answers for r in answer} == {"accepted"}
    assert committer.stats.groups == 1
    assert made == []
    stored = {row.measurement.content_key for u in ("a", "b") for row in store.history(u)}
    assert stored == {r.content_key for request in requests for r in request}
