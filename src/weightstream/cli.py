"""The ``weightstream`` command line (typer + rich).

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

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from weightstream._display import error_text, text
from weightstream.config import Config, load_config
from weightstream.errors import ExitCode, StateCorruptionError, WeightstreamError, exit_code_for
from weightstream.faults import NO_FAULTS, FaultPoints

if TYPE_CHECKING:
    from weightstream.store.sqlite import SQLiteStore

__all__ = ["app", "main", "Wiring"]

app = typer.Typer(
    name="weightstream",
    help="Trustworthy per-user weight trajectories from messy exports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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


def _wiring(ctx: typer.Context) -> Wiring:
    """The command's :class:`Wiring` (the default one when the app is run without ``main``)."""
    obj = ctx.find_object(Wiring)
    return obj if obj is not None else Wiring()


def _fail(message: object, code: ExitCode | int) -> NoReturn:
    """One ``error:`` line on stderr (shown as text, never markup), then exit ``code``."""
    err.print(error_text(message), highlight=False)
    raise typer.Exit(int(code))


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except WeightstreamError as exc:
        _fail(exc, exit_code_for(exc))


def _config(path: Path | None) -> Config:
    return _guard(lambda: load_config(path))


def _open_store(
    ctx: typer.Context, db: Path, config: Config, *, create: bool, observer: Any = None
) -> SQLiteStore:
    from weightstream.store.sqlite import SQLiteStore

    wiring = _wiring(ctx)
    store_class = wiring.store_class or SQLiteStore
    return _guard(
        lambda: store_class.from_config(
            config.store, db, create=create, observer=observer, faults=wiring.faults
        )
    )


@app.command()
def process(
    ctx: typer.Context,
    input: Annotated[Path, typer.Argument(help="CSV export to process.")],
    db: DbOpt = Path("weightstream.db"),
    out: Annotated[Path | None, typer.Option("--out", help="Results CSV to write.")] = None,
    config: ConfigOpt = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="Map a column explicitly: canonical=header "
            "(canonical: user_id, timestamp, weight, unit, source, id).",
        ),
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option("--metrics-file", help="Write Prometheus text here after.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve /metrics during the run.")
    ] = None,
    json_summary: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON.")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines.")] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Write results cells exactly as stored, for programs (by default a text "
            "cell starting with = + - @ tab or CR gets a leading ' so spreadsheets show it "
            "as text).",
        ),
    ] = False,
) -> None:
    """Process an export: one result per input row; resumable; nothing counted twice.

    Example: weightstream process export.csv --db weightstream.db --out results.csv
    """
    from weightstream.logs import LogObserver, configure_logging
    from weightstream.metrics import MetricsObserver
    from weightstream.observe import Observers
    from weightstream.pipeline import RESULT_FIELDS, process_file, write_results
    from weightstream.results_file import output_error

    configure_logging(json=log_json, level="WARNING")
    cfg = _config(config)
    mapping: dict[str, str] = {}
    for item in column or []:
        name, sep, header = item.partition("=")
        if not sep:
            _fail(f"--column takes canonical=header, got {item!r}", ExitCode.USAGE)
        mapping[name.strip()] = header.strip()
    if not input.is_file():
        _fail(f"no such input file: {input}", ExitCode.NO_INPUT)
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        _fail(f"--metrics-port takes a port from 1 to 65535, got {metrics_port}", ExitCode.USAGE)
    _check_outputs(input, db, config, [("--out", out), ("--metrics-file", metrics_file)])
    from weightstream.ingest import open_csv

    # A bad header fails before any database exists; so does a results file fed back in.
    source = _guard(lambda: open_csv(input, mapping or None))
    if not mapping and tuple(h.lower() for h in source.header) == RESULT_FIELDS:
        _fail(
            f"{input} is a weightstream results file, not an export: processing it would "
            "count its readings again (if it really is an export, map its columns with "
            "--column)",
            ExitCode.BAD_INPUT,
        )
    metrics = MetricsObserver(known_sources=cfg.sources.multipliers)
    observer = Observers([metrics, LogObserver()])
    server = None if metrics_port is None else _serve_metrics(metrics, metrics_port)
    try:
        store = _open_store(ctx, db, cfg, create=True, observer=observer)
        try:
            summary = _guard(
                lambda: _run_with_progress(
                    lambda progress: process_file(
                        input,
                        store,
                        cfg,
                        out=None if raw else out,
                        column_map=mapping or None,
                        observer=observer,
                        progress=progress,
                        faults=_wiring(ctx).faults,
                    )
                )
            )
            if raw and out is not None:
                _guard(lambda: write_results(store, summary.input_id, out, raw=True))
        finally:
            store.close()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if metrics_file is not None:
        try:
            metrics.write_textfile(metrics_file)
        except OSError as exc:
            error = output_error(metrics_file, exc, "metrics file")
            _fail(error, exit_code_for(error))
    if json_summary:
        console.print_json(json.dumps(summary.as_dict()), ensure_ascii=True)
    else:
        _print_summary(summary.as_dict())


