"""The ``weightstream`` command line (typer + rich).

One module per group of commands, each with a ``register(app)`` that adds its commands to
:data:`app`; :data:`COMMAND_MODULES` lists them in the order ``--help`` shows them. To add a
command, write ``cli/NAME.py`` with its command functions and a ``register`` and append the
module to :data:`COMMAND_MODULES`. What the commands share (consoles, option types, the
error edge, :class:`Wiring`) is in :mod:`weightstream.cli._common`.

Errors become exit codes here, at the edge only. Every exit code is named by
:class:`weightstream.errors.ExitCode`, the one table of their numbers (and
:data:`weightstream.errors.EXIT_CODES` gives the code of each kind of error).

:func:`main` is the one place that reads the crash-point and chaos variables
(``WEIGHTSTREAM_FAULT``, ``WEIGHTSTREAM_CHAOS``, ``WEIGHTSTREAM_CHAOS_SEED``; see
:mod:`weightstream.faults`): it builds the run's :class:`~weightstream.faults.FaultPoints` and
hands it, with the store class, to the commands as their :class:`Wiring`.

Text that came from the input (user ids, sources, messages, paths) is printed only through
:mod:`weightstream._display`: as rich ``Text``, never markup, with control characters made
visible (invariant I13).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

import typer

from weightstream._display import error_text
from weightstream.cli import (
    calibrate,
    config,
    history,
    inspect,
    keys,
    process,
    recover,
    serve,
    synth,
)
from weightstream.cli import report as report_cli
from weightstream.cli._common import Wiring, err
from weightstream.errors import ExitCode
from weightstream.faults import FaultPoints

if TYPE_CHECKING:
    from weightstream.store.sqlite import SQLiteStore

__all__ = ["ALLOCATOR_ENV", "COMMAND_MODULES", "Wiring", "app", "main"]

app = typer.Typer(
    name="weightstream",
    help="Trustworthy per-user weight trajectories from messy exports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: The command modules, each with ``register(app)``, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    process,
    inspect,
    recover,
    synth,
    config,
    history,
    calibrate,
    report_cli,
    serve,
    keys,
)

for _module in COMMAND_MODULES:
    _module.register(app)

#: Set for this process unless already set: polars' allocator (jemalloc) gives freed memory
#: back to the system at once rather than ten seconds later. A file run frees a partition or
#: a slice of results every few seconds; kept, they added ~40 MB to its peak (issue 11).
ALLOCATOR_ENV: Mapping[str, str] = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}


def main(*, store_class: type[SQLiteStore] | None = None) -> None:
    """Run the command line: the crash points and chaos of this run come from the environment.

    In listing mode (``WEIGHTSTREAM_FAULT=list``) the hit counts are written to stderr when
    the command ends, however it ends (a SIGKILL at a crash point aside).
    """
    for name, value in ALLOCATOR_ENV.items():  # read when polars is first imported
        os.environ.setdefault(name, value)
    try:
        faults = FaultPoints.from_environ(os.environ)
    except ValueError as exc:
        err.print(error_text(exc), highlight=False)
        sys.exit(int(ExitCode.CONFIG))
    try:
        app(obj=Wiring(faults=faults, store_class=store_class))
    finally:
        faults.report(sys.stderr)
