"""The shipped example configuration stays in sync with the defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from weightstream.config import Config, load_config, to_toml

ROOT = Path(__file__).resolve().parents[1]


def test_example_file_names_every_default() -> None:
    """weightstream.example.toml loads to exactly the default configuration."""
    assert load_config(ROOT / "weightstream.example.toml") == Config()


def test_example_file_is_the_dump_of_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's TOML body is what `weightstream config` prints for the defaults."""
    for name in list(os.environ):
        if name.startswith("WEIGHTSTREAM_"):
            monkeypatch.delenv(name)
    text = (ROOT / "weightstream.example.toml").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()
    assert body == to_toml(Config()).strip()


def test_dump_round_trips_a_changed_config(tmp_path: Path) -> None:
    """A non-default configuration written with to_toml loads back equal."""
    changed = Config(resets={"hard_gap_days": 21.0, "transactional": False},
                     sources={"manual": ("patient-upload",)})
    path = tmp_path / "roundtrip.toml"
    path.write_text(to_toml(changed), encoding="utf-8")
    assert load_config(path) == changed
