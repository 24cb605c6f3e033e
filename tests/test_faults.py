"""Crash points and chaos are an injected object (issue 12): inert by default, armed by the CLI.

The environment variables are read by ``FaultPoints.from_environ`` (which only the command line
calls), never by the modules at import; a store, processor or ``process_file`` that is given
no faults has none. The split-unit negative control lives in ``weightstream.testing``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from weightstream.config import Config
from weightstream.faults import LISTING_PREFIX, NO_FAULTS, ChaosFault, FaultPoints
from weightstream.pipeline import process_file
from weightstream.processor import Processor
from weightstream.store.base import UnitOfWork
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream
from weightstream.testing import FakeClock, SplitUnitStore, measurement


def _listing() -> FaultPoints:
    return FaultPoints.from_environ({"WEIGHTSTREAM_FAULT": "list"})


def test_the_default_does_nothing_and_counts_nothing() -> None:
    """NO_FAULTS never fires, never raises chaos and lists no hit."""
    NO_FAULTS.crash_point("store.after_begin")
    NO_FAULTS.chaos("reset")
    assert NO_FAULTS.hits() == {}
    stream = io.StringIO()
    NO_FAULTS.report(stream)
    assert stream.getvalue() == ""


def test_an_armed_point_kills_at_its_kth_hit_only() -> None:
    """``point:k`` calls the kill at the k-th hit of that point, not before, not at others."""
    killed: list[int] = []
    faults = FaultPoints(crash_at=("reset.kalman", 3), kill=lambda: killed.append(1))
    for _ in range(2):
        faults.crash_point("reset.kalman")
        faults.crash_point("store.after_begin")
    assert killed == []
    faults.crash_point("reset.kalman")
    assert killed == [1]
    faults.crash_point("reset.kalman")
    assert killed == [1]


def test_listing_reports_every_hit_as_one_json_line() -> None:
    """A listing run writes ``WEIGHTSTREAM_FAULT_POINTS {json}`` with sorted names."""
    faults = _listing()
    faults.crash_point("b")
    faults.crash_point("a")
    faults.crash_point("b")
    stream = io.StringIO()
    faults.report(stream)
    assert stream.getvalue() == LISTING_PREFIX + '{"a": 1, "b": 2}\n'


@pytest.mark.parametrize("spec", ["point", "point:0", ":3", "point:x", "point:-1"])
def test_a_malformed_fault_spec_is_refused(spec: str) -> None:
    """WEIGHTSTREAM_FAULT must be ``point:k`` (k >= 1) or ``list``."""
    with pytest.raises(ValueError, match="WEIGHTSTREAM_FAULT"):
        FaultPoints.from_environ({"WEIGHTSTREAM_FAULT": spec})


def test_chaos_is_seeded_and_without_chaos_keeps_the_hit_counts() -> None:
    """The same seed gives the same failures; the chaos-free view shares the hit counts."""
    env = {"WEIGHTSTREAM_CHAOS": "reset:0.5", "WEIGHTSTREAM_CHAOS_SEED": "7",
           "WEIGHTSTREAM_FAULT": "list"}

    def draws(faults: FaultPoints) -> list[bool]:
        out = []
        for _ in range(40):
            try:
                faults.chaos("reset")
                out.append(False)
            except ChaosFault:
                out.append(True)
        return out

    first, second = FaultPoints.from_environ(env), FaultPoints.from_environ(env)
    assert draws(first) == draws(second) and any(draws(first))
    quiet = first.without_chaos()
    assert not any(draws(quiet))
    quiet.crash_point("reset.kalman")
    assert first.hits() == {"reset.kalman": 1}


def test_the_environment_reaches_nothing_that_was_not_given_faults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the variables set, a library run has no chaos and lists nothing (no env reads)."""
    monkeypatch.setenv("WEIGHTSTREAM_FAULT", "list")
    monkeypatch.setenv("WEIGHTSTREAM_CHAOS", "reset:1.0,persist:1.0")
    src = tmp_path / "export.csv"
    write_stream(5, 10, 3, src, None, scenario="mixed")
    with SQLiteStore(tmp_path / "ws.db") as store:
        summary = process_file(src, store, Config())
        assert store.faults is NO_FAULTS
    assert summary.reset_outcomes.get("committed", 0) >= 5  # no reset failed by chaos
    assert NO_FAULTS.hits() == {}


