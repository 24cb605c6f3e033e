"""A small processed store and the report site written from it (seeded synth, chaos on)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from weightstream.config import Config
from weightstream.faults import FaultPoints
from weightstream.pipeline import process_file
from weightstream.report.site import SiteSummary, write_site
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream

#: Seeds of the report's synthetic exports.
SEED = 20261215
_DATA = re.compile(r'<script type="application/json" id="page-data">(.*?)</script>', re.S)


@dataclass(frozen=True)
class Site:
    """A processed database, the exports it came from, and the site written from it."""

    db: Path
    exports: tuple[Path, ...]
    out: Path
    summary: SiteSummary

    def open(self) -> SQLiteStore:
        return SQLiteStore.from_config(Config().store, self.db, create=False)


def page_data(path: Path) -> Any:
    """The JSON a written page embeds (its only data)."""
    match = _DATA.search(path.read_text(encoding="utf-8"))
    assert match is not None, f"no page data in {path}"
    return json.loads(match.group(1))


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """24 users of ``mixed`` (chaos on resets: rollbacks and fallbacks) and 6 of
    ``duplicates``, processed into one SQLite store, and the report of every user."""
    base = tmp_path_factory.mktemp("report")
    mixed, dups = base / "mixed.csv", base / "dups.csv"
    write_stream(24, 40, SEED, mixed)
    write_stream(6, 30, SEED + 1, dups, scenario="duplicates")
    db = base / "w.db"
    chaos = FaultPoints.from_environ(
        {"WEIGHTSTREAM_CHAOS": "reset:0.2", "WEIGHTSTREAM_CHAOS_SEED": str(SEED)}
    )
    store = SQLiteStore.from_config(Config().store, db, create=True)
    try:
        process_file(mixed, store, Config(), faults=chaos)
        process_file(dups, store, Config())
        out = base / "site"
        summary = write_site(store, Config(), out, inputs=[mixed, dups])
    finally:
        store.close()
    return Site(db, (mixed, dups), out, summary)


@pytest.fixture(scope="session")
def read_page() -> Any:
    """``read_page(path)``: the JSON a written page embeds."""
    return page_data


#: Chromium switches beyond Playwright's own: no background networking, nothing first-run.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
]


@pytest.fixture(scope="session")
def chromium() -> tuple[str, list[str]]:
    """(path, switches) of Debian's chromium; missing, the test fails (``make test-deps``)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run `make test-deps` (scripts/install-chromium)")
    return path, list(CHROMIUM_ARGS)
