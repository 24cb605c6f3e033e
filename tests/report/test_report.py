"""The report's pages hold exactly what the store holds, and work as an offline site."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from weightstream.config import Config
from weightstream.model import Measurement, Verdict
from weightstream.processor import Processor
from weightstream.report import charts
from weightstream.report.data import input_extras, outcome_category
from weightstream.report.site import PLOTLY_ASSET, Renderer, user_page_name, write_site
from weightstream.stats import compute_stats
from weightstream.store.memory import MemoryStore


def read_page_text(html: str) -> Any:
    import json

    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def _points(figure: dict) -> list[tuple[str, str, float, float]]:
    """(reading id, verdict, stored kg, plotted y) of every point of the readings traces."""
    out: list[tuple[str, str, float, float]] = []
    for trace in figure["data"]:
        if trace.get("meta", {}).get("role") != "readings":
            continue
        for custom, y in zip(trace["customdata"], trace["y"], strict=True):
            out.append((custom[0], trace["meta"]["verdict"], custom[1], y))
    return out


def test_plotted_points_equal_stored_results(read_page: Any, site: Any) -> None:
    """Every user's page plots exactly its stored readings (ids, verdicts, weights) and
    duplicate/invalid rows, and its filtered line is the stored filtered weights in order."""
    store = site.open()
    extras = input_extras(store, site.exports, Config())
    checked = 0
    try:
        for user_id in store.users():
            figure = read_page(site.out / "users" / user_page_name(user_id))["figure"]
            history = store.history(user_id)
            expected = Counter(
                (row.measurement.reading_id, str(row.result.verdict), row.measurement.weight_kg)
                for row in history
            )
            for r in extras.get(user_id, []):
                if r.time is not None:
                    expected[(r.reading_id, r.verdict, r.weight_kg)] += 1
            points = _points(figure)
            assert Counter(p[:3] for p in points) == expected
            lo, hi = figure["layout"]["yaxis"]["range"]
            for _, verdict, kg, y in points:
                assert y == kg or (y in (lo, hi) and (kg is None or not lo < kg < hi)), verdict
            accepted = [row for row in history if row.result.verdict is Verdict.ACCEPTED]
            line = next(
                t for t in charts.resolved(figure)["data"] if t["meta"]["role"] == "filtered"
            )
            assert line["y"] == [row.result.filtered_weight for row in accepted]
            assert line["x"] == [charts.plot_time(row.measurement.timestamp) for row in accepted]
            checked += 1
    finally:
        store.close()
    assert checked == site.summary.users == 30


def test_every_kind_of_row_is_shown(read_page: Any, site: Any) -> None:
    """The site shows rejected, duplicate and invalid rows, and resets of several outcomes."""
    verdicts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for page in (site.out / "users").glob("*.html"):
        for trace in read_page(page)["figure"]["data"]:
            meta = trace.get("meta", {})
            if meta.get("role") == "readings":
                verdicts[meta["verdict"]] += len(trace["x"])
            if meta.get("role") == "resets":
                outcomes[meta["outcome"]] += len(trace["x"])
    assert {"accepted", "rejected", "duplicate", "invalid"} <= set(verdicts)
    assert {"committed", "fallback"} <= set(outcomes)


def test_figures_are_valid_plotly(read_page: Any, site: Any) -> None:
    """The figures written as plain dicts load into plotly's own Figure (validated)."""
    pages = sorted((site.out / "users").glob("*.html"))[:5]
    for page in pages:
        go.Figure(charts.resolved(read_page(page)["figure"]))
    for figure in read_page(site.out / "cohort.html")["figures"].values():
        go.Figure(figure)


def test_cohort_shows_the_stats_figures(site: Any) -> None:
    """The cohort page's reset safety figures are compute_stats' own, each with its target."""
    store = site.open()
    try:
        stats = compute_stats(store)
    finally:
        store.close()
    html = site.out.joinpath("cohort.html").read_text(encoding="utf-8")
    for f in stats.figures():
        if f.value is None:
            shown = "n/a"
        elif f.unit == "%":
            shown = f"{100 * f.value:.2f}%"
        else:
            shown = f"{f.value:.3f} {f.unit}"
        row = re.search(
            rf"<td>{re.escape(f.name)}</td><td class=\"num\">([^<]*)</td><td>([^<]*)</td>", html
        )
        assert row is not None, f.name
        assert row.group(1) == shown
        assert row.group(2) == f.target.replace(">", "&gt;").replace("<", "&lt;")


def test_index_lists_every_user_with_a_link(read_page: Any, site: Any) -> None:
    """The index lists every user with readings and links to an existing page of each."""
    rows = read_page(site.summary.index)["users"]
    assert len(rows) == 30
    for row in rows:
        assert (site.out / row[7]).is_file()
        assert row[7] == f"users/{user_page_name(row[0])}"
        assert row[2] is None or 0.0 <= row[2] <= 1.0


def test_site_is_offline_and_library_once(site: Any) -> None:
    """The library is written once; every page loads it by a relative path and names no
    other script or URL to fetch."""
    assert (site.out / PLOTLY_ASSET).stat().st_size > 1_000_000
    assert sorted(p.name for p in site.out.rglob("*.js")) == ["plotly.min.js"]
    for page in [
        site.out / "index.html",
        site.out / "cohort.html",
        *(site.out / "users").glob("*.html"),
    ]:
        html = page.read_text(encoding="utf-8")
        srcs = re.findall(r'<script src="([^"]+)"', html)
        prefix = "../" if page.parent.name == "users" else ""
        assert srcs == [prefix + PLOTLY_ASSET]
        assert not re.search(r'(src|href)="(https?:)?//', html)
        assert len(html.encode("utf-8")) < 1_000_000


