"""The service's own settings, each default with the reason it was chosen.

These are the HTTP edge's limits and the group commit's timing; every decision about a reading
stays in :class:`weightstream.config.Config`, which the service takes as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServiceSettings"]


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Limits and timing of ``weightstream serve``.

    ``max_batch``: readings in one ``POST /v1/measurements`` or FHIR Bundle. 10,000 readings
    decide in well under a second and answer in one response of a few megabytes; a bigger
    import is what ``weightstream process`` is for.

    ``max_body_bytes``: the body cap (413 above it). A reading is 100-250 bytes of JSON (a FHIR
    Observation about 600), so 10,000 readings fit in 8 MiB with room; the cap keeps one
    request from holding hundreds of megabytes in memory.

    ``group_linger_s``: how long the writer waits for more readings once it has some, before it
    decides and commits them together. 1 ms costs a lone request 1 ms and lets requests that
    arrive together share one fsync; under load the writer never waits (readings pile up while
    the previous group commits).

    ``group_max_readings``: the most readings decided and committed in one unit of work (whole
    requests are never split; one request of ``max_batch`` always fits). Bounds the time one
    commit holds the write lock and the memory of a group.

    ``group_inline_max``: a group of at most this many readings is decided and committed on
    the event loop's thread when the store thread is idle, instead of being handed to it
    (:mod:`weightstream.service.commit`). The hand-off (the GIL passed between two threads that
    both want it, two wake-ups) cost a single-reading request more CPU than its decision; a
    group this size decides in a few milliseconds (~150 us a reading), during which the loop
    reads no new request (measured near idle: p99 23.6 ms at 1,500 single requests/s, 186 ms at
    2,000/s, where the server's one core is saturated); bigger groups (a batch request) go to
    the store thread, so the loop keeps answering while they run. 0: every group on the store
    thread.

    ``commit_retries``: a group that met another writer (``ConflictError``, or a lock held past
    the busy timeout) is redone from fresh state this many times before its requests get 503.

    ``key_cache_s``: how long a verified API key is trusted without reading the key table
    again; a revoked key stops working within this time.

    ``page_max``: the largest page of ``GET /v1/users/{id}/measurements`` and of a FHIR search.

    ``shared_store``: other processes commit to the same store (``weightstream serve
    --workers N`` sets it in each worker; set it too when several machines serve one
    PostgreSQL database). Each group, and each estimate, then asks the store for the versions
    of its users' states (one query a group) and reloads those another process committed
    since this one cached them; a group that still meets another process's commit is redone
    (``commit_retries``).

    ``gc_young``: while the app runs, what was alive at its start is frozen out of the garbage
    collector and the youngest generation is collected every ``gc_young`` allocations (Python's
    default is 700; :mod:`weightstream.heap`, as a file run does); 0 leaves the collector
    alone. A full collection over the objects of the start (numba's compiler among them)
    stalled every request for 100-300 ms; 20,000 keeps a young collection to one every few
    dozen requests, each over a few thousand live objects.
    """

    max_batch: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    group_linger_s: float = 0.001
    group_max_readings: int = 20_000
    group_inline_max: int = 64
    commit_retries: int = 8
    key_cache_s: float = 1.0
    page_max: int = 1_000
    gc_young: int = 20_000
    shared_store: bool = False

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_body_bytes < 1024:
            raise ValueError("max_batch must be >= 1 and max_body_bytes >= 1024")
        if self.group_max_readings < self.max_batch:
            raise ValueError("group_max_readings must be at least max_batch")
        if self.gc_young < 0 or self.group_inline_max < 0:
            raise ValueError("gc_young and group_inline_max must be >= 0")
        if not 0.0 <= self.group_linger_s <= 1.0:
            raise ValueError("group_linger_s must be between 0 and 1 second")
