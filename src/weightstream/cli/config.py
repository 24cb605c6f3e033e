"""``weightstream config``: print the effective configuration as TOML."""

from __future__ import annotations

import sys

import typer

from weightstream.cli._common import ConfigOpt, load

__all__ = ["register"]


def show_config(config: ConfigOpt = None) -> None:
    """Print the effective configuration (file + environment + defaults) as TOML.

    Example: WEIGHTSTREAM_RESETS__HARD_GAP_DAYS=21 weightstream config > my.toml
    """
    from weightstream.config import to_toml

    sys.stdout.write(to_toml(load(config)))


def register(app: typer.Typer) -> None:
    """Add ``config`` to ``app``."""
    app.command("config")(show_config)