def test_hostile_text_stays_text(read_page: Any, tmp_path: Path) -> None:
    """A user id, source and reading id holding markup cannot close the page's data block or
    inject an element; the page gives the exact id back."""
    from datetime import UTC, datetime

    nasty = "</script><script>alert(1)</script><b>&"
    store = MemoryStore()
    processor = Processor(store, Config())
    for i, kg in enumerate([80.0, 80.4, 79.9, 120.0]):
        processor.process_one(
            Measurement(
                f"{nasty}{i}", nasty, datetime(2025, 1, 1 + i, 8, tzinfo=UTC), kg, "kg", kg, nasty
            )
        )
    summary = write_site(store, Config(), tmp_path)
    page = tmp_path / "users" / user_page_name(nasty)
    html = page.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html
    assert "<b>&" not in html
    assert read_page(page)["user_id"] == nasty
    assert summary.users == 1
    assert read_page(tmp_path / "index.html")["users"][0][0] == nasty
    assert "/" not in user_page_name("../../etc/passwd")[:-5]


def test_renderer_renders_one_page_per_request(read_page: Any, site: Any) -> None:
    """A page rendered from the store into a string (the live /ui/) is the written page's
    figure, given the same clock."""
    store = site.open()
    try:
        user_id = store.users()[0]
        renderer = Renderer(store, Config())
        html = renderer.render_user(renderer.user_report(user_id))
    finally:
        store.close()
    written = read_page(site.out / "users" / user_page_name(user_id))
    assert '<script type="application/json" id="page-data">' in html
    # Duplicate/invalid rows come from --input; without it the readings are the history's.
    live = read_page_text(html)
    store = site.open()
    try:
        stored = Counter(
            (r.measurement.reading_id, str(r.result.verdict)) for r in store.history(user_id)
        )
    finally:
        store.close()
    assert Counter(p[:2] for p in _points(live["figure"])) == stored
    assert len(_points(written["figure"])) >= len(_points(live["figure"]))


def test_outcome_categories() -> None:
    """Each stored reset outcome maps to one of the report's categories."""
    from weightstream.model import AuditOutcome, ResetOutcome

    assert outcome_category(AuditOutcome.COMMITTED, None) == "committed"
    assert outcome_category(AuditOutcome.ROLLED_BACK, None) == "rolled_back"
    assert outcome_category(AuditOutcome.ROLLED_BACK, ResetOutcome.RECOVERED_HISTORY) == "recovered"
    assert outcome_category(AuditOutcome.BREAKER_OPEN, None) == "breaker_open"
    assert outcome_category(None, ResetOutcome.COMMITTED) == "committed"


def test_cli_writes_the_site_and_prints_the_index(site: Any, cli_fast, tmp_path: Path) -> None:
    """``weightstream report --user`` writes that user's page and prints the index path;
    an unknown user exits 1 and --user with --all is bad usage."""
    store = site.open()
    try:
        user_id = store.users()[3]
    finally:
        store.close()
    out = tmp_path / "site"
    res = cli_fast(
        "report", "--user", user_id, "--db", site.db, "--input", site.exports[0], "--out", out
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("index.html")
    assert Path(res.stdout.strip()).is_file()
    assert [p.name for p in (out / "users").iterdir()] == [user_page_name(user_id)]
    assert cli_fast("report", "--user", "nobody", "--db", site.db, "--out", out).returncode == 1
    again = cli_fast("report", "--user", user_id, "--db", site.db, "--out", out)
    assert again.returncode == 0, again.stderr  # an earlier report is rewritten
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refused = cli_fast("report", "--all", "--db", site.db, "--out", tmp_path / "other")
    assert refused.returncode == 64 and "refusing" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    assert (
        cli_fast("report", "--user", user_id, "--all", "--db", site.db, "--out", out).returncode
        == 64
    )


def test_parallel_site_equals_serial(site: Any, tmp_path: Path, cli: Any) -> None:
    """Pages written by two worker processes (``report --jobs 2``, the real CLI in a child
    process) are the same bytes as one process writes, but for the time they were generated."""
    out = {}
    for jobs in ("1", "2"):
        out[jobs] = tmp_path / jobs
        res = cli("report", "--all", "--jobs", jobs, "--db", site.db, "--input", site.exports[0],
                  "--input", site.exports[1], "--out", out[jobs])  # fmt: skip
        assert res.returncode == 0, res.stderr
    names = [
        "index.html",
        "cohort.html",
        *(f"users/{p.name}" for p in (out["1"] / "users").iterdir()),
    ]
    assert len(names) == 32
    generated = re.compile(rb"generated [0-9: -]+UTC")
    for name in names:
        a, b = ((out[j] / name).read_bytes() for j in ("1", "2"))
        assert generated.sub(b"", a) == generated.sub(b"", b), name
    assert sorted(p.name for p in (out["2"] / "users").iterdir()) == sorted(
        names[2:][i][6:] for i in range(30)
    )
