"""``weightstream calibrate``: each source's offset and the time-of-day offset, from history.

Reads every user's accepted readings (the store changes nothing), prints the offsets with their
95% intervals and counts (:mod:`weightstream.calibrate`), and with ``--write-config FILE``
writes them into that configuration file's ``[offsets]`` section, from which the filter
subtracts them. ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from weightstream._display import text
from weightstream.cli._common import ConfigOpt, DbOpt, console, fail, guard, load, open_store
from weightstream.errors import ExitCode

__all__ = ["register"]


def calibrate(
    ctx: typer.Context,
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="Source the offsets are relative to (default: care-team-upload, "
            "else the most-used source).",
        ),
    ] = None,
    write_config: Annotated[
        Path | None,
        typer.Option("--write-config", help="Write the offsets into this TOML file."),
    ] = None,
    min_readings: Annotated[
        int, typer.Option("--min-readings", min=2, help="Comparable readings for an offset.")
    ] = 30,
    min_users: Annotated[int, typer.Option("--min-users", min=1, help="Users for an offset.")] = 3,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Estimate each source's offset and the time-of-day offset from stored history.

    Example: weightstream calibrate --db w.db --write-config weightstream.toml
    """
    from weightstream import calibrate as cal
    from weightstream.results_file import output_path_problem, protected_paths

    cfg = load(config)
    if write_config is not None:
        problem = output_path_problem(
            write_config, keep=protected_paths(None, db), option="--write-config"
        )
        if problem is not None:
            fail(problem, ExitCode.USAGE)
    store = open_store(ctx, db, cfg, create=False)
    try:
        result = guard(
            lambda: cal.calibrate(
                store, cfg, reference=reference, min_readings=min_readings, min_users=min_users
            )
        )
    finally:
        store.close()
    if json_out:
        console.out(json.dumps(_as_json(result), indent=1, ensure_ascii=True), highlight=False)
    else:
        _print(result)
    if write_config is not None:
        try:
            guard(lambda: cal.write_offsets(write_config, result.offsets))
        except OSError as exc:
            fail(f"cannot write {write_config}: {exc.strerror or exc}", ExitCode.STORAGE)
        console.print(text(f"wrote the offsets to {write_config}"))


def _as_json(result: object) -> dict[str, object]:
    from weightstream.calibrate import Calibration

    assert isinstance(result, Calibration)
    o = result.offsets
    users = dict(result.estimate_users)

    def entry(key: str, e: object) -> dict[str, object]:
        from weightstream.offsets import OffsetEstimate

        assert isinstance(e, OffsetEstimate)
        return {
            "kg": e.kg,
            "low": e.low,
            "high": e.high,
            "readings": e.count,
            "users": users.get(key, 0),
        }

    return {
        "reference": o.reference,
        "sources": {name: entry(name, e) for name, e in o.sources},
        "time_of_day": {name: entry(f"time_of_day.{name}", e) for name, e in o.time_of_day},
        "bands": [{"name": n, "from_hour": h} for n, h in o.bands],
        "skipped": [{"name": n, "readings": c, "users": u} for n, c, u in result.skipped],
        "min_readings": result.min_readings,
        "min_users": result.min_users,
        "readings": result.readings,
        "used": result.used,
        "users": result.users,
        "windows": result.windows,
        "residual_sd": result.residual_sd,
    }


def _print(result: object) -> None:
    from weightstream.calibrate import Calibration

    assert isinstance(result, Calibration)
    o = result.offsets
    users = dict(result.estimate_users)
    console.print(
        Text.assemble(
            "offsets relative to ",
            text(o.reference or "(no source)"),
            f" and the {o.bands[0][0]} band; {result.readings} accepted readings of "
            f"{result.users} users, {result.used} in the fit",
        )
    )
    table = Table()
    for col in ("offset of", "kg", "95% interval", "readings", "users"):
        table.add_column(col)
    hours = {n: (h, o.bands[(i + 1) % len(o.bands)][1]) for i, (n, h) in enumerate(o.bands)}
    rows = [(text(n), n, e) for n, e in o.sources] + [
        (text(f"time of day: {n} ({hours[n][0]:02d}-{hours[n][1]:02d} h)"), f"time_of_day.{n}", e)
        for n, e in o.time_of_day
    ]
    for label, key, e in rows:
        table.add_row(
            label,
            f"{e.kg:+.2f}",
            f"{e.low:+.2f} .. {e.high:+.2f}",
            str(e.count),
            str(users.get(key, 0)),
        )
    console.print(table)
    for name, count, n_users in result.skipped:
        console.print(
            Text.assemble(
                "no offset for ",
                text(name.replace("time_of_day.", "time of day: ")),
                f": too little data ({count} comparable readings from {n_users} users; "
                f"needs {result.min_readings} from {result.min_users})",
            )
        )


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to ``app``."""
    app.command()(calibrate)
