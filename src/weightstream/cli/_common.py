"""What every command shares: the consoles, the option types, the wiring and the error edge.

Errors become exit codes here, at the edge only: :func:`fail` prints one ``error:`` line and
exits with an :class:`~weightstream.errors.ExitCode`; :func:`guard` turns a
:class:`~weightstream.errors.WeightstreamError` into the code :func:`exit_code_for` gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from weightstream._display import error_text
from weightstream.config import Config, load_config
from weightstream.errors import ExitCode, WeightstreamError, exit_code_for
from weightstream.faults import NO_FAULTS, FaultPoints

if TYPE_CHECKING:
    from weightstream.store.sqlite import SQLiteStore

__all__ = [
    "ConfigOpt",
    "DbOpt",
    "Wiring",
    "console",
    "err",
    "existing_store",
    "fail",
    "guard",
    "load",
    "open_store",
    "wiring",
]

console = Console(stderr=False)
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[Path, typer.Option("--db", help="SQLite database file.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML configuration file.", exists=False)
]
T = TypeVar("T")


@dataclass(frozen=True)
class Wiring:
    """What the commands build their objects with (``main`` passes it as the context object).

    ``faults``: the run's crash points and chaos; ``store_class``: the SQLite store class
    (``None``: :class:`~weightstream.store.sqlite.SQLiteStore`; the crash matrix's negative
    control runs :func:`weightstream.testing.split_unit_cli`, which gives another).
    """

    faults: FaultPoints = NO_FAULTS
    store_class: type[SQLiteStore] | None = None


def wiring(ctx: typer.Context) -> Wiring:
    """The command's :class:`Wiring` (the default one when the app is run without ``main``)."""
    obj = ctx.find_object(Wiring)
    return obj if obj is not None else Wiring()


def fail(message: object, code: ExitCode | int) -> NoReturn:
    """One ``error:`` line on stderr (shown as text, never markup), then exit ``code``."""
    err.print(error_text(message), highlight=False)
    raise typer.Exit(int(code))


def guard(fn: Callable[[], T]) -> T:
    """``fn()``; a :class:`WeightstreamError` becomes its ``error:`` line and exit code."""
    try:
        return fn()
    except WeightstreamError as exc:
        fail(exc, exit_code_for(exc))


def load(path: Path | None) -> Config:
    """The effective configuration (file, environment, defaults); a bad one exits."""
    return guard(lambda: load_config(path))


def open_store(
    ctx: typer.Context, db: Path, config: Config, *, create: bool, observer: Any = None
) -> SQLiteStore:
    """The run's store (its class and faults from the :class:`Wiring`); a failure exits."""
    from weightstream.store.sqlite import SQLiteStore

    wired = wiring(ctx)
    store_class = wired.store_class or SQLiteStore
    return guard(
        lambda: store_class.from_config(
            config.store, db, create=create, observer=observer, faults=wired.faults
        )
    )


@contextmanager
def existing_store(
    ctx: typer.Context, db: Path, config: Path | None
) -> Iterator[tuple[Config, SQLiteStore]]:
    """The configuration and the store of a command that reads an existing database.

    A bad configuration or a database that cannot be opened exits (nothing is created); the
    store is closed when the block ends, however it ends.
    """
    cfg = load(config)
    store = open_store(ctx, db, cfg, create=False)
    try:
        yield cfg, store
    finally:
        store.close()
