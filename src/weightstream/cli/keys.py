"""``weightstream keys create|list|revoke``: the service's API keys.

A key is printed once, by ``create``, on standard output alone (so ``KEY=$(weightstream keys
create ...)`` captures it); the database keeps only its hash (see
:mod:`weightstream.service.keys`). ``list`` shows ids, scopes, labels and times, never a key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from weightstream._display import text
from weightstream.cli._common import DbOpt, console, err, fail, guard

__all__ = ["register", "keys_app"]

keys_app = typer.Typer(
    name="keys",
    help="Create, list and revoke the service's API keys.",
    no_args_is_help=True,
)


@keys_app.command("create")
def create(
    db: DbOpt = Path("weightstream.db"),
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="read and/or write (repeat the option); default read."),
    ] = None,
    label: Annotated[str, typer.Option("--label", help="A note on whose key it is.")] = "",
) -> None:
    """Create a key and print it once (only its hash is stored).

    Example: weightstream keys create --db weightstream.db --scope read --scope write
    """
    from weightstream.errors import ExitCode
    from weightstream.service.keys import open_keys, parse_scopes

    try:
        scopes = parse_scopes(scope or ["read"])
    except ValueError as exc:
        fail(exc, ExitCode.USAGE)
    store = guard(lambda: open_keys(db, create=True))
    try:
        created = guard(lambda: store.create(scopes, label))
    finally:
        store.close()
    names = ",".join(sorted(s.value for s in created.key.scopes))
    err.print(
        text(f"created key {created.key.key_id} ({names}); it is shown only now"),
        highlight=False,
    )
    print(created.secret)


@keys_app.command("list")
def list_keys(
    db: DbOpt = Path("weightstream.db"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List keys: id, scopes, label, created, revoked (never the key).

    Example: weightstream keys list --db weightstream.db
    """
    from weightstream.service.keys import open_keys

    store = guard(lambda: open_keys(db, create=False))
    try:
        found = guard(store.list)
    finally:
        store.close()
    rows = [
        {
            "key_id": k.key_id,
            "scopes": sorted(s.value for s in k.scopes),
            "label": k.label,
            "created_at": k.created_at.isoformat(),
            "revoked_at": None if k.revoked_at is None else k.revoked_at.isoformat(),
        }
        for k in found
    ]
    if json_out:
        console.print_json(json.dumps(rows), ensure_ascii=True)
        return
    table = Table(title=f"{len(rows)} API keys")
    for col in ("id", "scopes", "label", "created", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            text(str(r["key_id"])),
            text(",".join(r["scopes"])),  # type: ignore[arg-type]
            text(str(r["label"])),
            text(str(r["created_at"])),
            text(str(r["revoked_at"] or "")),
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from create or list).")],
    db: DbOpt = Path("weightstream.db"),
) -> None:
    """Revoke a key: the service refuses it within a second.

    Example: weightstream keys revoke 3f9a0c12b7de --db weightstream.db
    """
    from weightstream.errors import ExitCode
    from weightstream.service.keys import open_keys

    store = guard(lambda: open_keys(db, create=False))
    try:
        done = guard(lambda: store.revoke(key_id))
    finally:
        store.close()
    if not done:
        err.print(text(f"no active key with id {key_id}"), highlight=False)
        raise typer.Exit(int(ExitCode.UNKNOWN_USER))
    console.print(text(f"revoked key {key_id}"))


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group to ``app``."""
    app.add_typer(keys_app, name="keys")
