"""Durable per-user state and history: the store protocol (:mod:`.base`) and its back-ends.

:func:`open_store` picks the back-end the way every entry point does: PostgreSQL for a URL,
else the SQLite file. The back-ends are imported only when chosen (psycopg is never loaded
for a SQLite run).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weightstream.config import StoreConfig
    from weightstream.faults import FaultPoints
    from weightstream.observe import Observer
    from weightstream.store.base import StateStore
    from weightstream.store.gate import WriteGate
    from weightstream.store.sqlite import SQLiteStore

__all__ = ["open_store"]


def open_store(
    config: StoreConfig,
    path: str | Path,
    *,
    dsn: str | None = None,
    create: bool = True,
    observer: Observer | None = None,
    faults: FaultPoints | None = None,
    sqlite_class: type[SQLiteStore] | None = None,
    gate: WriteGate | None = None,
) -> StateStore:
    """The PostgreSQL database at ``dsn`` when one is given, else the SQLite file ``path``
    (created when ``create``), as ``sqlite_class`` (a test's subclass) if given, taking
    turns with the run's other processes through ``gate`` if given."""
    from weightstream.faults import NO_FAULTS

    faults = NO_FAULTS if faults is None else faults
    if dsn is not None:
        from weightstream.store.postgres import PostgresStore

        return PostgresStore.from_config(config, dsn, observer=observer, faults=faults)
    from weightstream.store.sqlite import SQLiteStore

    chosen = SQLiteStore if sqlite_class is None else sqlite_class
    return chosen.from_config(
        config, path, create=create, observer=observer, faults=faults, gate=gate
    )
