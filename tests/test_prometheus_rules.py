"""The Prometheus rules are valid, pass their promtool unit tests and match metrics.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from weightstream.metrics import MetricsObserver, read_counters
from weightstream.model import RecoveryAttempt

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "weightstream.rules.yml"
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
AT = datetime(2024, 3, 1, tzinfo=UTC)
ALERTS = ("WeightstreamResetFailureRateHigh", "WeightstreamBreakerFlapping",
          "WeightstreamRollbackRateHigh", "WeightstreamResetSlow",
          "WeightstreamWalGrowing")  # fmt: skip


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: `make test` installs it (make test-deps runs "
            "scripts/install-promtool: Debian's prometheus package); these tests must not be "
            "skipped."
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules(promtool: str) -> None:
    """`promtool check rules` accepts the rules file."""
    done = run(promtool, "check", "rules", str(RULES))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SUCCESS" in output


def test_promtool_unit_tests_pass(promtool: str) -> None:
    """`promtool test rules` passes every unit-test file under deploy/prometheus/tests."""
    assert UNIT_TESTS, "no promtool unit tests found"
    done = run(promtool, "test", "rules", *map(str, UNIT_TESTS))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("SUCCESS") == len(UNIT_TESTS), output
    assert "FAILED" not in output


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """Each alert of the rules file is shown firing in one unit test and silent in another."""
    rules = RULES.read_text()
    defined = set(re.findall(r"^\s*- alert: (\w+)\s*$", rules, flags=re.M))
    assert set(ALERTS) <= defined
    firing: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for block in re.split(r"\n\s*- eval_time:", path.read_text())[1:]:
            match = re.search(r"alertname: (\w+)", block)
            assert match is not None
            name = match.group(1)
            assert name in defined, f"{path.name} tests unknown alert {name}"
            head = block.split("- eval_time:")[0]
            (silent if re.search(r"exp_alerts: \[\]", head) else firing).add(name)
    assert defined <= firing, defined - firing
    assert defined <= silent, defined - silent


def test_alerts_have_severity_and_runbook() -> None:
    """Every alert carries a severity label and summary/description with a runbook hint."""
    rules = RULES.read_text()
    blocks = re.split(r"\n\s*- alert: ", rules)[1:]
    assert len(blocks) >= len(ALERTS)
    readme = (PROMETHEUS / "README.md").read_text().lower()
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"severity: (warning|critical)", block), name
        assert "summary:" in block and "description:" in block, name
        assert f"README.md#{name.lower()}" in block, name
        assert f"## {name.lower()}" in readme, f"README has no runbook section for {name}"


def test_rules_only_use_metrics_that_metrics_py_exports() -> None:
    """Every weightstream_* series named in the rules is exported by MetricsObserver."""
    observer = MetricsObserver(known_sources=())
    observer.recovery_attempted(RecoveryAttempt("u", "r", "history", True, "", AT))
    observer.store_committed(0.001, 1)
    exported = {name for name, _ in read_counters(observer.render().decode())}
    exported |= {family.name for family in observer.registry.collect()}
    text = RULES.read_text() + "".join(p.read_text() for p in UNIT_TESTS)
    used = set(re.findall(r"\b(weightstream_[a-z_]+)\b", text))
    assert used, "no weightstream_ series found in the rules"
    assert used <= exported, used - exported
