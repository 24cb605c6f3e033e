"""Success metrics: the exported counters agree with the store's records, and `stats` reports them."""

from __future__ import annotations

import json
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config
from weightstream.metrics import MetricsObserver, read_counters
from weightstream.model import ResetType
from weightstream.processor import Processor
from weightstream.stats import compute_stats
from weightstream.store.sqlite import SQLiteStore
from weightstream.testing import FakeClock, FaultyResetManager, measurement

USERS = [f"ZQ{n:04d}PATIENT" for n in range(6)]
Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class Run:
    db: Path
    store: SQLiteStore
    observer: MetricsObserver
    counters: dict[Key, float]
    reading_ids: set[str]


def _run(tmp_path: Path) -> Run:
    """Six users: daily readings, a 49-day gap (HARD), a far-off manual entry (SOFT: 18 kg, beyond
    resets.manual_reset_sigma), a duplicate.

    The first five reset transactions raise; three failures in a row open the breaker, so
    later resets are refused until the (fake) clock passes the breaker timeout.
    """
    cfg = Config()
    clock = FakeClock()
    db = tmp_path / "ws.db"
    store = SQLiteStore(db, create=True)
    observer = MetricsObserver(known_sources=cfg.sources.multipliers)
    processor = Processor(
        store, cfg, clock=clock, observer=observer,
        manager=FaultyResetManager(cfg, "kalman_raises", times=5),
    )
    reading_ids: set[str] = set()
    for user in USERS:
        readings = [measurement(80.0 + 0.1 * day, day, user=user) for day in range(8)]
        readings.append(measurement(82.0, 57, user=user))  # gap of 49 days: HARD
        readings.append(measurement(100.0, 61, user=user, source="care-team-upload"))  # SOFT
        readings.append(readings[3])  # duplicate
        for m in readings:
            reading_ids.add(m.reading_id)
            processor.process_one(m)
            clock.advance(1)
        clock.advance(100)  # past the breaker timeout (60 s): the next reset is a probe
    counters = read_counters(observer.render().decode())
    return Run(db, store, observer, counters, reading_ids)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    r = _run(tmp_path_factory.mktemp("stats"))
    yield r
    r.store.close()


def _family(counters: dict[Key, float], name: str) -> Counter[frozenset[tuple[str, str]]]:
    return Counter({labels: v for (n, labels), v in counters.items() if n == name and v})


def _labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


def test_run_exercises_every_path(run: Run) -> None:
    """The scenario really has committed, rolled-back and breaker-refused resets of every type."""
    audits = run.store.audits()
    assert {a.outcome for a in audits} == {"committed", "rolled_back", "breaker_open"}
    assert {a.reset_type for a in audits} == set(ResetType)
    assert any(a.reset_type is ResetType.SOFT and a.outcome == "committed" for a in audits)
    assert run.store.recovery_attempts()


def test_counters_equal_store_records_exactly(run: Run) -> None:
    """Every reset, transaction, rollback, recovery and reading counter equals the store's count."""
    audits = run.store.audits()
    c = run.counters

    resets = Counter(
        _labels(type=str(a.reset_type),
                outcome="committed" if a.outcome == "committed" else str(a.fallback or "failed"))
        for a in audits
    )
    assert _family(c, "weightstream_resets_total") == resets

    transactions = Counter(
        _labels(type=str(a.reset_type), result=a.outcome)
        for a in audits if a.outcome in ("committed", "rolled_back")
    )
    assert _family(c, "weightstream_reset_transactions_total") == transactions

    rollbacks = Counter(
        _labels(operation=a.failed_operation or "unknown")
        for a in audits if a.outcome == "rolled_back"
    )
    assert _family(c, "weightstream_transaction_rollbacks_total") == rollbacks

    recoveries = Counter(
        _labels(strategy=r.strategy, result="success" if r.succeeded else "failure")
        for r in run.store.recovery_attempts()
    )
    assert _family(c, "weightstream_recovery_attempts_total") == recoveries

    stored_results = run.store.connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert sum(_family(c, "weightstream_readings_total").values()) == stored_results
    assert stored_results == len(USERS) * 11

    attempted = sum(transactions.values())
    assert c[("weightstream_reset_duration_seconds_count", frozenset())] == attempted
    verified = sum(_family(c, "weightstream_rollback_verifications_total").values())
    assert verified == sum(rollbacks.values())


