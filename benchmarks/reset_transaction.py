"""The reset path with and without the ResetTransaction (run by hand).

    .venv/bin/python benchmarks/reset_transaction.py [users] [repeats]

Every reading is a user's first one, so every reading is a reset (INITIAL). Readings are
processed Batch-style (one group commit per run) on a MemoryStore, so the store's cost does
not dominate. Prints microseconds per reset for ``resets.transactional`` on and off, and the
difference (target: < 100 us added per reset). Best of ``repeats`` runs, interleaved.
"""

from __future__ import annotations

import sys
import time

from weightstream.config import Config, ResetConfig
from weightstream.processor import Batch, Processor
from weightstream.store.memory import MemoryStore
from weightstream.testing import FakeClock, measurement


def run(transactional: bool, users: int) -> float:
    config = Config(resets=ResetConfig(transactional=transactional))
    readings = [measurement(60.0 + (i % 50), 0, user=f"u{i}") for i in range(users)]
    p = Processor(MemoryStore(), config, clock=FakeClock())
    batch = Batch(p, input_id="bench")
    batch.prefetch(readings)
    started = time.perf_counter()
    for m in readings:
        batch.process(m)
    batch.commit(position=("bench", users))
    elapsed = time.perf_counter() - started
    assert len(p.store.audits(outcome="committed")) == users
    return elapsed / users * 1e6


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    run(True, 200), run(False, 200)  # warm up
    on, off = [], []
    for _ in range(repeats):
        on.append(run(True, users))
        off.append(run(False, users))
    t_on, t_off = min(on), min(off)
    print(f"resets per run: {users}, best of {repeats}")
    print(f"with transaction:    {t_on:8.2f} us/reset")
    print(f"without transaction: {t_off:8.2f} us/reset")
    print(f"added by the transaction: {t_on - t_off:8.2f} us/reset (target < 100 us)")


if __name__ == "__main__":
    main()
