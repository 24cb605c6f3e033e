"""Fuzz of the display paths (issue 10, I13): `state`, `resets`, `stats` (and `recover`) with
markup and control characters in every stored text field: no crash, no control character out.

A template store holds one processed reading; each example copies it and overwrites every
free-text column the commands can show (user id, source, reading id, reset trigger, failed
operation, message) with hostile text, straight in SQL: the display must be safe for whatever
is stored, whatever the input rules of the day let through. Hypothesis runs with a fixed seed
(``SEED``), so a failure reproduces as it is.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from weightstream.config import Config
from weightstream.model import Measurement
from weightstream.processor import Processor
from weightstream.store.sqlite import SQLiteStore

SEED = 20250110
#: What must never reach the output: C0 (but the newline that ends a line), DEL, C1, and the
#: bidirectional / line-separator controls that reorder or break a terminal line.
FORBIDDEN = (
    {chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))} - {"\n"}
) | set("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
SNIPPETS = [
    "[/x]", "[link=https://evil.example]", "[/link]", "[bold red]", "[/]", "\\[", "]",
    "\x1b[2J", "\x1b[31m", "\x1b]0;title\x07", "\x1b]8;;https://evil.example\x1b\\", "\x9b2J",
    "\x9d0;t\x9c", "\x07", "\x00", "\r", "\t", "\n", "\u202e", "\u2028", ":warning:",
    "=1+2", "-5", "@SUM(1)", "𝕏", "é",
]
ALPHABET = "ab []/=@+-;:\\\x1b\x07\x00\x7f\x9b\u202e"
hostile = (
    st.lists(st.one_of(st.sampled_from(SNIPPETS), st.text(ALPHABET, min_size=1, max_size=3)),
             min_size=1, max_size=5)
    .map("".join)
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one user, one reading, its result and its initial-reset audit record."""
    path = tmp_path_factory.mktemp("display-fuzz") / "template.db"
    store = SQLiteStore(path)
    processor = Processor(store, Config())
    for day in (1, 2):
        processor.process_one(Measurement(
            f"seed-{day}", "seed-user", datetime(2024, 3, day, 8, tzinfo=UTC), 80.0, "kg", 80.0,
            "patient-device"))
    store.close()
    return path


def _hostile_copy(template: Path, directory: Path, user: str, source: str, reading: str,
                  other: str) -> Path:
    db = directory / "ws.db"
    shutil.copyfile(template, db)
    conn = sqlite3.connect(db)
    with conn:
        for table in ("user_states", "last_good_states"):
            conn.execute(f"UPDATE {table} SET user_id = ?", (user,))
        conn.execute("UPDATE readings SET user_id = ?, source = ?, key = key || ?, message = ?",
                     (user, source, reading, other))
        conn.execute("UPDATE results SET user_id = ?, source = ?, reading_id = ?, message = ?",
                     (user, source, reading, other))
        conn.execute("UPDATE reset_audit SET user_id = ?, reading_id = ?, trigger = ?, "
                     "failed_operation = ?", (user, reading, other, other))
    conn.close()
    return db


def _check(res, allowed: set[int], command: str) -> str:
    shown = res.stdout + res.stderr
    bad = sorted(FORBIDDEN & set(shown))
    assert not bad, (command, bad, shown)
    assert "Traceback" not in shown, (command, shown)
    assert res.returncode in allowed, (command, res.returncode, shown)
    return shown


@seed(SEED)
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(user=hostile, source=hostile, reading=hostile, other=hostile)
def test_display_paths_show_hostile_text_as_text(template, cli_fast, user, source, reading,
                                                 other):
    """Markup and control characters in the user id, source, reading id, trigger and message:
    `state`, `resets` (table and JSON), `stats` (table and JSON) and `recover` neither crash
    nor print a control character, and JSON gives back exactly what is stored."""
    with tempfile.TemporaryDirectory() as tmp:
        db = _hostile_copy(template, Path(tmp), user, source, reading, other)
        # 74: a stored state a (stricter) decoder refuses is a warning, never a crash
        _check(cli_fast("state", "--db", db, "--", user), {0, 74}, "state")
        _check(cli_fast("state", "--db", db, "--last", "1", "--", user + "x"), {1}, "state")
        _check(cli_fast("resets", "--db", db), {0}, "resets")
        _check(cli_fast("resets", "--db", db, f"--user={user}"), {0}, "resets --user")
        listed = json.loads(_check(cli_fast("resets", "--db", db, "--json"), {0}, "json"))
        assert [(a["user_id"], a["trigger"]) for a in listed] == [(user, other)]
        _check(cli_fast("stats", "--db", db), {0}, "stats")
        json.loads(_check(cli_fast("stats", "--db", db, "--json"), {0}, "stats --json"))
        _check(cli_fast("recover", "--db", db, "--", user), {0}, "recover")
