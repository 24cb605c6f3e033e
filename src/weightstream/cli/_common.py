"""What every command shares: the consoles, the option types, the wiring and the error edge.

Errors become exit codes here, at the edge only: :func:`fail` prints one ``error:`` line and
exits with an :class:`~weightstream.errors.ExitCode`; :func:`guard` turns a
:class:`~weightstream.errors.WeightstreamError` into the code :func:`exit_code_for` gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PosixPath
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from weightstream._display import error_text
from weightstream.config import Config, load_config
from weightstream.errors import ExitCode, WeightstreamError, exit_code_for
from weightstream.faults import NO_FAULTS, FaultPoints

if TYPE_CHECKING:
    from weightstream.store.base import StateStore
    from weightstream.store.sqlite import SQLiteStore

__all__ = [
    "ConfigOpt",
    "DatabaseUrl",
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


class DatabaseUrl(PosixPath):
    """A ``--db`` that names a PostgreSQL database: the URL as given is kept in ``url``.

    A ``Path`` would fold the URL's ``//``; commands keep treating ``--db`` as a path (it
    matches no file, so no output check refuses it) and :func:`open_store` reads ``url``.
    """

    url: str


def _db_option(value: str | Path) -> Path:
    """``--db``: a SQLite file, or a ``postgresql://`` URL (kept whole in a DatabaseUrl).

    The PostgreSQL store (and psycopg, 10 MB of a file run's memory) is imported only for a
    ``--db`` that is a URL at all.
    """
    text = str(value)
    if not isinstance(value, str) or "://" not in text:
        return Path(value)
    from weightstream.store.postgres import is_dsn

    if is_dsn(text):
        url = DatabaseUrl(text)
        url.url = text
        return url
    return Path(value)


DbOpt = Annotated[
    Path,
    typer.Option(
        "--db",
        help="SQLite database file, or a PostgreSQL URL (postgresql://user@host/db).",
        parser=_db_option,
    ),
]
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
) -> StateStore:
    """The run's store (its class and faults from the :class:`Wiring`); a failure exits.

    PostgreSQL when ``--db`` is a ``postgresql://`` URL, or when it was not given and the
    configuration's ``store.dsn`` is set; otherwise the SQLite file (the default).
    """
    from weightstream.store import open_store as open_backend

    wired = wiring(ctx)
    dsn = database_url(ctx, db, config)
    return guard(
        lambda: open_backend(
            config.store,
            db,
            dsn=dsn,
            create=create,
            observer=observer,
            faults=wired.faults,
            sqlite_class=wired.store_class,
        )
    )


def database_url(ctx: typer.Context | None, db: Path, config: Config) -> str | None:
    """The PostgreSQL URL this command uses, or None for the SQLite file ``db``."""
    if isinstance(db, DatabaseUrl):
        return db.url
    configured = config.store.dsn
    if not configured or ctx is None:
        return None
    given = ctx.get_parameter_source("db")
    return configured if given is None or given.name == "DEFAULT" else None


@contextmanager
def existing_store(
    ctx: typer.Context, db: Path, config: Path | None
) -> Iterator[tuple[Config, StateStore]]:
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