def test_compute_stats_rates_equal_metric_rates(run: Run) -> None:
    """compute_stats gives the same ratios the recording rules compute from the counters."""
    c = run.counters
    tx = _family(c, "weightstream_reset_transactions_total")
    tx_total = sum(tx.values())
    committed = sum(v for labels, v in tx.items() if ("result", "committed") in labels)
    rollbacks = sum(_family(c, "weightstream_transaction_rollbacks_total").values())
    rec = _family(c, "weightstream_recovery_attempts_total")
    rec_ok = sum(v for labels, v in rec.items() if ("result", "success") in labels)
    ver = _family(c, "weightstream_rollback_verifications_total")
    restored = ver[_labels(result="restored")]
    opens = sum(v for (n, labels), v in c.items()
                if n == "weightstream_breaker_transitions_total" and ("to_state", "open") in labels)

    stats = compute_stats(run.store, None)

    assert 0 < stats.transaction_success_rate < 1  # type: ignore[operator]
    assert stats.transaction_success_rate == pytest.approx(committed / tx_total, abs=1e-12)
    assert stats.rollback_rate == pytest.approx(rollbacks / tx_total, abs=1e-12)
    assert stats.recovery_success_rate == pytest.approx(rec_ok / sum(rec.values()), abs=1e-12)
    assert stats.rollback_success_rate == pytest.approx(restored / sum(ver.values()), abs=1e-12)
    assert 1 <= stats.breaker_opens <= opens  # a lower bound on the true number of opens
    assert stats.breaker_refused > 0


def test_compute_stats_since_excludes_older_records(run: Run) -> None:
    """Records before ``since`` are left out; a window after the last record has no figures."""
    audits = run.store.audits()
    cut = audits[len(audits) // 2].at
    later = compute_stats(run.store, cut)
    assert later.audits == sum(1 for a in audits if a.at >= cut) < len(audits)
    empty = compute_stats(run.store, max(a.at for a in audits).replace(year=2999))
    assert empty.audits == 0
    assert empty.transaction_success_rate is None
    assert all(f.status == "n/a" for f in empty.figures())


def test_stats_cli_prints_each_figure_with_target_and_status(run: Run) -> None:
    """`weightstream stats` shows every figure beside its target and met / not met."""
    result = CliRunner().invoke(app, ["stats", "--db", str(run.db)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    expected = compute_stats(run.store, None).figures()
    lines = result.output.splitlines()
    for figure in expected:
        line = next(line for line in lines if figure.name in line)
        assert figure.target in line
        assert figure.status in ("met", "not met")
        status_cell = line.rstrip(" │").rsplit("│", 1)[-1].strip()
        assert status_cell == figure.status
    assert "not met" in result.output  # injected faults: transaction success is below 99.5 %


def test_stats_cli_json_parses(run: Run) -> None:
    """`weightstream stats --json` is valid JSON with the same figures as compute_stats."""
    result = CliRunner().invoke(app, ["stats", "--db", str(run.db), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    stats = compute_stats(run.store, None)
    assert data["transaction_success_rate"] == pytest.approx(stats.transaction_success_rate)
    assert [(f["name"], f["status"]) for f in data["figures"]] == [
        (f.name, f.status) for f in stats.figures()
    ]


def test_stats_cli_since_and_help(run: Run) -> None:
    """--since filters (a future date leaves nothing: n/a), bad dates exit 64, --help has an example."""
    runner = CliRunner()
    future = runner.invoke(app, ["stats", "--db", str(run.db), "--json", "--since", "2999-01-01"])
    assert future.exit_code == 0, future.output
    assert json.loads(future.output)["audits"] == 0
    bad = runner.invoke(app, ["stats", "--db", str(run.db), "--since", "yesterday"])
    assert bad.exit_code == 64
    helped = runner.invoke(app, ["stats", "--help"], env={"COLUMNS": "200"})
    assert any(line.strip().startswith("Example:") for line in helped.output.splitlines())


FORBIDDEN_LABELS = {"user", "user_id", "patient", "reading_id", "id"}


def test_no_metric_carries_a_user_or_reading(run: Run) -> None:
    """After a full run, no label is named like a user/reading id and no value is one."""
    assert run.store.users() == sorted(USERS)
    seen_values: set[str] = set()
    for family in run.observer.registry.collect():
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (family.name, sample.labels)
            seen_values.update(sample.labels.values())
    assert seen_values  # labels were inspected
    assert not seen_values & set(USERS)
    assert not seen_values & run.reading_ids
    assert not any(user in value for value in seen_values for user in USERS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_process_metrics_port_serves_and_releases_the_port(tmp_path: Path) -> None:
    """`process --metrics-port P` runs, writes the metrics file, and frees port P afterwards."""
    csv = tmp_path / "in.csv"
    rows = ["user_id,timestamp,weight,unit,source"]
    rows += [f"ZQ9{u},2025-01-{d + 1:02d}T08:00:00Z,{80 + d * 0.1:.1f},kg,patient-device"
             for u in range(2) for d in range(5)]
    csv.write_text("\n".join(rows) + "\n")
    port = _free_port()
    prom = tmp_path / "ws.prom"
    result = CliRunner().invoke(app, [
        "process", str(csv), "--db", str(tmp_path / "p.db"),
        "--metrics-port", str(port), "--metrics-file", str(prom), "--json",
    ])
    assert result.exit_code == 0, result.output
    counters = read_counters(prom.read_text())
    assert sum(_family(counters, "weightstream_readings_total").values()) == 10
    with socket.socket() as s:  # the server's listening socket was closed, not just stopped
        s.bind(("127.0.0.1", port))
