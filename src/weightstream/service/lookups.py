"""Bounded reads the service needs: the stored result of a few readings.

An idempotent answer needs the stored result of the readings resubmitted, not a user's whole
history: one indexed lookup per reading
(:meth:`~weightstream.store.base.StateStore.stored_reading`), on the store thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from weightstream.model import Measurement, Result
from weightstream.store.base import StateStore

__all__ = ["stored_results"]

#: (user id, reading id, content key) of a stored reading.
Identity = tuple[str, str, str]


def stored_results(store: StateStore, readings: Sequence[Measurement]) -> dict[Identity, Result]:
    """The stored result of each of ``readings`` that is stored as it is (the same user, id
    and content), by (user, reading id, content key)."""
    out: dict[Identity, Result] = {}
    for ident in {(m.user_id, m.reading_id, m.content_key) for m in readings}:
        found = store.stored_reading(ident[0], ident[1])
        if found is not None and found.measurement.content_key == ident[2]:
            out[ident] = replace(found.result, row=None)
    return out