def _check_outputs(
    input: Path, db: Path, config: Path | None, outputs: list[tuple[str, Path | None]]
) -> None:
    """Refuse (exit ``USAGE``) an output path that would destroy something, before any work.

    See :func:`weightstream.results_file.output_path_problem`: never the input, the database
    or its side files, the configuration, another output, a device, directory or fifo; only
    in an existing directory where a file can be created.
    """
    from weightstream.results_file import output_path_problem, protected_paths

    keep = protected_paths(input, db)
    if config is not None:
        keep["the configuration file"] = [config]
    for option, path in outputs:
        if path is None:
            continue
        problem = output_path_problem(path, keep=keep, option=option)
        if problem is not None:
            _fail(problem, ExitCode.USAGE)
        keep[f"the file given to {option}"] = [path]


def _serve_metrics(metrics: Any, port: int) -> Any:
    """Start the /metrics server before any work; a port that cannot be bound is ``USAGE``."""
    try:
        return metrics.serve(port)
    except OSError as exc:
        _fail(f"--metrics-port {port}: cannot listen: {exc.strerror or exc}", ExitCode.USAGE)


def _run_with_progress(run: Callable[[Any], T]) -> T:
    if not sys.stdout.isatty():
        return run(None)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("processing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run(progress)


def _print_summary(s: dict[str, Any]) -> None:
    table = Table(title="weightstream summary", show_header=False)
    for key in (
        "rows",
        "processed_now",
        "resumed_from",
        "accepted",
        "rejected",
        "invalid",
        "duplicate",
        "late",
        "users",
        "seconds",
    ):
        table.add_row(key, str(s[key]))
    for group in ("rejected_by_reason", "invalid_by_reason", "resets_by_type", "reset_outcomes"):
        for name, count in sorted(s[group].items()):
            table.add_row(text(f"{group.replace('_by_', ' by ')}: {name}"), str(count))
    console.print(table)


@app.command()
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

    cfg = _config(config)
    store = _open_store(ctx, db, cfg, create=False)
    try:
        try:
            st = store.load_state(user_id)
        except StateCorruptionError as exc:
            _corrupt_state(user_id, exc)
        except WeightstreamError as exc:
            _fail(exc, exit_code_for(exc))
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
        if st.kalman is not None:
            table.add_row("weight (kg)", f"{st.kalman.x[0]:.2f} ± {st.kalman.weight_std:.2f}")
            table.add_row("trend (kg/week)", f"{st.kalman.x[1] * 7:+.3f}")
            table.add_row("as of", st.kalman.timestamp.isoformat())
        table.add_row(
            "adapting",
            f"{st.adaptation.is_adapting} (factor {st.adaptation.adaptation_factor:.2f})",
        )
        table.add_row("last reset", text(f"{st.last_reset_type} at {st.last_reset_at}"))
        table.add_row("accepted readings", str(st.accepted_count))
        table.add_row("version", str(st.version))
        console.print(table)
        try:
            rows = store.history(user_id)[-last:]
        except StateCorruptionError as exc:
            _fail(f"the stored readings of user {user_id} cannot be read: {exc}", ExitCode.STORAGE)
        except WeightstreamError as exc:
            _fail(exc, exit_code_for(exc))
        hist = Table(title="last readings")
        for col in ("time", "source", "kg", "verdict", "reason", "filtered"):
            hist.add_column(col)
        for row in rows:
            m, r = row.measurement, row.result
            hist.add_row(
                m.timestamp.isoformat(),
                text(m.source),
                f"{m.weight_kg:.2f}",
                text(r.verdict),
                text(r.reason),
                "" if r.filtered_weight is None else f"{r.filtered_weight:.2f}",
            )
        console.print(hist)
    finally:
        store.close()


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


@app.command()
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
    cfg = _config(config)
    store = _open_store(ctx, db, cfg, create=False)
    try:
        audits = _guard(lambda: store.audits(user_id=user, outcome=outcome))
    finally:
        store.close()
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


@app.command()
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
            _fail(f"--since takes an ISO date or time, got {since!r}", ExitCode.USAGE)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    cfg = _config(config)
    store = _open_store(ctx, db, cfg, create=False)
    try:
        result = _guard(lambda: compute_stats(store, start))
    finally:
        store.close()
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


@app.command()
def recover(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user to rebuild from history.")],
    db: DbOpt = Path("weightstream.db"),
    config: ConfigOpt = None,
    apply: Annotated[bool, typer.Option("--apply", help="Replace the live state.")] = False,
) -> None:
    """Rebuild a user's state by replaying stored history; show the difference; --apply it.

    Example: weightstream recover 001ADB5640A54EF2A092E20915E0FB81 --apply
    """
    from weightstream.replay import rebuild_user

    cfg = _config(config)
    store = _open_store(ctx, db, cfg, create=False)
    try:
        rebuild = _guard(lambda: rebuild_user(store, user_id, cfg))
        if rebuild.readings == 0:
            err.print(Text.assemble("no stored readings for user ", text(user_id)))
            raise typer.Exit(int(ExitCode.UNKNOWN_USER))
        diffs = rebuild.differences()
        console.print(
            f"replayed {rebuild.readings} readings; {len(rebuild.changed)} results would change"
        )
        console.print(
            text(
                "rebuilt state equals live state"
                if not diffs
                else "differs in: " + ", ".join(diffs)
            )
        )
        if apply and (diffs or rebuild.changed):
            stored = _guard(lambda: _apply_recovery(store, user_id, cfg, rebuild))
            console.print(f"applied: state version {stored.version if stored else '-'}")
    finally:
        store.close()


def _apply_recovery(store: Any, user_id: str, cfg: Config, rebuild: Any) -> Any:
    """Store the rebuilt state; a live row that does not decode is replaced as a repair."""
    from weightstream.errors import StateCorruptionError
    from weightstream.repair import load_checked, repair_user
    from weightstream.replay import apply_rebuild
    from weightstream.resets.validator import StateValidator

    v = cfg.validation
    validator = StateValidator(min_weight_kg=v.min_weight_kg, max_weight_kg=v.max_weight_kg)
    try:
        load_checked(store, user_id, validator)
    except StateCorruptionError as exc:
        return repair_user(store, user_id, cfg, exc, validator=validator)
    return apply_rebuild(store, rebuild)


@app.command()
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
        _fail(
            f"unknown scenario {scenario!r}; one of {', '.join(synthmod.SCENARIOS)}",
            ExitCode.USAGE,
        )
    rows = synthmod.write_stream(
        users, per_user, seed, out, truth, scenario=scenario, ids=not no_ids
    )
    console.print(text(f"wrote {rows} rows to {out}" + (f" and truth to {truth}" if truth else "")))


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the effective configuration (file + environment + defaults) as TOML.

    Example: WEIGHTSTREAM_RESETS__HARD_GAP_DAYS=21 weightstream config > my.toml
    """
    from weightstream.config import to_toml

    sys.stdout.write(to_toml(_config(config)))


def main(*, store_class: type[SQLiteStore] | None = None) -> None:
    """Run the command line: the crash points and chaos of this run come from the environment.

    In listing mode (``WEIGHTSTREAM_FAULT=list``) the hit counts are written to stderr when
    the command ends, however it ends (a SIGKILL at a crash point aside).
    """
    try:
        faults = FaultPoints.from_environ(os.environ)
    except ValueError as exc:
        err.print(error_text(exc), highlight=False)
        sys.exit(int(ExitCode.CONFIG))
    try:
        app(obj=Wiring(faults=faults, store_class=store_class))
    finally:
        faults.report(sys.stderr)


if __name__ == "__main__":
    main()
