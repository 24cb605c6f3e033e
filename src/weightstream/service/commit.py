"""Group commit: one writer decides the readings of many requests and commits them at once.

Every request that brings readings hands them to :meth:`GroupCommitter.submit` and waits. One
asyncio task, the writer, takes whatever requests are pending (waiting ``group_linger_s`` for
more once it has some), and runs them on the store thread as ONE
:class:`~weightstream.batch.Batch`, then one ``Batch.commit`` (one store transaction, one
fsync). Only then is each request's future resolved: a request is answered only after its
readings are durable (invariant I9), and under load one fsync serves hundreds of requests.

A group's readings are decided by the paths ``weightstream process`` uses: a user with at
least :data:`LOOP_MIN` readings in the group goes through the file engine
(:func:`weightstream.engine.group.run_group`: the compiled loop, and ``Batch.process`` for
what it leaves), any other reading through ``Batch.process`` (the path of
``Processor.process_one``). Both make the same decisions (``tests/engine`` holds them
together); the loop costs more than the step for one reading of a user (it sets up arrays and
stages a state per user) and much less for several. If the engine raises, the group is redone
reading by reading, so an unexpected failure is still pinned on the one request that caused it.

One thread at a time touches the store or the processor (its cache of committed states is not
shared): the store thread runs the big groups and the reads of the GET routes
(:meth:`GroupCommitter.read`), in the order they were asked for; a group of at most
``inline_max`` readings is decided and committed on the event loop's own thread, and only when
nothing is queued for or running on the store thread (:attr:`GroupCommitter.store_jobs`, which
counts a job until it has really ended there). A small group then costs no hand-off between
the threads: the executor's queue, a thread wake-up and the loop's wake-up, and above all the
GIL passed back and forth between the loop and the store thread while both want it, which cost
single-reading requests more than deciding their readings did. The loop does not serve other
requests meanwhile (a group of a few dozen readings takes a few milliseconds; its fsync is the
same one the store thread would wait for), and readings that arrive meanwhile make the next
group. Either way two requests for the same user never interleave: their readings are decided
one after the other, in one group or in two groups that commit in order.

Within a group the readings are decided in each user's processing order (user, then
:func:`~weightstream.model.order_key`, then arrival), as ``weightstream process`` orders a file,
so readings that arrive together get the results a file of them gets.

Idempotency: a reading that is already stored *as it is* (the same user, id and content) is not
decided again: its answer is its stored result, and nothing is written. Any other reading with
a stored id or content is a ``duplicate``, decided (and recorded) by the batch as for a file.

Failures: a group that met another writer (``ConflictError``, ``StoreBusyError``) is redone
from fresh state (bounded); any other storage error fails every request of the group (the
service answers 503; nothing of the group was stored, so a retry is safe). An unexpected
exception while deciding one request's readings fails that request alone (500) and the group
is redone without it (invariant I12).

Shutdown (:meth:`GroupCommitter.close`): new submissions are refused with
:class:`ServiceClosing`; everything already submitted is decided, committed and answered
first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from weightstream.batch import Batch
from weightstream.engine.group import EngineConfig, GroupReadings, run_group
from weightstream.errors import ConflictError, StorageError, StoreBusyError
from weightstream.model import Measurement, Result, content_key, order_key, to_micros
from weightstream.processor import Processor
from weightstream.service.lookups import stored_results
from weightstream.store.codec import RESULT_COLUMNS, row_to_result

__all__ = [
    "GroupCommitter",
    "ServiceClosing",
    "RequestFailed",
    "GroupStats",
    "LOOP_MIN",
    "Answer",
    "ResultRow",
    "as_result",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: A result as the compiled loop staged it: a row in ``codec.RESULT_COLUMNS`` order (its
#: ``row`` cleared). A group answers it as it is: building a :class:`Result` from it costs
#: ~15 us, a quarter of what the loop spends on a reading; :func:`as_result` makes one when
#: one is needed (FHIR).
ResultRow = tuple[Any, ...]
#: One reading's answer from :meth:`GroupCommitter.submit`.
Answer = Result | ResultRow


def as_result(answer: Answer) -> Result:
    """``answer`` as a :class:`Result`."""
    return answer if isinstance(answer, Result) else row_to_result(answer)


#: A user's readings in one group that go through the file engine's compiled loop rather than
#: one by one. Measured on the store thread (SQLite, warm users, groups of 1,000 readings,
#: deciding and committing): one reading per user ~230 us through the loop against ~170 us
#: through ``Batch.process``; two ~140 against ~165; three ~110 against ~140.
LOOP_MIN = 2


class ServiceClosing(Exception):
    """The service is shutting down: the request was not taken (nothing stored)."""


class RequestFailed(Exception):
    """Deciding this request's readings raised an unexpected error; nothing of it stored."""


