"""``weightstream history``: a user's stored readings, live filter values, optionally smoothed.

Reads the store and changes nothing. ``--smoothed`` adds the fixed-interval (RTS) smoother's
columns (:mod:`weightstream.smooth`); the live columns stay what was decided at the time.
Output is CSV or JSON on stdout: text cells with control characters made visible
(:func:`weightstream._display.clean`), and in CSV a text cell a spreadsheet would run as a
formula gets a leading apostrophe (:func:`weightstream.results_file.neutralise`), as in the
results file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from weightstream._display import clean, text
from weightstream.cli._common import ConfigOpt, DbOpt, err, guard, load, open_store
from weightstream.errors import ExitCode

__all__ = ["register", "LIVE_COLUMNS", "SMOOTHED_COLUMNS"]

#: Columns without ``--smoothed``, then the ones it adds (names of
#: :class:`weightstream.smooth.SmoothedReading`).
LIVE_COLUMNS: tuple[str, ...] = (
    "reading_id",
    "timestamp",
    "source",
    "weight_kg",
    "verdict",
    "reason",
    "reset_type",
    "offset_kg",
    "filtered_weight",
    "filtered_std",
    "filtered_trend_kg_week",
)
SMOOTHED_COLUMNS: tuple[str, ...] = (
    "segment",
    "smoothed_weight",
    "smoothed_std",
    "smoothed_trend_kg_week",
)


class Format(StrEnum):
    csv = "csv"
    json = "json"


def history(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    smoothed: Annotated[
        bool, typer.Option("--smoothed", help="Add the smoothed estimate (RTS) columns.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", help="csv or json.")] = Format.csv,
) -> None:
    """Print a user's stored readings with the live filter's values (and smoothed ones).

    Example: weightstream history 001ADB5640A54EF2A092E20915E0FB81 --smoothed --db w.db
    """
    from weightstream.smooth import SMOOTHED_FIELDS, smoothed_history

    cfg = load(config)
    store = open_store(ctx, db, cfg, create=False)
    try:
        rows = guard(lambda: smoothed_history(store, user_id, cfg))
        if not rows and not guard(lambda: store.known_users([user_id])):
            err.print(Text.assemble("unknown user ", text(user_id)), highlight=False)
            raise typer.Exit(int(ExitCode.UNKNOWN_USER))
    finally:
        store.close()
    columns = LIVE_COLUMNS + (SMOOTHED_COLUMNS if smoothed else ())
    assert set(columns) <= set(SMOOTHED_FIELDS)
    records = [{c: _value(getattr(r, c)) for c in columns} for r in rows]
    typer.echo(_json(records) if fmt is Format.json else _csv(columns, records), nl=False)


def _value(value: object) -> object:
    """A cell as output: times as ISO text, texts with visible controls, NaN as empty."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, (int, float)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return clean(value)


def _csv(columns: tuple[str, ...], records: list[dict[str, object]]) -> str:
    from weightstream.results_file import neutralise

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow(["" if record[c] is None else neutralise(record[c]) for c in columns])
    return buffer.getvalue()


def _json(records: list[dict[str, object]]) -> str:
    return json.dumps(records, indent=1, ensure_ascii=True) + "\n"


def register(app: typer.Typer) -> None:
    """Add ``history`` to ``app``."""
    app.command()(history)
