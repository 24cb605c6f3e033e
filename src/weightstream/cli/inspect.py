"""``weightstream state``, ``resets`` and ``stats``: read the store, change nothing.

A stored state that does not decode or validate is reported as corrupt (exit ``STORAGE``),
never shown; every text that came from the input is shown through
:mod:`weightstream._display` (invariant I13).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from weightstream._display import error_text, text
from weightstream.cli._common import ConfigOpt, DbOpt, console, err, existing_store, fail, guard
from weightstream.errors import ExitCode, StateCorruptionError, WeightstreamError, exit_code_for
from weightstream.lifecycle import Phase, phase_of

if TYPE_CHECKING:
    from weightstream.config import OffsetConfig

__all__ = ["register"]


def state(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    last: Annotated[int, typer.Option("--last", help="How many recent readings.")] = 10,
) -> None:
    """Show a user's current state and last readings.

    Example: weightstream state 001ADB5640A54EF2A092E20915E0FB81 --db weightstream.db
    """
    from weightstream.resets.validator import StateValidator

    with existing_store(ctx, db, config) as (cfg, store):
        try:
            st = store.load_state(user_id)
        except StateCorruptionError as exc:
            _corrupt_state(user_id, exc)
        except WeightstreamError as exc:
            fail(exc, exit_code_for(exc))
        if st is None:
            err.print(Text.assemble("unknown user ", text(user_id)), highlight=False)
            raise typer.Exit(int(ExitCode.UNKNOWN_USER))
        v = cfg.validation
        problems = StateValidator(
            min_weight_kg=v.min_weight_kg, max_weight_kg=v.max_weight_kg
        ).user_state_problems(st)
        if problems:
            _corrupt_state(user_id, "; ".join(problems))
        table = Table(title=Text.assemble("user ", text(user_id)), show_header=False)
        if phase_of(st) is not Phase.NEW:
            k = st.kalman
            assert k is not None  # a user past NEW has a filter
            table.add_row("weight (kg)", f"{k.x[0]:.2f} ± {k.weight_std:.2f}")
            table.add_row("trend (kg/week)", f"{k.x[1] * 7:+.3f}")
            table.add_row("as of", k.timestamp.isoformat())
        table.add_row(
            "adapting",
            f"{st.adaptation.is_adapting} (factor {st.adaptation.adaptation_factor:.2f})",
        )
        table.add_row("last reset", text(f"{st.last_reset_type} at {st.last_reset_at}"))
        table.add_row("accepted readings", str(st.accepted_count))
        table.add_row("version", str(st.version))
        table.add_row("offsets", _offsets_text(cfg.offsets))
        console.print(table)
        try:
            rows = store.history(user_id)[-last:]
        except StateCorruptionError as exc:
            fail(f"the stored readings of user {user_id} cannot be read: {exc}", ExitCode.STORAGE)
        except WeightstreamError as exc:
            fail(exc, exit_code_for(exc))
        hist = Table(title="last readings")
        for col in ("time", "source", "kg", "offset", "verdict", "reason", "filtered"):
            hist.add_column(col)
        for row in rows:
            m, r = row.measurement, row.result
            hist.add_row(
                m.timestamp.isoformat(),
                text(m.source),
                f"{m.weight_kg:.2f}",
                f"{m.offset_kg:+.2f}" if m.offset_kg else "",
                text(r.verdict),
                text(r.reason),
                "" if r.filtered_weight is None else f"{r.filtered_weight:.2f}",
            )
        console.print(hist)


def _offsets_text(config: OffsetConfig) -> Text:
    """The offsets the filter subtracts (issue 13): ``none``, or each source's and band's."""
    from weightstream.offsets import from_config

    offsets = from_config(config)
    if offsets.empty:
        return Text("none")
    parts: list[str | Text] = [
        "reference ",
        text(offsets.reference or "(none named)"),
    ]
    for name, e in offsets.sources:
        if e.kg:
            parts += ["; ", text(name), f" {e.kg:+.2f} kg"]
    for name, e in offsets.time_of_day:
        if e.kg:
            parts += ["; ", text(name), f" {e.kg:+.2f} kg"]
    if offsets.local_utc_offset_hours:
        parts.append(f"; local clock UTC{offsets.local_utc_offset_hours:+g} h")
    return Text.assemble(*parts)


def _corrupt_state(user_id: str, reason: object) -> NoReturn:
    """A stored state that does not decode or validate: say so (no traceback, no nan).

    Exit ``STORAGE``.
    """
    err.print(
        error_text(
            f"the stored state of user {user_id} is corrupt and is not shown ({reason}); "
            f"rebuild it from its readings with: weightstream recover {user_id} --apply",
            label="warning",
        ),
        highlight=False,
    )
    raise typer.Exit(int(ExitCode.STORAGE))


def resets(
    ctx: typer.Context,
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user.")] = None,
    outcome: Annotated[
        str | None,
        typer.Option("--outcome", help="committed, rolled_back, breaker_open, or a fallback."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List reset transactions from the audit record.

    Example: weightstream resets --outcome rolled_back --db weightstream.db
    """
    with existing_store(ctx, db, config) as (_, store):
        audits = guard(lambda: store.audits(user_id=user, outcome=outcome))
    if json_out:
        console.print_json(
            json.dumps(
                [
                    {
                        "user_id": a.user_id,
                        "reading_id": a.reading_id,
                        "type": str(a.reset_type),
                        "trigger": a.trigger,
                        "outcome": a.outcome,
                        "fallback": a.fallback,
                        "failed_operation": a.failed_operation,
                        "reason": a.reason,
                        "duration_ms": a.duration_s * 1000,
                        "at": a.at.isoformat(),
                    }
                    for a in audits
                ]
            ),
            ensure_ascii=True,
        )
        return
    table = Table(title=f"{len(audits)} reset transactions")
    for col in ("at", "user", "type", "trigger", "outcome", "fallback", "failed op", "ms"):
        table.add_column(col)
    for a in audits:
        table.add_row(
            a.at.isoformat(timespec="seconds"),
            text(a.user_id),
            text(a.reset_type),
            text(a.trigger),
            text(a.outcome),
            text(a.fallback or ""),
            text(a.failed_operation or ""),
            f"{a.duration_s * 1000:.3f}",
        )
    console.print(table)


def stats(
    ctx: typer.Context,
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records at or after this ISO date/time (UTC if naive)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """The reset plan's success metrics from the audit record, each beside its target.

    Example: weightstream stats --since 2025-01-01 --db weightstream.db
    """
    from datetime import UTC, datetime

    from weightstream.stats import compute_stats

    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            fail(f"--since takes an ISO date or time, got {since!r}", ExitCode.USAGE)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    with existing_store(ctx, db, config) as (_, store):
        result = guard(lambda: compute_stats(store, start))
    if json_out:
        console.print_json(json.dumps(result.as_dict()), ensure_ascii=True)
        return
    table = Table(
        title=f"reset success metrics ({result.attempted} transactions, "
        f"{result.breaker_refused} refused by the breaker, "
        f"{result.recovery_attempts} recovery attempts)"
    )
    for col in ("metric", "value", "target", "status"):
        table.add_column(col)
    for f in result.figures():
        if f.value is None:
            shown = "n/a"
        elif f.unit == "%":
            shown = f"{f.value * 100:.2f}%"
        else:
            shown = f"{f.value:.3f} {f.unit}"
        table.add_row(text(f.name), text(shown), text(f.target), text(f.status))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``state``, ``resets`` and ``stats`` to ``app``."""
    app.command()(state)
    app.command()(resets)
    app.command()(stats)
