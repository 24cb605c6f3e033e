"""The report's values: adaptation periods, reset marks and offsets, from a store built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightstream.config import Config, OffsetConfig
from weightstream.processor import Processor
from weightstream.report.data import CohortTally
from weightstream.report.site import Renderer, user_page_name, write_site
from weightstream.store.memory import MemoryStore
from weightstream.testing import measurement


def _store(config: Config) -> MemoryStore:
    """One user: a first reading, 14 daily readings, a 40-day gap (hard reset), 3 more."""
    store = MemoryStore()
    p = Processor(store, config)
    days = [*range(15), 55, 56, 57]
    for i, day in enumerate(days):
        source = "https://api.iglucose.com" if i % 3 == 0 else "patient-device"
        p.process_one(measurement(80.0 - 0.05 * day, float(day), source=source))
    return store


def test_adaptation_follows_the_reset_manager() -> None:
    """An adaptation period runs from each committed reset to the reading at which the reset
    manager ends it, and the last one is still going on."""
    config = Config()
    store = _store(config)
    report = Renderer(store, config).user_report("u1")
    assert [m.reset_type for m in report.resets] == ["initial", "hard"]
    assert [m.category for m in report.resets] == ["committed", "committed"]
    first, second = report.adaptation
    # initial: 10 readings or 10 days, whichever first: the daily reading of day 10 ends it.
    assert config.resets.initial.adaptation_readings == 10
    assert (first.end - first.start).total_seconds() / 86400 == 10.0
    assert first.reset_type == "initial" and not first.ongoing
    assert second.reset_type == "hard" and second.ongoing
    state = store.load_state("u1")
    assert state is not None and state.adaptation.is_adapting


def test_offsets_in_use_are_shown(tmp_path: Path) -> None:
    """With an [offsets] section the user's page and the cohort list the offsets of the
    sources it has; without one they say none."""
    offsets = OffsetConfig(
        reference="patient-device",
        sources={"https://api.iglucose.com": 1.2, "care-team-upload": -0.4},
        intervals={"https://api.iglucose.com": (0.9, 1.5, 321)},
    )
    config = Config(offsets=offsets)
    store = _store(config)
    renderer = Renderer(store, config)
    report = renderer.user_report("u1")
    assert [(o.name, o.kg, o.count) for o in report.offsets] == [
        ("https://api.iglucose.com", 1.2, 321)
    ]
    assert any(r.offset_kg == 1.2 for r in report.readings)
    tally = CohortTally()
    tally.add(report)
    cohort = renderer.cohort(tally)
    assert {o.name for o in cohort.offsets} == {"https://api.iglucose.com", "care-team-upload"}
    write_site(store, config, tmp_path)
    html = (tmp_path / "users" / user_page_name("u1")).read_text(encoding="utf-8")
    assert "+1.20" in html and "+0.90 to +1.50" in html
    assert "patient-device" in (tmp_path / "cohort.html").read_text(encoding="utf-8")
    plain = Config()
    write_site(_store(plain), plain, tmp_path / "plain")
    page = (tmp_path / "plain" / "users" / user_page_name("u1")).read_text(encoding="utf-8")
    assert "<h2>Source offsets in use</h2>\n<p>none</p>" in page


def test_unknown_user_has_no_page(tmp_path: Path, read_page: Any) -> None:
    """Users asked for that have no rows get no page and no index line."""
    config = Config()
    summary = write_site(_store(config), config, tmp_path, users=["u1", "ghost"])
    assert summary.users == 1
    assert [row[0] for row in read_page(tmp_path / "index.html")["users"]] == ["u1"]


def test_summary_and_tally_need_no_smoother(site: Any) -> None:
    """Without the smoother (the live index and cohort) every user's summary, resets and
    counted rows are what the page with it has."""
    store = site.open()
    try:
        renderer = Renderer(store, Config())
        for user_id in store.users()[:10]:
            full = renderer.user_report(user_id)
            live = renderer.user_report(user_id, smooth=False)
            assert live.summary == full.summary
            assert live.resets == full.resets and live.adaptation == full.adaptation
            key = [
                (r.reading_id, r.verdict, r.reason, r.source, r.filtered_weight)
                for r in full.readings
            ]
            assert [
                (r.reading_id, r.verdict, r.reason, r.source, r.filtered_weight)
                for r in live.readings
            ] == key
    finally:
        store.close()
