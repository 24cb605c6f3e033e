"""The command line is a package of command modules, each registering its commands on the app."""

from __future__ import annotations

import subprocess
import sys

from weightstream import cli


def test_command_modules_register_their_commands_in_help_order() -> None:
    """Each module in ``cli.COMMAND_MODULES`` adds its commands; ``--help`` lists them in order."""
    assert all(callable(getattr(m, "register", None)) for m in cli.COMMAND_MODULES)
    names = [c.name or c.callback.__name__ for c in cli.app.registered_commands if c.callback]
    assert names[:7] == ["process", "state", "resets", "stats", "recover", "synth", "config"]


def test_package_runs_as_a_module() -> None:
    """``python -m weightstream.cli`` is the same command line as the ``weightstream`` script."""
    res = subprocess.run(
        [sys.executable, "-m", "weightstream.cli", "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "[resets]" in res.stdout
