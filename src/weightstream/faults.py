"""Named crash points and operator chaos, both inert unless armed by the environment.

Crash points (``WEIGHTSTREAM_FAULT``), for crash-and-rerun tests:

* ``point:k``: the k-th time ``crash_point("point")`` is reached, the process sends itself
  SIGKILL, so no ``finally`` block, flush or atexit handler runs (what a power cut or OOM
  kill does to us);
* ``list``: count every point's hits and print them as JSON to stderr at exit, so a test
  can discover every point and its hit count in one run.

Chaos (``WEIGHTSTREAM_CHAOS="reset:0.2,persist:0.05"`` with ``WEIGHTSTREAM_CHAOS_SEED``):
:func:`chaos` raises :class:`ChaosFault` at those operations with those probabilities, from
a seeded generator, so an operator can watch the safety net work on real data.

Reading the environment happens once, at first use; the unarmed fast path is one global
lookup and a comparison.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["crash_point", "chaos", "ChaosFault", "hits", "rearm", "no_chaos"]


class ChaosFault(RuntimeError):
    """An operation failed on purpose (chaos mode or a test's fault injection)."""


_lock = threading.Lock()
_armed: tuple[str, int] | None = None
_listing = False
_counts: dict[str, int] = {}
_chaos_rates: dict[str, float] = {}
_chaos_rng = random.Random(0)


def rearm(environ: dict[str, str] | None = None) -> None:
    """(Re)read the environment. Called at import; tests call it after changing env."""
    global _armed, _listing, _chaos_rates, _chaos_rng
    env = os.environ if environ is None else environ
    spec = env.get("WEIGHTSTREAM_FAULT", "").strip()
    _armed, _listing = None, False
    _counts.clear()
    if spec == "list":
        _listing = True
    elif spec:
        name, _, k = spec.rpartition(":")
        if not name or not k.isdigit() or int(k) < 1:
            raise ValueError(f"WEIGHTSTREAM_FAULT must be 'point:k' or 'list', got {spec!r}")
        _armed = (name, int(k))
    _chaos_rates = {}
    for part in filter(None, (p.strip() for p in env.get("WEIGHTSTREAM_CHAOS", "").split(","))):
        op, _, rate = part.partition(":")
        _chaos_rates[op.strip()] = float(rate)
    _chaos_rng = random.Random(int(env.get("WEIGHTSTREAM_CHAOS_SEED", "0")))


def crash_point(name: str) -> None:
    """Do nothing, unless the environment armed this point (see the module docstring)."""
    if _armed is None and not _listing:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        count = _counts[name]
    if _armed is not None and _armed[0] == name and count == _armed[1]:
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def hits() -> dict[str, int]:
    """Hit counts so far (only counted when armed or listing)."""
    with _lock:
        return dict(_counts)


_quiet = threading.local()


@contextmanager
def no_chaos() -> Iterator[None]:
    """Suspend chaos in this thread (replays and rebuilds recompute; they must not fail)."""
    previous = getattr(_quiet, "on", False)
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = previous


def chaos(operation: str) -> None:
    """Raise :class:`ChaosFault` with the configured probability for ``operation``."""
    if not _chaos_rates or getattr(_quiet, "on", False):
        return
    rate = _chaos_rates.get(operation, 0.0)
    if rate > 0.0:
        with _lock:
            draw = _chaos_rng.random()
        if draw < rate:
            raise ChaosFault(f"chaos: injected failure in {operation}")


def _report() -> None:
    if _listing:
        sys.stderr.write("WEIGHTSTREAM_FAULT_POINTS " + json.dumps(hits(), sort_keys=True) + "\n")


rearm()
atexit.register(_report)