@dataclass
class _Submission:
    readings: Sequence[Measurement]
    future: asyncio.Future[list[Answer]]


@dataclass
class GroupStats:
    """Counters of the writer, for metrics and tests."""

    groups: int = 0
    readings: int = 0
    retries: int = 0
    sizes: list[int] = field(default_factory=list)

    def note(self, size: int) -> None:
        self.groups += 1
        self.readings += size
        if len(self.sizes) < 10_000:
            self.sizes.append(size)


_STOP = object()


class GroupCommitter:
    """The writer task and the store thread over one :class:`Processor`.

    ``on_group(readings, seconds)`` is called on the store thread after each committed group
    (metrics). ``shared``: other processes commit to the same store (``serve --workers``,
    several machines on PostgreSQL); a group then asks the store for the versions of its users'
    states (one query) and reloads those another process moved, instead of trusting the
    processor's cache, and one that still meets another's commit is redone (``ConflictError``).
    """

    def __init__(
        self,
        processor: Processor,
        *,
        linger_s: float = 0.001,
        max_readings: int = 20_000,
        inline_max: int = 0,
        retries: int = 8,
        on_group: Callable[[int, float], None] | None = None,
        shared: bool = False,
    ) -> None:
        self.processor = processor
        #: Other processes commit to the store too: each group checks its users' versions.
        self.shared = shared
        self.linger_s = linger_s
        self.max_readings = max_readings
        self.inline_max = inline_max
        #: Jobs submitted to the store thread that have not ended there yet (loop thread only).
        self.store_jobs = 0
        self.retries = retries
        self.on_group = on_group
        self.stats = GroupStats()
        self.engine = EngineConfig(processor)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ws-store")
        self._queue: asyncio.Queue[_Submission | object] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Compile the loop (or load it from numba's cache) before a request needs it.

        A throwaway user's readings go through ``run_group`` on a memory store, twice (a new
        state, then a stored one), with this processor's configuration and no observer:
        nothing reaches the service's store or metrics. Without it the first group with a
        user's several readings waited seconds for the compiler. Runs on the store thread
        (:meth:`prepare`).
        """
        if not self.engine.usable:
            return
        from weightstream.store.memory import MemoryStore

        p = Processor(MemoryStore(), self.processor.config, clock=self.processor.clock)
        engine = EngineConfig(p)
        start = self.processor.clock.now() - timedelta(days=30)
        for first in (0, 4):
            batch = Batch(p, input_id=None)
            readings = [_warm_reading(start + timedelta(days=first + k)) for k in range(4)]
            picked = list(range(len(readings)))
            run_group(p, batch, _group(readings, picked), engine)
            _looped_results(batch, picked)
            batch.commit()

    async def prepare(self) -> None:
        """:meth:`warm_up` on the store thread (the app's startup awaits it)."""
        await self._on_store_thread(self.warm_up)

    def start(self) -> None:
        """Start the writer on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ws-writer")

    @property
    def closing(self) -> bool:
        return self._closing

    async def close(self) -> None:
        """Refuse new submissions; decide, commit and answer every pending one; stop."""
        if self._closing:
            return
        self._closing = True
        if self._queue is not None and self._task is not None:
            self._queue.put_nowait(_STOP)
            await self._task
        self._executor.shutdown(wait=True)

    # -- requests ---------------------------------------------------------------------------

    async def submit(self, readings: Sequence[Measurement]) -> list[Answer]:
        """Decide ``readings`` in the next group; return their results once durable (each a
        :class:`Result`, or the row the compiled loop staged: see :data:`Answer`)."""
        if self._closing or self._queue is None:
            raise ServiceClosing("the service is shutting down")
        if not readings:
            return []
        future: asyncio.Future[list[Answer]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Submission(readings, future))
        # A client that goes away does not cancel its readings: cancelling this await cancels
        # the future only, the submission stays queued, and its readings are decided and
        # stored all the same (the writer skips a future that is done; a retry then gets the
        # stored answers). No asyncio.shield: it cost a request ~8 us (a second future, its
        # callbacks and one more turn of the loop).
        return await future

    async def read(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the store thread, between groups."""
        if self._executor is None:
            raise ServiceClosing("the service is shutting down")
        try:
            return await self._on_store_thread(fn)
        except RuntimeError as exc:  # executor shut down
            raise ServiceClosing("the service is shutting down") from exc

    def _on_store_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on the store thread, counted in :attr:`store_jobs` until it has ended
        there (a request that stops waiting for it does not stop it)."""
        loop = asyncio.get_running_loop()
        job = self._executor.submit(fn, *args)
        self.store_jobs += 1

        def ended(_: object) -> None:
            self.store_jobs -= 1

        # Runs on the store thread once fn has returned (or at once if it already has): the
        # count drops on the loop's thread, after the job's last touch of the store.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(ended, None))
        return asyncio.wrap_future(job, loop=loop)

    # -- the writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        stopping = False
        while not stopping:
            first = await queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Submission)
            group = [first]
            size = len(first.readings)
            lingered = self.linger_s <= 0
            while size < self.max_readings:
                if queue.empty():
                    if lingered:
                        break
                    lingered = True
                    await asyncio.sleep(self.linger_s)
                    continue
                item = queue.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Submission)
                if size + len(item.readings) > self.max_readings:
                    # Goes first into the next group.
                    await self._commit(group)
                    group, size = [], 0
                group.append(item)
                size += len(item.readings)
            if group:
                await self._commit(group)

    async def _commit(self, group: list[_Submission]) -> None:
        requests = [s.readings for s in group]
        try:
            if self.store_jobs == 0 and sum(map(len, requests)) <= self.inline_max:
                # Nothing runs on the store thread and nothing can start there until this
                # returns (only this thread submits): the loop's thread has the store alone.
                try:
                    outcomes = self._decide_group(requests, wait=False)
                except _WouldWait:  # met another writer: retried where waiting blocks nobody
                    outcomes = await self._on_store_thread(self._decide_group, requests)
            else:
                outcomes = await self._on_store_thread(self._decide_group, requests)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets an answer
            _log.error("the store thread failed: %s", type(exc).__name__)
            outcomes = [RequestFailed("the group could not be committed")] * len(group)
        for submission, outcome in zip(group, outcomes, strict=True):
            if submission.future.done():
                continue
            if isinstance(outcome, BaseException):
                submission.future.set_exception(outcome)
            else:
                submission.future.set_result(outcome)

    # -- on the store thread ----------------------------------------------------------------

    def _decide_group(
        self, requests: list[Sequence[Measurement]], *, wait: bool = True
    ) -> list[list[Answer] | BaseException]:
        """Decide and commit the readings of several requests as one unit of work.

        ``wait`` False (on the loop's thread): a group that met another writer raises
        :class:`_WouldWait` (nothing stored) instead of sleeping before its retry.
        """
        started = time.perf_counter()
        failed: dict[int, BaseException] = {}
        attempt = 0
        loop = self.engine.usable
        while True:
            live = [i for i in range(len(requests)) if i not in failed]
            try:
                answers = self._decide_once(requests, live, loop=loop)
            except _LoopFailed as exc:
                self.processor.forget()
                loop = False
                _log.warning(
                    "the compiled loop raised %s; the group is redone reading by reading",
                    type(exc.__cause__).__name__,
                )
                continue
            except _ReadingFailed as exc:
                self.processor.forget()
                failed[exc.request] = RequestFailed("the readings could not be decided")
                _log.error(
                    "a request's readings raised %s while deciding; request refused",
                    type(exc.__cause__).__name__,
                )
                continue
            except (ConflictError, StoreBusyError) as exc:
                self.processor.forget()
                if not wait:
                    raise _WouldWait() from exc
                if attempt >= self.retries:
                    return [failed.get(i, exc) for i in range(len(requests))]
                self.stats.retries += 1
                self.processor.clock.sleep(min(0.01 * 2**attempt, 0.5))
                attempt += 1
                continue
            except StorageError as exc:
                self.processor.forget()
                _log.error("group commit failed: %s", type(exc).__name__)
                return [failed.get(i, exc) for i in range(len(requests))]
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any failure
                self.processor.forget()
                _log.error("group failed outside any one reading: %s", type(exc).__name__)
                error = RequestFailed("the group could not be committed")
                return [failed.get(i, error) for i in range(len(requests))]
            size = sum(len(requests[i]) for i in live)
            self.stats.note(size)
            if self.on_group is not None:
                self.on_group(size, time.perf_counter() - started)
            out: list[list[Answer] | BaseException] = []
            for i in range(len(requests)):
                out.append(failed[i] if i in failed else answers[i])
            return out

    def _decide_once(
        self, requests: list[Sequence[Measurement]], live: list[int], *, loop: bool
    ) -> dict[int, list[Answer]]:
        """Decide the readings of requests ``live`` into one batch, commit it, and return each
        request's results in its own order."""
        p = self.processor
        batch = Batch(p, input_id=None)
        slots = [(i, k) for i in live for k in range(len(requests[i]))]
        readings = [requests[i][k] for i, k in slots]
        if self.shared:
            # Another process may have committed these users since this one cached them.
            p.refresh({m.user_id for m in readings})
        batch.prefetch(readings)
        order = sorted(
            range(len(slots)), key=lambda j: (readings[j].user_id, order_key(readings[j]), j)
        )
        decided: dict[int, Answer] = {}
        order = self._answer_stored(readings, order, batch.known_keys, decided)
        per_user = Counter(readings[j].user_id for j in order) if loop else Counter()
        looped = [j for j in order if per_user[readings[j].user_id] >= LOOP_MIN]
        for j in order:
            if loop and per_user[readings[j].user_id] >= LOOP_MIN:
                continue
            try:
                decided[j] = batch.process(readings[j])
            except StorageError:
                raise
            except Exception as exc:
                raise _ReadingFailed(slots[j][0]) from exc
        if looped:
            # After the readings above, with the stored keys the batch looked up for every
            # reading of the group (prefetch): run_group does not ask the store again.
            try:
                run_group(p, batch, _group(readings, looped), self.engine, keys_known=True)
            except StorageError:
                raise
            except Exception as exc:
                raise _LoopFailed() from exc
            decided.update(_looped_results(batch, looped))
        batch.commit()
        answers: dict[int, list[Answer]] = {i: [] for i in live}
        for j, (i, _) in enumerate(slots):
            answers[i].append(decided[j])
        return answers

    def _answer_stored(
        self,
        readings: list[Measurement],
        order: list[int],
        known: set[tuple[str, str]],
        decided: dict[int, Answer],
    ) -> list[int]:
        """Answer each reading that is stored as it is (the same user, id and content) with its
        stored result, once per group (a second copy is a duplicate, decided as such); the
        readings left to decide, in order."""
        exact = [
            j
            for j in order
            if (readings[j].user_id, readings[j].reading_id) in known
            and (readings[j].user_id, readings[j].content_key) in known
        ]
        if not exact:
            return order
        stored = stored_results(self.processor.store, [readings[j] for j in exact])
        answered: set[tuple[str, str]] = set()
        for j in exact:
            m = readings[j]
            ident = (m.user_id, m.reading_id)
            found = stored.get((m.user_id, m.reading_id, m.content_key))
            if found is not None and ident not in answered:
                answered.add(ident)
                decided[j] = found
        return [j for j in order if j not in decided]


def _warm_reading(when: datetime) -> Measurement:
    user, value, unit, source = "warm-up", 70.0, "kg", "warm-up"
    key = content_key(user, when, value, unit, source)
    return Measurement(key, user, when, value, unit, value, source, key)


def _group(readings: list[Measurement], picked: list[int]) -> GroupReadings:
    """Readings ``picked`` (in processing order) as the engine's columns; each reading's line
    is its place ``j`` in the group, to find its result again. Their content keys are the
    ones the readings carry (made when the request was read), not made again."""
    ms = [readings[j] for j in picked]
    return GroupReadings(
        line=list(picked),
        ident=[m.reading_id for m in ms],
        user=[m.user_id for m in ms],
        ts=[to_micros(m.timestamp) for m in ms],
        value=[m.value for m in ms],
        unit=[m.unit for m in ms],
        weight_kg=[m.weight_kg for m in ms],
        source=[m.source for m in ms],
        contents=[m.content_key for m in ms],
    )


def _looped_results(batch: Batch, picked: list[int]) -> dict[int, Answer]:
    """The results of readings ``picked`` that ``run_group`` staged, by place in the group.

    The loop stages encoded rows (``batch.unit.result_rows``), which are answered as they are
    (:data:`Answer`); the readings it left to the step staged :class:`Result` values
    (``batch.unit.results``). Both carry the line they were given. The line is a place in the
    group, not in any input: it is cleared in what is stored (a service result has no row, as a
    ``process_one`` result has none).
    """
    wanted = set(picked)
    out: dict[int, Answer] = {}
    rows = batch.unit.result_rows
    row_at = RESULT_ROW
    for n, row in enumerate(rows):
        line = row[row_at]
        if line in wanted:
            rows[n] = out[line] = (*row[:row_at], None, *row[row_at + 1 :])
    results = batch.unit.results
    for n, (input_id, r) in enumerate(results):
        if r.row in wanted:
            plain = replace(r, row=None)
            out[r.row] = plain
            results[n] = (input_id, plain)
    staged = batch.unit.readings  # a store that keeps the objects keeps their row too
    for n, (m, r) in enumerate(staged):
        if r.row in wanted:
            staged[n] = (m, replace(r, row=None))
    missing = wanted - out.keys()
    if missing:
        raise _LoopFailed(f"{len(missing)} readings of the group got no result")
    return out


#: Where a staged result row holds its line.
RESULT_ROW = RESULT_COLUMNS.index("row")


class _LoopFailed(Exception):
    """The compiled loop raised (or lost a reading): the group is redone reading by reading."""


class _WouldWait(Exception):
    """A group on the loop's thread met another writer: its retry waits, so not there."""


class _ReadingFailed(Exception):
    def __init__(self, request: int) -> None:
        super().__init__(request)
        self.request = request
