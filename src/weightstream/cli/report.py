"""``weightstream report``: write the static report site (per-user charts, index, cohort).

Reads the store and changes nothing in it. The site works offline from disk: plotly's
JavaScript is written once into ``--out`` (see :mod:`weightstream.report.site`). Prints the
path of the index when done. ``--out`` is a new or empty directory, or an earlier report
(pages are rewritten); any other directory is refused, so a report never lands among other
files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from weightstream._display import text
from weightstream.cli._common import ConfigOpt, DbOpt, console, err, fail, guard, load, open_store
from weightstream.errors import ExitCode

__all__ = ["register"]


def report(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the site into.")],
    user: Annotated[
        list[str] | None, typer.Option("--user", help="A user to report (repeatable).")
    ] = None,
    all_users: Annotated[
        bool, typer.Option("--all", help="Every user with a stored state (the default).")
    ] = False,
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    input_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--input",
            help="An export processed into --db (repeatable): its duplicate and invalid rows "
            "are shown too.",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", min=1, max=64, help="Processes writing user pages [default: CPUs, at most 4]."
        ),
    ] = None,
) -> None:
    """Write the report: one page per user, an index and a cohort summary, offline.

    Example: weightstream report --all --db weightstream.db --input export.csv --out report
    """
    from weightstream.report.site import write_site

    if user and all_users:
        fail("--user and --all exclude each other", ExitCode.USAGE)
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is not a directory", ExitCode.USAGE)
    if out.is_dir() and any(out.iterdir()) and not (out / "index.html").is_file():
        fail(
            f"--out {out} is a directory holding something other than a report; "
            "refusing to write into it",
            ExitCode.USAGE,
        )
    cfg = load(config)
    inputs = list(input_files or [])
    for path in inputs:
        if not path.is_file():
            fail(f"--input {path}: no such file", ExitCode.NO_INPUT)
    store = open_store(ctx, db, cfg, create=False)
    try:
        wanted = list(user) if user else None
        if wanted:
            known = guard(lambda: store.known_users(wanted))
            for u in wanted:
                if u not in known:
                    err.print(Text.assemble("unknown user ", text(u)), highlight=False)
                    raise typer.Exit(int(ExitCode.UNKNOWN_USER))
        try:
            summary = guard(
                lambda: write_site(
                    store,
                    cfg,
                    out,
                    users=wanted,
                    inputs=inputs,
                    jobs=jobs if jobs is not None else min(4, os.cpu_count() or 1),
                    open_store=lambda: open_store(ctx, db, cfg, create=False),
                )
            )
        except OSError as exc:
            fail(f"cannot write the report into {out}: {exc.strerror or exc}", ExitCode.STORAGE)
    finally:
        store.close()
    err.print(
        f"{summary.users} user pages in {summary.seconds:.1f} s "
        f"(largest {summary.largest_user_page_bytes / 1024:.0f} KiB)",
        highlight=False,
    )
    console.print(text(str(summary.index.resolve())), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``report`` to ``app``."""
    app.command()(report)
