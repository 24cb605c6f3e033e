"""The garbage collector tuned for a long job: a file run, a bucket worker, the service.

What is alive when the job starts (the modules, numba's compiler and its cached kernels, a
server's schemas: 100,000-200,000 objects) lives until the process ends, yet CPython's
collector walks all of it at every full collection. A job that makes and drops millions of
small objects (readings, results, states) triggers one every few hundred thousand
allocations, so the walk comes round again and again: 7 full collections in a 200,000-row file
run, each over the start's objects; in the service, a stall of every request in flight for
100-300 ms.

:func:`long_lived_heap` moves what is alive at its start out of the collector's sight
(:func:`gc.freeze`) and collects the youngest generation every ``young`` allocations instead
of 700: the job's own objects still die young and are still collected, a cycle included, but
a collection comes less often and walks only them. Both are undone when the job ends, so a
job run inside a test process (or a library call inside an application) leaves the collector
as it found it.

The collector's state is the process's, while jobs may nest or overlap (a Dask worker runs
partitions on several threads; a test runs a file inside a service): the first job to enter
tunes it, the last to leave restores it, and a job entered while the collector is frozen by
someone else (``gc.get_freeze_count()`` above 0) leaves it alone. Nothing here changes what
is decided: only when memory that is already garbage is reclaimed.

No library does this (it is three calls of :mod:`gc`); it lives here so that the file
engines and the service share one definition of it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["long_lived_heap"]

_lock = threading.Lock()
_depth = 0
#: The threshold to restore when the outermost job leaves; None: this module did not tune.
_restore: tuple[int, int, int] | None = None


@contextmanager
def long_lived_heap(young: int) -> Iterator[None]:
    """While the block runs, the collector tuned as the module says (``young`` 0: untouched).

    >>> import gc
    >>> before = gc.get_threshold()
    >>> with long_lived_heap(20_000):
    ...     gc.get_threshold()[0]
    20000
    >>> gc.get_threshold() == before
    True
    """
    if young < 0:
        raise ValueError("young must be >= 0")
    if young == 0:
        yield
        return
    global _depth, _restore
    with _lock:
        _depth += 1
        if _depth == 1 and gc.get_freeze_count() == 0:
            # No gc.collect() first: it would walk the whole heap at every job (0.25 s with
            # two million objects alive, as in a test process running hundreds of files),
            # while freezing is a splice of lists. Garbage frozen with the rest waits for
            # the job's end.
            gc.freeze()
            _restore = gc.get_threshold()
            gc.set_threshold(young, *_restore[1:])
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _restore is not None:
                gc.set_threshold(*_restore)
                gc.unfreeze()
                _restore = None
