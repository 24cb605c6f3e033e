"""Configuration: defaults, TOML file, environment overrides, degenerate values refused (F2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from weightstream.config import Config, load_config
from weightstream.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WEIGHTSTREAM_* variable of the calling shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("WEIGHTSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def toml(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a TOML config file and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "weightstream.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_defaults_load():
    """With no file and no environment the documented defaults are in force."""
    cfg = load_config()
    assert cfg == Config()
    assert cfg.filter.measurement_var == 0.64
    assert cfg.filter.q_weight == 0.02
    assert cfg.resets.hard_gap_days == 30.0
    assert cfg.resets.soft_threshold_kg == 3.0
    assert cfg.resets.soft_cooldown_days == 3.0
    assert cfg.resets.transactional is True
    assert cfg.rules.gate_sigma < cfg.rules.adapting_gate_sigma
    assert cfg.validation.min_weight_kg < cfg.validation.max_weight_kg
    assert cfg.store.allow_unsafe_durability is False


def test_toml_file_overrides_defaults(toml):
    """Values in the TOML file replace the defaults; untouched keys keep theirs."""
    path = toml(
        "[filter]\nmeasurement_var = 1.21\n\n"
        "[resets]\nhard_gap_days = 45\ntransactional = false\n\n"
        "[resets.soft]\ninitial_var_multiplier = 3.0\nq_multiplier = 2.0\n"
        "adaptation_readings = 4\nadaptation_days = 2.0\ndecay_readings = 1.5\n"
    )
    cfg = load_config(path)
    assert cfg.filter.measurement_var == 1.21
    assert cfg.filter.q_weight == 0.02
    assert cfg.resets.hard_gap_days == 45.0
    assert cfg.resets.transactional is False
    assert cfg.resets.soft.adaptation_readings == 4
    assert cfg.resets.hard == Config().resets.hard


def test_environment_overrides_default(monkeypatch: pytest.MonkeyPatch):
    """WEIGHTSTREAM_RESETS__TRANSACTIONAL=false turns the transactional resets off."""
    monkeypatch.setenv("WEIGHTSTREAM_RESETS__TRANSACTIONAL", "false")
    cfg = load_config()
    assert cfg.resets.transactional is False
    assert cfg.resets.hard_gap_days == 30.0


def test_environment_beats_toml_file(monkeypatch: pytest.MonkeyPatch, toml):
    """The environment takes precedence over the TOML file, and keywords over both."""
    path = toml("[resets]\ntransactional = true\nhard_gap_days = 40\n")
    monkeypatch.setenv("WEIGHTSTREAM_RESETS__TRANSACTIONAL", "false")
    cfg = load_config(path)
    assert cfg.resets.transactional is False
    assert cfg.resets.hard_gap_days == 40.0
    monkeypatch.setenv("WEIGHTSTREAM_FILTER__MEASUREMENT_VAR", "2.5")
    assert load_config(path).filter.measurement_var == 2.5
    cfg = load_config(path, filter={"measurement_var": 0.9})
    assert cfg.filter.measurement_var == 0.9


def test_config_is_frozen():
    """A loaded config cannot be changed in place."""
    cfg = load_config()
    with pytest.raises(ValidationError):
        cfg.filter.measurement_var = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[filter]\nmeasurement_var = 0.0\n", "filter.measurement_var"),
        ("[filter]\nq_weight = -0.01\n", "filter.q_weight"),
        ("[filter]\nq_trend = -1e-5\n", "filter.q_trend"),
        ("[filter]\nq_weight = nan\n", "filter.q_weight"),
        ("[filter]\nmeasurement_var = inf\n", "filter.measurement_var"),
        ("[filter]\ninitial_weight_var = -inf\n", "filter.initial_weight_var"),
        ("[rules]\ngate_sigma = nan\n", "rules.gate_sigma"),
        ("[validation]\nmin_weight_kg = 500.0\nmax_weight_kg = 500.0\n", "min_weight_kg"),
        ("[validation]\nmin_weight_kg = 300.0\nmax_weight_kg = 100.0\n", "min_weight_kg"),
        ("[filter]\nmeasurment_var = 0.5\n", "measurment_var"),
        ("[resets]\nhard_gap = 10\n", "hard_gap"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("[sources.multipliers]\npatient-device = 0.0\n", "patient-device"),
    ],
)
def test_degenerate_or_unknown_values_refused(toml, text: str, key: str):
    """F2: R = 0, Q < 0, NaN, inf, min >= max weight, an unknown key: ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_config(toml(text))
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("WEIGHTSTREAM_FILTER__MEASUREMENT_VAR", "0", "measurement_var"),
        ("WEIGHTSTREAM_FILTER__Q_WEIGHT", "nan", "q_weight"),
        ("WEIGHTSTREAM_FILTER__Q_TREND", "-1", "q_trend"),
        ("WEIGHTSTREAM_RULES__GATE_SIGMA", "inf", "gate_sigma"),
    ],
)
def test_degenerate_environment_values_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, key: str
):
    """F2: a degenerate value from the environment is refused the same way as from a file."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert key in str(info.value)


def test_unknown_keyword_refused():
    """An unknown keyword override is a ConfigError naming it, not silently ignored."""
    with pytest.raises(ConfigError) as info:
        load_config(filtr={"q_weight": 0.1})
    assert "filtr" in str(info.value)


def test_missing_file_is_config_error(tmp_path: Path):
    """A config path that does not exist is a ConfigError naming the path."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert "nope.toml" in str(info.value)


def test_directory_is_config_error(tmp_path: Path):
    """A directory given as the config file is a ConfigError."""
    with pytest.raises(ConfigError):
        load_config(tmp_path)


def test_malformed_toml_is_config_error(toml):
    """A file that is not TOML is a ConfigError, not a parser exception."""
    with pytest.raises(ConfigError):
        load_config(toml("[filter\nmeasurement_var = = 1\n"))
