"""``weightstream synth``: write a realistic synthetic export (and its ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from weightstream._display import text
from weightstream.cli._common import console, fail
from weightstream.errors import ExitCode

__all__ = ["register"]


def synth(
    out: Annotated[Path, typer.Option("--out", help="Export CSV to write.")],
    users: Annotated[int, typer.Option("--users")] = 200,
    per_user: Annotated[int, typer.Option("--per-user")] = 50,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    truth: Annotated[Path | None, typer.Option("--truth", help="Ground truth CSV.")] = None,
    scenario: Annotated[str, typer.Option("--scenario")] = "mixed",
    no_ids: Annotated[bool, typer.Option("--no-ids", help="Omit the id column.")] = False,
) -> None:
    """Write a realistic synthetic export (and its ground truth).

    Example: weightstream synth --users 200 --per-user 50 --seed 1 --out s.csv --truth t.csv
    """
    from weightstream import synth as synthmod

    if scenario not in synthmod.SCENARIOS:
        fail(
            f"unknown scenario {scenario!r}; one of {', '.join(synthmod.SCENARIOS)}",
            ExitCode.USAGE,
        )
    rows = synthmod.write_stream(
        users, per_user, seed, out, truth, scenario=scenario, ids=not no_ids
    )
    console.print(text(f"wrote {rows} rows to {out}" + (f" and truth to {truth}" if truth else "")))


def register(app: typer.Typer) -> None:
    """Add ``synth`` to ``app``."""
    app.command()(synth)
