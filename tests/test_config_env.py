"""Environment overrides with an unknown section are refused like unknown keys (issue 10)."""

from __future__ import annotations

import os

import pytest

from weightstream.config import load_config
from weightstream.errors import ConfigError, exit_code_for


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WEIGHTSTREAM_* variable of the calling shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("WEIGHTSTREAM_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "name",
    ["WEIGHTSTREAM_RESET__TRANSACTIONAL", "weightstream_reset__transactional",
     "WEIGHTSTREAM_FILTERS__Q_WEIGHT", "WEIGHTSTREAM___TRANSACTIONAL"],
)
def test_unknown_section_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Case: `WEIGHTSTREAM_RESET__TRANSACTIONAL=false` (section is RESETS) was silently ignored.

    Now it is a ConfigError (exit 78) whose message names the variable.
    """
    monkeypatch.setenv(name, "false")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert name in str(caught.value)
    assert exit_code_for(caught.value) == 78


def test_unknown_key_of_a_known_section_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown key in a real section stays an error (exit 78)."""
    monkeypatch.setenv("WEIGHTSTREAM_RESETS__TRANSACTIONALL", "false")
    with pytest.raises(ConfigError):
        load_config()


def test_known_variables_and_other_weightstream_settings_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real override applies; variables without `__` (crash points, chaos) are not config."""
    monkeypatch.setenv("WEIGHTSTREAM_RESETS__TRANSACTIONAL", "false")
    monkeypatch.setenv("WEIGHTSTREAM_CHAOS_SEED", "3")
    monkeypatch.setenv("WEIGHTSTREAM_FAULT", "list")
    assert load_config().resets.transactional is False


def test_cli_exits_78_naming_the_variable(monkeypatch: pytest.MonkeyPatch, cli_fast) -> None:
    """`weightstream config` with a misspelt section exits 78 with one line naming it."""
    monkeypatch.setenv("WEIGHTSTREAM_RESET__TRANSACTIONAL", "false")
    res = cli_fast("config")
    assert res.returncode == 78
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "WEIGHTSTREAM_RESET__TRANSACTIONAL" in lines[0], res.stderr
