"""``weightstream recover``: rebuild a user's state from stored history; ``--apply`` it.

A live state row that does not decode is replaced as a repair
(:func:`weightstream.repair.repair_user`); otherwise the rebuild is stored as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from weightstream._display import text
from weightstream.cli._common import ConfigOpt, DbOpt, console, err, existing_store, guard
from weightstream.config import Config
from weightstream.errors import ExitCode

__all__ = ["register"]


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

    with existing_store(ctx, db, config) as (cfg, store):
        rebuild = guard(lambda: rebuild_user(store, user_id, cfg))
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
            stored = guard(lambda: _apply_recovery(store, user_id, cfg, rebuild))
            console.print(f"applied: state version {stored.version if stored else '-'}")


def _apply_recovery(store: Any, user_id: str, cfg: Config, rebuild: Any) -> Any:
    from weightstream.repair import store_rebuild
    from weightstream.resets.validator import StateValidator

    v = cfg.validation
    validator = StateValidator(min_weight_kg=v.min_weight_kg, max_weight_kg=v.max_weight_kg)
    return store_rebuild(store, user_id, cfg, rebuild, validator=validator)


def register(app: typer.Typer) -> None:
    """Add ``recover`` to ``app``."""
    app.command()(recover)
