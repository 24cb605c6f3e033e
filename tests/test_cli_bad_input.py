"""Careless and hostile input through the CLI (issue 10): nothing destroyed, failures typed,
input text shown as text. Each test names the case of the issue it covers; each failed on main
before the fix. The README's bad-input table lists the same cases and exit codes.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import stat
from pathlib import Path

import pytest

from weightstream import results_file
from weightstream.errors import StateCorruptionError

HEADER = "id,user_id,effectiveDateTime,source_type,weight,unit"
CONTROL = {chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))} - {"\n"}


def _export(path: Path, users: list[str] | None = None, source: str = "patient-device") -> Path:
    users = users or ["u1", "u2"]
    lines = [HEADER]
    for i, user in enumerate(users):
        for day in (1, 2):
            lines.append(f"r{i}-{day},{user},2024-03-0{day} 08:00:00,{source},{80 + i}.0,kg")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def processed(tmp_path: Path, cli_fast) -> dict[str, Path]:
    """An export processed once into ws.db (results in results.csv), and a second export."""
    export, db, out = _export(tmp_path / "export.csv"), tmp_path / "ws.db", tmp_path / "results.csv"
    res = cli_fast("process", export, "--db", db, "--out", out)
    assert res.returncode == 0, res.stderr
    more = _export(tmp_path / "more.csv", ["u3", "u4"])
    return {"export": export, "db": db, "out": out, "more": more, "dir": tmp_path}


def _snapshot(paths: list[Path]) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in paths:
        st = os.lstat(p) if os.path.lexists(p) else None
        out[str(p)] = (None if st is None else
                       (stat.S_IFMT(st.st_mode), p.read_bytes() if stat.S_ISREG(st.st_mode)
                        and p.exists() else None))
    return out


# -- data destroyed -------------------------------------------------------------------------


def _target(kind: str, p: dict[str, Path]) -> tuple[str, Path]:
    d = p["dir"]
    if kind == "out=db":
        return "--out", p["db"]
    if kind == "out=input":
        return "--out", p["more"]
    if kind == "metrics=db":
        return "--metrics-file", p["db"]
    if kind == "metrics=input":
        return "--metrics-file", p["more"]
    if kind == "out=db-wal":
        return "--out", Path(f"{p['db']}-wal")
    if kind == "out=db-shm":
        return "--out", Path(f"{p['db']}-shm")
    if kind == "out=symlink-to-db":
        (d / "link.csv").symlink_to(p["db"])
        return "--out", d / "link.csv"
    if kind == "out=hardlink-to-input":
        os.link(p["more"], d / "hard.csv")
        return "--out", d / "hard.csv"
    if kind == "out=directory":
        (d / "adir").mkdir()
        return "--out", d / "adir"
    if kind == "out=fifo":
        os.mkfifo(d / "fifo")
        return "--out", d / "fifo"
    if kind == "out=device":
        try:
            os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError as exc:
            pytest.skip(f"cannot create a device node: {exc}")
        return "--out", d / "null"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "out=db", "out=input", "metrics=db", "metrics=input", "out=db-wal", "out=db-shm",
    "out=symlink-to-db", "out=hardlink-to-input", "out=directory", "out=fifo", "out=device",
])
def test_an_output_that_would_destroy_something_is_refused_before_any_work(
    processed, cli_fast, db_iterdump, kind
):
    """Case: `process more.csv --db prod.db --out prod.db` replaced the database (and --out =
    input, --metrics-file = database, --out = a device). Every output path that is the input,
    the database or its side files, a link to them, or an existing non-regular file is refused
    with one line and exit 64 before anything is processed; nothing changes on disk."""
    option, target = _target(kind, processed)
    watched = [processed["db"], processed["more"], target]
    dump = db_iterdump(processed["db"])
    before = _snapshot(watched)
    res = cli_fast("process", processed["more"], "--db", processed["db"], option, target)
    assert res.returncode == 64, (res.returncode, res.stdout, res.stderr)
    line = _one_line(res.stderr)
    assert "refusing" in line and option in line, line
    assert _snapshot(watched) == before
    assert db_iterdump(processed["db"]) == dump  # nothing of more.csv was processed


def test_out_naming_the_configuration_file_is_refused(processed, cli_fast):
    """The configuration file is kept like the input: `--out` naming it exits 64, unchanged."""
    cfg = processed["dir"] / "my.toml"
    cfg.write_text("[resets]\nhard_gap_days = 30.0\n")
    res = cli_fast("process", processed["more"], "--db", processed["db"], "--config", cfg,
                   "--out", cfg)
    assert res.returncode == 64
    assert "configuration" in _one_line(res.stderr)
    assert cfg.read_text() == "[resets]\nhard_gap_days = 30.0\n"


@pytest.mark.parametrize("kind", ["dangling-symlink", "fifo"])
def test_a_database_path_that_is_not_a_file_exits_74_creating_nothing(tmp_path, cli_fast,
                                                                      kind):
    """Case: a dangling `--db` symlink created its target; a device as `--db` got a `-journal`
    beside it. Through the CLI: one line, exit 74, nothing created."""
    export, db = _export(tmp_path / "export.csv"), tmp_path / "ws.db"
    if kind == "fifo":
        os.mkfifo(db)
    else:
        db.symlink_to(tmp_path / "target.db")
    res = cli_fast("process", export, "--db", db)
    assert res.returncode == 74, res.stderr
    assert "ws.db" in _one_line(res.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.csv", "ws.db"]


def test_the_same_path_for_out_and_metrics_file_is_refused(processed, cli_fast):
    """Two outputs naming one file would overwrite each other: exit 64 before any work."""
    target = processed["dir"] / "both.out"
    res = cli_fast("process", processed["more"], "--db", processed["db"],
                   "--out", target, "--metrics-file", target)
    assert res.returncode == 64
    assert "--metrics-file" in _one_line(res.stderr)
    assert not target.exists()


@pytest.mark.parametrize("where", ["missing-dir", "under-a-file"])
def test_out_where_no_file_can_be_created_is_refused_before_the_database(
    tmp_path, cli_fast, where
):
    """Case: `--out` in a missing directory (or under a regular file, a stand-in for a
    read-only place when running as root) failed only after all the work, with a traceback.
    Now: exit 64, one line, and no database is created."""
    export, db = _export(tmp_path / "export.csv"), tmp_path / "ws.db"
    if where == "missing-dir":
        out = tmp_path / "no-such-dir" / "results.csv"
    else:
        (tmp_path / "plain.txt").write_text("x")
        out = tmp_path / "plain.txt" / "results.csv"
    res = cli_fast("process", export, "--db", db, "--out", out)
    assert res.returncode == 64, res.stderr
    assert "--out" in _one_line(res.stderr)
    assert not db.exists()


def test_a_results_file_fed_back_as_input_is_refused_unless_mapped(processed, cli_fast,
                                                                   db_iterdump):
    """Case: a results file fed back in was accepted as an export (content duplicates counted
    again). Its header is recognised: exit 65 with one line, nothing processed. Mapping the
    columns with --column says it is meant, and it is processed."""
    dump = db_iterdump(processed["db"])
    res = cli_fast("process", processed["out"], "--db", processed["db"])
    assert res.returncode == 65, res.stderr
    assert "results file" in _one_line(res.stderr)
    assert db_iterdump(processed["db"]) == dump
    res = cli_fast("process", processed["out"], "--db", processed["db"], "--json",
                   "--column", "weight=weight_kg", "--column", "id=reading_id",
                   "--column", "user_id=user_id", "--column", "timestamp=timestamp")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["duplicate"] == summary["rows"] == 4  # the same ids: nothing twice


# -- failures after the work ----------------------------------------------------------------


@pytest.mark.parametrize(("err", "code"), [(errno.ENOSPC, 73), (errno.EIO, 74)])
def test_results_write_failing_after_the_work_is_one_line_73_or_74(
    tmp_path, cli_fast, monkeypatch, err, code
):
    """Case: `--out` on a full disk failed after all the work with a traceback and exit 1.
    Now a full disk is exit 73 and another I/O error 74, each one line, no traceback; the work
    is committed, so a rerun with a good --out processes nothing and writes the file."""
    export, db, out = _export(tmp_path / "export.csv"), tmp_path / "ws.db", tmp_path / "r.csv"
    if err == errno.ENOSPC and os.path.exists("/dev/full"):
        monkeypatch.setattr(results_file, "_create_temp",
                            lambda tmp: os.open("/dev/full", os.O_WRONLY))
    else:
        def broken(tmp: Path) -> int:
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr(results_file, "_create_temp", broken)
    res = cli_fast("process", export, "--db", db, "--out", out)
    assert res.returncode == code, (res.returncode, res.stderr)
    line = _one_line(res.stderr)
    assert "r.csv" in line and "Traceback" not in res.stderr
    monkeypatch.undo()
    res = cli_fast("process", export, "--db", db, "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["processed_now"] == 0
    assert len(out.read_text().splitlines()) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_metrics_file_write_failing_after_the_work_is_one_line_73(tmp_path, cli_fast,
                                                                   monkeypatch):
    """Case (same, for --metrics-file): a full disk gives exit 73 and one line, no traceback."""
    from weightstream.metrics import MetricsObserver

    def full(self, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MetricsObserver, "write_textfile", full)
    export, db = _export(tmp_path / "export.csv"), tmp_path / "ws.db"
    res = cli_fast("process", export, "--db", db, "--metrics-file", tmp_path / "m.prom")
    assert res.returncode == 73
    assert "m.prom" in _one_line(res.stderr)


def test_metrics_port_in_use_or_out_of_range_is_a_usage_error(tmp_path, cli_fast):
    """Case: `--metrics-port` already in use, or out of range, gave a traceback. Now: exit 64,
    one line naming the option, before any database is created."""
    export, db = _export(tmp_path / "export.csv"), tmp_path / "ws.db"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = cli_fast("process", export, "--db", db, "--metrics-port", port)
        assert res.returncode == 64, res.stderr
        assert "--metrics-port" in _one_line(res.stderr)
    for bad in ("70000", "0", "-1"):
        res = cli_fast("process", export, "--db", db, "--metrics-port", bad)
        assert res.returncode == 64, (bad, res.stderr)
        assert "--metrics-port" in _one_line(res.stderr)
    assert not db.exists()


# -- text from the input on the terminal and in the results file ---------------------------


HOSTILE_USERS = ["[/x]", "[link=https://evil.example]click[/link]", "\x1b[2Jwiped",
                 "\x1b]0;title\x07osc", "[bold]b", "=1+2"]


@pytest.fixture
def hostile_db(tmp_path, cli_fast) -> dict[str, Path]:
    export = _export(tmp_path / "hostile.csv", HOSTILE_USERS,
                     source="[i]src[/i]")
    db, out = tmp_path / "ws.db", tmp_path / "results.csv"
    res = cli_fast("process", export, "--db", db, "--out", out)
    assert res.returncode == 0, res.stderr
    return {"export": export, "db": db, "out": out, "dir": tmp_path}


def _shown(res) -> str:
    text = res.stdout + res.stderr
    assert not CONTROL & set(text), sorted(CONTROL & set(text))
    assert "Traceback" not in text
    return text


def test_markup_in_user_ids_is_shown_as_text_by_resets(hostile_db, cli_fast):
    """Case: a user id `[/x]` made `weightstream resets` crash with MarkupError; `[link=...]`
    rewrote what was shown; ESC[2J and OSC reached the terminal. Now every id is listed as
    written (controls as visible escapes) and nothing reaches the terminal."""
    res = cli_fast("resets", "--db", hostile_db["db"])
    assert res.returncode == 0, res.stderr
    shown = _shown(res)
    assert "6 reset transactions" in shown
    assert "[/x]" in shown and "[link=" in shown and "[bold]b" in shown  # not read as markup
    assert "\\x1b[2J" in shown  # the ESC made visible, not sent
    res = cli_fast("resets", "--db", hostile_db["db"], "--json")
    assert res.returncode == 0
    assert sorted(a["user_id"] for a in json.loads(_shown(res))) == sorted(HOSTILE_USERS)


@pytest.mark.parametrize("user", HOSTILE_USERS)
def test_markup_and_controls_in_a_user_id_are_shown_as_text_by_state(hostile_db, cli_fast,
                                                                     user):
    """Case: `weightstream state '[/x]'` crashed with MarkupError. Now the state and the last
    readings (the source is markup too) are printed as text, with no control character."""
    res = cli_fast("state", user, "--db", hostile_db["db"])
    assert res.returncode == 0, res.stderr
    shown = _shown(res)
    assert "weight (kg)" in shown and "last readings" in shown
    from weightstream._display import clean

    assert f"user {clean(user)}" in shown  # the title: the id as stored, controls escaped
    assert "[i]src[/i]" in shown  # the source, not read as markup


def test_hostile_text_in_error_messages_and_recover_is_shown_as_text(hostile_db, cli_fast):
    """Error lines and `recover` echo paths and user ids as text: `[/x].csv` missing, `recover`
    of an unknown `[/x]y` and of a hostile user neither crash nor emit control characters."""
    res = cli_fast("process", hostile_db["dir"] / "[/x].csv", "--db", hostile_db["db"])
    assert res.returncode == 66 and "[/x].csv" in _shown(res)
    res = cli_fast("recover", "[/x]y", "--db", hostile_db["db"])
    assert res.returncode == 1 and "[/x]y" in _shown(res)
    res = cli_fast("recover", "\x1b[2Jwiped", "--db", hostile_db["db"])
    assert res.returncode == 0, res.stderr
    _shown(res)
    res = cli_fast("state", "\x1b]0;t\x07[/nope]", "--db", hostile_db["db"])
    assert res.returncode == 1 and "[/nope]" in _shown(res)


def test_results_csv_neutralises_formulas_and_raw_keeps_them(hostile_db, cli_fast,
                                                             results_of):
    """Case: formula cells reached the results CSV. By default `=1+2` is written `'=1+2`;
    `--raw` writes it as stored. Numbers are untouched either way."""
    rows = results_of(hostile_db["out"])
    users = {r["user_id"] for r in rows}
    assert "'=1+2" in users and "=1+2" not in users
    assert all(float(r["weight_kg"]) > 0 for r in rows)
    raw = hostile_db["dir"] / "raw.csv"
    res = cli_fast("process", hostile_db["export"], "--db", hostile_db["db"], "--out", raw,
                   "--raw", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows"] == len(rows)
    assert "=1+2" in {r["user_id"] for r in results_of(raw)}


# -- a corrupt stored state, shown --------------------------------------------------------


def test_state_of_a_state_that_does_not_decode_is_a_warning_exit_74(processed, cli_fast,
                                                                    monkeypatch):
    """Case: `weightstream state` of a stored state that does not decode (the store raises
    StateCorruptionError) must warn, without a traceback, and exit 74."""
    from weightstream.store.sqlite import SQLiteStore

    def corrupt(self, user_id):
        raise StateCorruptionError("buffer is not JSON", user_id=user_id)

    monkeypatch.setattr(SQLiteStore, "load_state", corrupt)
    res = cli_fast("state", "u1", "--db", processed["db"])
    assert res.returncode == 74
    line = _one_line(res.stderr)
    assert "corrupt" in line and "u1" in line and "recover" in line
    assert "weight (kg)" not in res.stdout and "nan" not in res.stdout


@pytest.mark.parametrize("column", ["x0", "p00"])
def test_state_of_a_damaged_state_never_shows_nan(processed, cli_fast, column):
    """Case: `weightstream state` showed a corrupt state as `nan ± 0.73` with no warning. With
    the row's weight (or its variance) lost (NULL: how SQLite stores NaN), `state` says the
    state is corrupt and exits 74, whether the store refuses the row on load or the validator
    finds it broken."""
    conn = sqlite3.connect(processed["db"])
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute(f"UPDATE user_states SET {column} = NULL WHERE user_id = 'u1'")
    conn.commit()
    conn.close()
    res = cli_fast("state", "u1", "--db", processed["db"])
    assert res.returncode == 74, (res.stdout, res.stderr)
    assert "corrupt" in _one_line(res.stderr)
    assert "weight (kg)" not in res.stdout and "nan" not in res.stdout.lower()
