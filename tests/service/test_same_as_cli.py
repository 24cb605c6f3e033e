"""Readings through the API get the results the same readings get through the CLI."""

from __future__ import annotations

import csv
import random
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from weightstream.config import Config
from weightstream.ingest import MalformedRow, open_csv
from weightstream.metrics import read_counters
from weightstream.model import Measurement, order_key
from weightstream.service.readings import ReadingIn, to_reading

#: Fields compared (row numbers and invalid rows' messages differ by design: a file names
#: its line, the API the reading's place in the request).
DECIDED = (
    "verdict",
    "reason",
    "timestamp",
    "source",
    "weight_kg",
    "filtered_weight",
    "trend_kg_week",
    "std_kg",
    "reset_type",
    "reset_outcome",
    "quality",
    "offset_kg",
)


def _json_readings(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Each data row of the export as the JSON reading an API client would send (as text)."""
    out = []
    for raw in open_csv(path):
        assert not isinstance(raw, MalformedRow)
        body: dict[str, Any] = {
            "user_id": raw.user_id,
            "timestamp": raw.timestamp,
            "weight": raw.weight,
        }
        for name, value in (("unit", raw.unit), ("source", raw.source), ("id", raw.id)):
            if value is not None:
                body[name] = value
        out.append((raw.line, body))
    return out


def _cli_results(cli, export: Path, tmp: Path) -> dict[int, dict[str, str]]:
    db, out = tmp / "cli.db", tmp / "cli.csv"
    res = cli("process", export, "--db", db, "--out", out)
    assert res.returncode == 0, res.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        return {int(r["row"]): r for r in csv.DictReader(handle)}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def test_one_batch_gets_the_results_file(svc, cli, small_export, tmp_path) -> None:
    """All rows of an export in one request: each answer equals its row of the results file."""
    expected = _cli_results(cli, small_export.path, tmp_path)
    readings = _json_readings(small_export.path)
    answers = svc.post([body for _, body in readings]).json()["results"]
    assert len(answers) == len(expected)
    for (line, _), got in zip(readings, answers, strict=True):
        want = expected[line]
        assert got["verdict"] == want["verdict"], line
        if got["verdict"] == "invalid":
            assert got["reason"] == want["reason"]
            continue
        assert {k: _cell(got[k]) for k in DECIDED} == {k: want[k] for k in DECIDED}, line
        assert got["reading_id"] == want["reading_id"]


def test_one_request_per_reading_in_time_order_gets_the_results_file(
    svc, cli, small_export, tmp_path
) -> None:
    """One reading per request, in the CLI's processing order: the same results."""
    expected = _cli_results(cli, small_export.path, tmp_path)
    readings = _json_readings(small_export.path)
    valid = [(line, body) for line, body in readings if expected[line]["verdict"] != "invalid"]
    # The CLI's processing order: user, then order_key (time, then content), then line.
    now = datetime.now(UTC)

    def order(item: tuple[int, dict[str, Any]]) -> tuple[Any, ...]:
        m = to_reading(ReadingIn(**item[1]), config=Config(), now=now)
        assert isinstance(m, Measurement)
        return (m.user_id, order_key(m), item[0])

    valid.sort(key=order)
    for line, body in valid:
        (got,) = svc.post(body).json()["results"]
        want = expected[line]
        assert {k: _cell(got[k]) for k in DECIDED} == {k: want[k] for k in DECIDED}, line


def test_random_order_in_small_batches_stores_the_same_history(
    svc, cli, small_export, tmp_path
) -> None:
    """Rows in a random order, a few per request: the stored readings equal the CLI's."""
    seed = 20261202
    print("seed", seed)
    _cli_results(cli, small_export.path, tmp_path)
    readings = [body for _, body in _json_readings(small_export.path)]
    random.Random(seed).shuffle(readings)
    for i in range(0, len(readings), 7):
        assert svc.post(readings[i : i + 7]).status_code == 200

    def stored(db: Path) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(db)
        cols = (
            "key, user_id, ts, verdict, reason, filtered_weight, trend_kg_week, std_kg, reset_type"
        )
        rows = sorted(conn.execute(f"SELECT {cols} FROM readings"))
        conn.close()
        return rows

    assert stored(svc.db) == stored(tmp_path / "cli.db")


def test_two_workers_give_every_reading_its_cli_result_once(
    live_workers, cli, small_export, tmp_path
) -> None:
    """``serve --workers 2``: each user's readings, one request each on a new connection (so
    a user's readings reach both workers), sent for all users at once: every answer is the
    results file's, every reading is stored once, and ``/metrics`` on any worker counts the
    readings of both."""
    expected = _cli_results(cli, small_export.path, tmp_path)
    now = datetime.now(UTC)
    by_user: dict[str, list[tuple[int, dict[str, Any], tuple[Any, ...]]]] = {}
    for line, body in _json_readings(small_export.path):
        if expected[line]["verdict"] == "invalid":
            continue
        m = to_reading(ReadingIn(**body), config=Config(), now=now)
        assert isinstance(m, Measurement)
        by_user.setdefault(m.user_id, []).append((line, body, (order_key(m), line)))
    assert len(by_user) > 1
    mismatches: list[int] = []

    def send(readings: list[tuple[int, dict[str, Any], tuple[Any, ...]]]) -> None:
        for line, body, _ in sorted(readings, key=lambda r: r[2]):
            r = httpx.post(
                live_workers.url + "/v1/measurements",
                json=body,
                headers=live_workers.auth(),
                timeout=60,
            )
            (got,) = r.json()["results"]
            want = expected[line]
            if {k: _cell(got[k]) for k in DECIDED} != {k: want[k] for k in DECIDED}:
                mismatches.append(line)

    with ThreadPoolExecutor(len(by_user)) as pool:
        list(pool.map(send, by_user.values()))
    assert mismatches == []
    sent = sum(map(len, by_user.values()))
    copies = sum(r["verdict"] == "duplicate" for r in expected.values())
    conn = sqlite3.connect(live_workers.db)
    (stored,) = conn.execute("SELECT count(*) FROM readings").fetchone()
    conn.close()
    assert stored == sent - copies  # a duplicate gets its result and is not stored again
    for _ in range(6):  # new connections: either worker answers, with both workers' counts
        counters = read_counters(httpx.get(live_workers.url + "/metrics", timeout=10).text)
        counted = sum(v for (name, _), v in counters.items() if name == "weightstream_readings_total")
        assert counted == sent
    assert live_workers.stop() == -signal.SIGTERM
    assert live_workers.log_text().count("Application shutdown complete.") == 2
