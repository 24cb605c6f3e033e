"""Named crash points and operator chaos, as an injected object that does nothing by default.

A :class:`FaultPoints` is handed to what can fail: the SQLite store (constructor), the
:class:`~weightstream.processor.Processor` (which gives it to the reset sequence through its
:class:`~weightstream.step.Policy`) and :func:`weightstream.pipeline.process_file`. The default,
:data:`NO_FAULTS`, is inert: library users and tests get "no faults" without asking. Only the
command line reads the environment, once per run (:meth:`FaultPoints.from_environ`):

* ``WEIGHTSTREAM_FAULT=point:k``: the k-th time ``crash_point("point")`` is reached, the process
  sends itself SIGKILL, so no ``finally`` block, flush or atexit handler runs (what a power cut
  or OOM kill does to us);
* ``WEIGHTSTREAM_FAULT=list``: count every point's hits; the CLI prints them as JSON to stderr
  when the command ends (:meth:`FaultPoints.report`), so a test can discover every point and
  its hit count in one run;
* ``WEIGHTSTREAM_CHAOS="reset:0.2,persist:0.05"`` with ``WEIGHTSTREAM_CHAOS_SEED``:
  :meth:`FaultPoints.chaos` raises :class:`ChaosFault` at those operations with those
  probabilities, from a seeded generator, so an operator can watch the safety net work on real
  data.

>>> faults = FaultPoints.from_environ({"WEIGHTSTREAM_FAULT": "list"})
>>> faults.crash_point("store.after_begin"); faults.crash_point("store.after_begin")
>>> faults.hits()
{'store.after_begin': 2}
>>> NO_FAULTS.crash_point("store.after_begin"); NO_FAULTS.hits()
{}
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TextIO

__all__ = ["FaultPoints", "NO_FAULTS", "ChaosFault", "LISTING_PREFIX"]

#: The start of the stderr line a listing run ends with, before the JSON of the hit counts.
LISTING_PREFIX = "WEIGHTSTREAM_FAULT_POINTS "


class ChaosFault(RuntimeError):
    """An operation failed on purpose (chaos mode or a test's fault injection)."""


def _sigkill() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _Hits:
    """Hit counts shared by a :class:`FaultPoints` and its chaos-free view."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, name: str) -> int:
        with self.lock:
            count = self.counts.get(name, 0) + 1
            self.counts[name] = count
            return count


class FaultPoints:
    """Crash points and chaos of one run. ``FaultPoints()`` does nothing.

    ``crash_at=(point, k)`` kills the process (``kill``, SIGKILL by default) at the k-th hit of
    ``point``; ``listing`` counts every hit; ``chaos`` maps an operation to the probability
    that :meth:`chaos` raises there, drawn from ``random.Random(seed)``.
    """

    def __init__(
        self,
        *,
        crash_at: tuple[str, int] | None = None,
        listing: bool = False,
        chaos: Mapping[str, float] | None = None,
        seed: int = 0,
        kill: Callable[[], None] = _sigkill,
    ) -> None:
        if crash_at is not None and (not crash_at[0] or crash_at[1] < 1):
            raise ValueError(f"a crash point is (name, k >= 1), got {crash_at!r}")
        self._crash_at = crash_at
        self._listing = listing
        self._counting = crash_at is not None or listing
        self._chaos_rates = {op: rate for op, rate in (chaos or {}).items() if rate > 0.0}
        self._rng = random.Random(seed)
        self._kill = kill
        self._hits = _Hits()
        #: Nothing armed, nothing counted and no chaos, in this very class (a subclass may do
        #: anything at a point): a caller on a hot path may skip its points altogether.
        self.inert = type(self) is FaultPoints and not self._counting and not self._chaos_rates

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> FaultPoints:
        """The faults ``WEIGHTSTREAM_FAULT``, ``WEIGHTSTREAM_CHAOS(_SEED)`` ask for (module doc)."""
        spec = environ.get("WEIGHTSTREAM_FAULT", "").strip()
        crash_at: tuple[str, int] | None = None
        if spec and spec != "list":
            name, _, k = spec.rpartition(":")
            if not name or not k.isdigit() or int(k) < 1:
                raise ValueError(f"WEIGHTSTREAM_FAULT must be 'point:k' or 'list', got {spec!r}")
            crash_at = (name, int(k))
        rates: dict[str, float] = {}
        for part in environ.get("WEIGHTSTREAM_CHAOS", "").split(","):
            if part.strip():
                op, _, rate = part.partition(":")
                rates[op.strip()] = float(rate)
        seed = int(environ.get("WEIGHTSTREAM_CHAOS_SEED", "0"))
        return cls(crash_at=crash_at, listing=spec == "list", chaos=rates, seed=seed)

    @property
    def listing(self) -> bool:
        """Whether this run lists its crash points (``WEIGHTSTREAM_FAULT=list``)."""
        return self._listing

    def crash_point(self, name: str) -> None:
        """Do nothing, unless this point is armed (or hits are being listed)."""
        if not self._counting:
            return
        count = self._hits.add(name)
        if self._crash_at is not None and self._crash_at == (name, count):
            self._kill()

    def chaos(self, operation: str) -> None:
        """Raise :class:`ChaosFault` with the configured probability for ``operation``."""
        if not self._chaos_rates:
            return
        rate = self._chaos_rates.get(operation, 0.0)
        if rate > 0.0:
            with self._hits.lock:
                draw = self._rng.random()
            if draw < rate:
                raise ChaosFault(f"chaos: injected failure in {operation}")

    def without_chaos(self) -> FaultPoints:
        """The same crash points and hit counts, never chaos (replays recompute; never fail)."""
        if not self._chaos_rates:
            return self
        quiet = FaultPoints(crash_at=self._crash_at, listing=self._listing, kill=self._kill)
        quiet._hits = self._hits
        return quiet

    def hits(self) -> dict[str, int]:
        """Hit counts so far (only counted when a point is armed or hits are listed)."""
        with self._hits.lock:
            return dict(self._hits.counts)

    def report(self, stream: TextIO) -> None:
        """In listing mode, write the hit counts as one line of JSON (:data:`LISTING_PREFIX`)."""
        if self._listing:
            stream.write(LISTING_PREFIX + json.dumps(self.hits(), sort_keys=True) + "\n")
            stream.flush()


#: The inert default: no crash point ever fires, no chaos, nothing counted.
NO_FAULTS = FaultPoints()