def test_given_faults_reach_the_store_the_pipeline_and_the_resets(tmp_path: Path) -> None:
    """One object handed to the store and to process_file counts every layer's points."""
    faults = _listing()
    src = tmp_path / "export.csv"
    write_stream(5, 10, 3, src, None, scenario="mixed")
    with SQLiteStore(tmp_path / "ws.db", faults=faults) as store:
        process_file(src, store, Config(), out=tmp_path / "out.csv", faults=faults)
    hits = faults.hits()
    assert {"store.after_begin", "pipeline.before_commit", "pipeline.results_written",
            "reset.kalman", "reset.persist"} <= set(hits)
    assert hits["reset.kalman"] >= 5  # one initial reset per user at least


def test_a_processor_passes_its_faults_to_the_reset_sequence(tmp_path: Path) -> None:
    """Chaos given to a Processor fails its resets (then the fallback takes the reading)."""
    with SQLiteStore(tmp_path / "ws.db") as store:
        p = Processor(store, Config(), clock=FakeClock(),
                      faults=FaultPoints(chaos={"persist": 1.0}))
        result = p.process_one(measurement(80.0, 0))
    assert result.reset_outcome is not None and result.reset_outcome != "committed"


def test_split_unit_store_commits_a_unit_as_two_transactions(tmp_path: Path) -> None:
    """The negative control's store: results first, then state and position, a point between."""
    faults = _listing()
    db = tmp_path / "ws.db"
    with SplitUnitStore(db, faults=faults) as store:
        p = Processor(store, Config(), clock=FakeClock())
        p.process_one(measurement(80.0, 0))
    assert faults.hits()["store.between_split"] == 1
    assert faults.hits()["store.after_commit"] == 2
    with SQLiteStore(db, faults=_listing()) as plain:
        plain.commit(UnitOfWork())  # an empty unit: nothing, no point reached
        assert plain.faults.hits() == {}


# -- the command line: the one place that reads the variables ---------------------------------


def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    from weightstream import cli

    monkeypatch.setattr("sys.argv", ["weightstream", *args])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    out, err = capsys.readouterr()
    code = caught.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_cli_lists_the_points_of_its_run_when_the_command_ends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``WEIGHTSTREAM_FAULT=list``: the CLI writes the listing line to stderr as it ends."""
    monkeypatch.setenv("WEIGHTSTREAM_FAULT", "list")
    code, out, err = _main(monkeypatch, capsys, "config")
    assert code == 0 and "[resets]" in out
    assert err.splitlines()[-1] == LISTING_PREFIX + "{}"


def test_cli_refuses_a_malformed_fault_spec_with_the_configuration_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed ``WEIGHTSTREAM_FAULT`` is one error line and exit 78, not a traceback."""
    monkeypatch.setenv("WEIGHTSTREAM_FAULT", "store.after_begin")
    code, _, err = _main(monkeypatch, capsys, "config")
    assert code == 78
    assert "WEIGHTSTREAM_FAULT must be" in err and "Traceback" not in err


def test_only_a_plain_unarmed_fault_points_is_inert() -> None:
    """``inert`` (what the reset sequence skips its points by) holds only for the class
    itself with nothing armed, counted or drawn: a subclass may act at any point."""

    class Watching(FaultPoints):
        def crash_point(self, name: str) -> None:  # pragma: no cover - never called here
            pass

    assert NO_FAULTS.inert and FaultPoints().inert
    assert not FaultPoints(crash_at=("reset.kalman", 1)).inert
    assert not FaultPoints(listing=True).inert
    assert not FaultPoints(chaos={"reset": 0.5}).inert
    assert FaultPoints(chaos={"reset": 0.0}).inert  # a rate of 0 draws nothing
    assert not Watching().inert
    assert FaultPoints(chaos={"reset": 0.5}).without_chaos().inert
