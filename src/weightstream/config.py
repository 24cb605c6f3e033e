"""Configuration: one TOML file, every threshold named with its default, environment overrides.

Loaded with pydantic-settings. Precedence, highest first: keyword arguments, environment
variables (``WEIGHTSTREAM_<SECTION>__<KEY>``, e.g. ``WEIGHTSTREAM_RESETS__TRANSACTIONAL=false``),
the TOML file, the defaults below. Unknown keys are an error (the system this replaces silently
ignored many of its keys). Degenerate numbers (R = 0, Q < 0, NaN, inf) are refused at load with
:class:`~weightstream.errors.ConfigError`.

Why each default is what it is: see the comment on the field (figures from
``benchmarks/accuracy.py`` on the tuning seeds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from weightstream.errors import ConfigError

__all__ = [
    "Config",
    "FilterConfig",
    "SourceConfig",
    "UnitConfig",
    "ValidationConfig",
    "RuleConfig",
    "ResetBoost",
    "ResetConfig",
    "BreakerConfig",
    "ProcessingConfig",
    "StoreConfig",
    "OffsetConfig",
    "load_config",
    "load_config_text",
    "to_toml",
]

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilterConfig(_Section):
    """The local-linear-trend Kalman filter (see :mod:`weightstream.kalman`)."""

    # Day-to-day scale readings scatter by ~0.6-0.9 kg (hydration, meals, clothing).
    measurement_var: Positive = 0.64
    # Random walk of the level, kg^2 per day: water/glycogen swings beyond the trend.
    q_weight: Positive = 0.02
    # Random walk of the trend, (kg/day)^2 per day: how fast a diet's pace can change. Tuned on
    # benchmarks/accuracy.py (tune seeds): 5e-5 follows 2-8-week diet phases sooner than 2e-5
    # (lower lag and trend error on loss_regain, gap and sparse cohorts) at ~0.01 kg on plateau.
    q_trend: Positive = 5e-5
    # Prior variance at a reset, before the reset type's multiplier.
    initial_weight_var: Positive = 0.5
    initial_trend_var: Positive = 0.0025


class SourceConfig(_Section):
    """Measurement-noise multipliers per source; manual sources may trigger soft resets."""

    multipliers: dict[str, Positive] = Field(
        default_factory=lambda: {
            "care-team-upload": 0.5,
            "patient-upload": 0.7,
            "internal-questionnaire": 0.8,
            "initial-questionnaire": 0.8,
            "questionnaire": 0.8,
            "patient-device": 1.0,
            "https://connectivehealth.io": 1.5,
            "https://api.iglucose.com": 3.0,
        }
    )
    default_multiplier: Positive = 1.0
    manual: tuple[str, ...] = (
        "care-team-upload",
        "patient-upload",
        "internal-questionnaire",
        "initial-questionnaire",
        "questionnaire",
    )

    def multiplier(self, source: str) -> float:
        return self.multipliers.get(source, self.default_multiplier)

    def is_manual(self, source: str) -> bool:
        return source in self.manual


class UnitConfig(_Section):
    """Unit handling.

    ``lb_ap_is_pound``: UCUM's ``[lb_ap]`` is the apothecaries' pound (0.3732 kg), but real
    clinical exports put it on ordinary pound readings (the same instant often carries a ``kg``
    row equal to the value x 0.45359237), and nobody is weighed in apothecaries' pounds. So by
    default ``[lb_ap]`` is read as an avoirdupois pound; set False to apply UCUM literally.
    """

    lb_ap_is_pound: bool = True


class ValidationConfig(_Section):
    """Hard limits: outside them a row is ``invalid``, not an outlier."""

    min_weight_kg: Positive = 20.0
    max_weight_kg: Positive = 500.0
    # The floor of event times: readings before 1 January of this year (UTC) are
    # TIMESTAMP_TOO_OLD. 1990: connected scales and the exports they feed are far younger, so an
    # earlier date is a mistake, nearly always an epoch value misread (0, -1, or 20250122 read
    # as seconds, all in 1969-1970), never an old weight. Lower it to load older records.
    min_year: int = Field(default=1990, ge=1)
    # Scales with a wrong clock run ahead by hours; more than a day is a bad timestamp.
    max_future_skew_s: NonNegative = 86_400.0

    @model_validator(mode="after")
    def _ordered(self) -> ValidationConfig:
        if self.min_weight_kg >= self.max_weight_kg:
            raise ValueError("min_weight_kg must be below max_weight_kg")
        return self


class RuleConfig(_Section):
    """Outlier rules (see :mod:`weightstream.rules`)."""

    # Normalised innovation gate in sigmas of the predicted reading.
    gate_sigma: Positive = 4.5
    # While adapting after a reset the gate is looser.
    adapting_gate_sigma: Positive = 7.0
    # Largest believable change per day beyond the predicted trend, plus a fixed slack.
    max_rate_kg_per_day: Positive = 1.5
    # Tuned: two clean readings of a noisy integration differ by ~2 kg sd, so 3 kg of slack
    # rejected 1.6% of them; 6 kg brings false rejections to 0.03% with no loss of recall.
    rate_slack_kg: Positive = 6.0
    # A value within this relative tolerance of expected x 2.2046 (or / 2.2046) is a unit error.
    unit_error_tolerance: Positive = 0.04
    # A value within this range while the expected weight is far above it looks like a BMI.
    bmi_range: tuple[float, float] = (12.0, 60.0)
    # Relative change against the last accepted weight beyond which a gap reset is refused.
    reset_max_relative_change: Positive = 0.35
    # Consecutive, mutually consistent rejections after which the filter (not the readings) is
    # taken to be wrong and restarts. A filter resting on fewer than `established_readings`
    # accepted readings gives way after 3 (a wrong first reading); an established one after 6,
    # longer than the 3-5-reading bursts of another person on the scale (outlier_bursts
    # scenario of benchmarks/accuracy.py: recall 60% -> 98%). 3 accepted readings that agree
    # outweigh a burst that starts right after them.
    streak_new_user: int = Field(default=3, ge=2, le=20)
    streak_established: int = Field(default=6, ge=2, le=20)
    established_readings: int = Field(default=3, ge=1)
    streak_window_days: Positive = 14.0
    # A filter resting on a single reading (a user's first, or the first since a reset) gives
    # way to this many consistent readings: with one against two, the one is the odd one out.
    # Tuned (tune seeds, 6 replicates): 2 against 3: outlier_bursts 1.13 -> 1.07 and mixed
    # 1.14 -> 1.05 times the oracle-fed plain filter, recall unchanged.
    streak_single_reading: int = Field(default=2, ge=2, le=20)
    # Robust update of manual entries (issue 13): an accepted manual entry more than this many
    # sigmas of its predicted spread from the prediction moves the filter no further than one
    # this far would (Huber: its variance is raised so that the step is clipped). Typed and
    # self-reported weights are off by kilograms far more often than a scale's noise says.
    # 0: off, every accepted reading counts at its source's variance. Tuned (tune seeds, with
    # manual_reset_sigma 8): manual_disagree 0.80x the oracle at 2, 0.74x at 1.5; 1 gains
    # little more there and costs sparse_weekly and noisy_integration 2-4%.
    manual_robust_sigma: NonNegative = 1.5
    # The rate rule's noise allowance, in sigmas of the difference of two readings of the
    # reading's source plus the level's random walk over the days between them (issue 13):
    # sigma = sqrt(2 R + q_weight days + P_trend days^2). 0: the fixed rate_slack_kg only.
    # 5: a scale's readings a day apart keep the 6 kg slack (5 x 1.14 kg), an iglucose pair
    # gets 10 kg. The synthetic noise is Gaussian, so the benchmark does not move; it is for
    # the heavy-tailed integrations of real cohorts (4.7% of clean readings 5-10 days apart
    # rejected, mostly by this rule).
    rate_noise_sigmas: NonNegative = 5.0
    # A young filter restarts at a reading that shows its baseline was a BMI-sized value or a
    # manual entry the scale disproves, instead of rejecting it (issue 13). False: no such
    # restart (the streak rule gets there after rejecting good readings). Measured (tune
    # seeds): overall 1.81 -> 1.15x the oracle-fed plain filter; bmi_values 2.91 -> 1.00x and
    # mixed 4.96 -> 1.52x (a BMI or a typed value as a user's first reading).
    baseline_checks: bool = True
    # After a long gap, readings at a new level that agree with each other win after this many
    # (the reading and the rejected ones before it), even beyond reset_max_relative_change.
    # 0: never (every reading after such a gap is rejected as implausible_reset, for ever:
    # the gap is counted from the last accepted reading). 3, as for a new user's streak.
    gap_streak: int = Field(default=3, ge=0, le=20)


class ResetBoost(_Section):
    """How a reset type inflates the filter and for how long."""

    initial_var_multiplier: Positive
    q_multiplier: Positive
    adaptation_readings: int = Field(ge=1)
    adaptation_days: Positive
    decay_readings: Positive


class ResetConfig(_Section):
    """Reset triggers, boosts and the transactional safety net."""

    hard_gap_days: Positive = 30.0
    soft_threshold_kg: Positive = 3.0
    soft_cooldown_days: NonNegative = 3.0
    # A manual entry resets (soft) only if it is also this many sigmas of its predicted spread
    # from the prediction (issue 13); closer, it is an ordinary reading. 0: soft_threshold_kg
    # alone decides (the plan). Tuned (tune seeds, with manual_robust_sigma): manual_disagree
    # 1.50x the oracle-fed plain filter with the plan's reset, 1.42x at 4.5, 1.00x at 6, 0.73x
    # at 8 and 12; never resetting (infinity) rejects manual entries (false rejections 0.03%
    # -> 0.42%) and loses the entries that bring back a filter a burst took over
    # (outlier_bursts 1.38x -> 2.35x). Within it a manual entry is also not rejected by the
    # innovation gate (rules.gate_sigma would refuse a 5-kg-off entry a care team typed).
    manual_reset_sigma: NonNegative = 8.0
    transactional: bool = True
    initial: ResetBoost = ResetBoost(
        initial_var_multiplier=4.0,
        q_multiplier=10.0,
        adaptation_readings=10,
        adaptation_days=10.0,
        decay_readings=3.0,
    )
    hard: ResetBoost = ResetBoost(
        initial_var_multiplier=4.0,
        q_multiplier=5.0,
        adaptation_readings=8,
        adaptation_days=7.0,
        decay_readings=2.5,
    )
    soft: ResetBoost = ResetBoost(
        initial_var_multiplier=2.0,
        q_multiplier=3.0,
        adaptation_readings=6,
        adaptation_days=5.0,
        decay_readings=2.0,
    )
    buffer_size: int = Field(default=20, ge=1, le=1000)

    def boost(self, reset_type: str) -> ResetBoost:
        name = str(reset_type)
        if name not in ("initial", "hard", "soft"):
            raise KeyError(name)
        boost: ResetBoost = getattr(self, name)
        return boost


class BreakerConfig(_Section):
    """The circuit breaker around resets (per process; see :mod:`weightstream.resets.breaker`)."""

    failure_threshold: int = Field(default=3, ge=1)
    timeout_s: Positive = 60.0
    success_threshold: int = Field(default=2, ge=1)
    probe_timeout_s: Positive = 5.0


class ProcessingConfig(_Section):
    """Batch processing."""

    late_policy: Literal["replay", "reject_late"] = "replay"
    commit_group_size: int = Field(default=2000, ge=1)
    # How a file's ordinary readings are decided: "compiled", the engine's compiled loop over
    # arrays (weightstream.engine.kernel), or "step", every reading through the pure step one
    # by one as process_one does. Both give the same results (the engine's differential
    # tests); "step" is the reference, and what runs where numba is missing.
    engine: Literal["compiled", "step"] = "compiled"
    # Rows of a file held in memory while it is read and sorted, and of its results file
    # while it is written; past this many they go to temporary files in $TMPDIR
    # (weightstream.ingest.spill). Memory only: the processing order, the results and the
    # store are the same either way. On disk cost no measurable time on 200,000 rows (34.0 s
    # against 37.4 s in memory, a busy machine) and 48 MB less peak memory; small files (tests,
    # demos) stay off the disk.
    in_memory_rows: int = Field(default=10_000, ge=0)
    # While a file is processed (one process, or each worker of --engine processes/dask),
    # what was alive at the start is frozen out of the garbage collector and its youngest
    # generation is collected every gc_young allocations instead of Python's 700
    # (weightstream.heap); 0 leaves the collector alone. Memory that is garbage is reclaimed
    # later; nothing decided changes.
    gc_young: int = Field(default=20_000, ge=0)


class StoreConfig(_Section):
    """The store: the embedded SQLite file by default, or a shared PostgreSQL database."""

    path: str = "weightstream.db"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    # Page cache and WAL checkpoint interval: on 1M rows (benchmarks/throughput.py) 32 MB and
    # 10,000 pages gave +17% readings/s over SQLite's 2 MB / 1,000 pages, peak RSS 470 MB.
    # Since a file's users come in order (ingest/partitions.py) the cache needs less: 16 MB
    # took no more time than 32 (1M rows side by side, load 7-10: 80.9 s of CPU against
    # 82.9, the commits 111 s against 120) and 16 MB less peak memory (286 MB against 306).
    # Durability is the same (WAL + synchronous=FULL); a larger WAL only replays longer.
    cache_mb: int = Field(default=16, ge=1, le=4096)
    wal_autocheckpoint_pages: int = Field(default=10_000, ge=100)
    # SQLite's WAL is copied into the database by a thread of its own
    # (weightstream.store.checkpointer), not by the commit that takes it past
    # wal_autocheckpoint_pages (a 40 MB copy and an fsync inside one commit, which the
    # service's requests of that group all waited for); the log restarts at that size.
    background_checkpoint: bool = True
    # WAL + synchronous=FULL is required unless this is set (tests of raw speed only).
    allow_unsafe_durability: bool = False
    # A PostgreSQL URL (postgresql://user@host/db): when set, commands use it unless --db is
    # given. Empty: SQLite at `path` (or --db). Keep the password out: use ~/.pgpass or PGPASSWORD.
    dsn: str = ""
    # PostgreSQL connections one process holds at most: 4 covers a worker's writer and its
    # readers; the database's max_connections bounds workers x pool_size.
    pool_size: int = Field(default=4, ge=1, le=64)


OffsetKg = Annotated[float, Field(ge=-10.0, le=10.0, allow_inf_nan=False)]


class OffsetConfig(_Section):
    """Systematic offsets a reading carries, subtracted before the filter sees it (issue 13).

    Written by ``weightstream calibrate --write-config`` (see :mod:`weightstream.offsets` and
    :mod:`weightstream.calibrate`). The default is no offset at all, so results are what they
    were before offsets existed.
    """

    # The source the offsets are relative to ("": none calibrated). Its own offset is 0.
    reference: str = ""
    # kg a source reads above the reference; sources not listed read as the reference does.
    sources: dict[str, OffsetKg] = Field(default_factory=dict)
    # Local time-of-day bands: the hour each begins at (increasing, 0-23; the last band runs
    # round midnight to the first) and their names. The first band is the reference. Default
    # bands: morning 04-11 (the usual fasted home weighing), day 11-17, evening 17-04.
    band_starts: tuple[int, ...] = (4, 11, 17)
    band_names: tuple[str, ...] = ("morning", "day", "evening")
    # kg a band reads above the first band; bands not listed (and readings with a date and no
    # time) get none.
    time_of_day: dict[str, OffsetKg] = Field(default_factory=dict)
    # Hours added to a reading's stored UTC time to get the local clock of its time of day. 0:
    # a zone-less export time is stored as written (naive = UTC), so its clock is the one the
    # export shows, which is the local clock in the exports we know.
    local_utc_offset_hours: float = Field(default=0.0, ge=-14.0, le=14.0)
    # What the calibration said, shown beside the offsets (nothing hidden): for each source
    # name and each "time_of_day.<band>", [low, high, readings] of its 95% interval.
    intervals: dict[str, tuple[float, float, int]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bands(self) -> OffsetConfig:
        starts = self.band_starts
        if not starts or len(starts) != len(self.band_names):
            raise ValueError("band_starts and band_names must be as long as each other, >= 1")
        if any(not 0 <= h <= 23 for h in starts) or list(starts) != sorted(set(starts)):
            raise ValueError("band_starts must be increasing hours within 0-23")
        unknown = set(self.time_of_day) - set(self.band_names)
        if unknown:
            raise ValueError(f"time_of_day names unknown bands: {', '.join(sorted(unknown))}")
        return self


class Config(BaseSettings):
    """All of weightstream's settings. ``Config()`` gives the defaults."""

    model_config = SettingsConfigDict(
        env_prefix="WEIGHTSTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    filter: FilterConfig = FilterConfig()
    sources: SourceConfig = SourceConfig()
    units: UnitConfig = UnitConfig()
    validation: ValidationConfig = ValidationConfig()
    rules: RuleConfig = RuleConfig()
    resets: ResetConfig = ResetConfig()
    breaker: BreakerConfig = BreakerConfig()
    processing: ProcessingConfig = ProcessingConfig()
    store: StoreConfig = StoreConfig()
    offsets: OffsetConfig = OffsetConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Load the configuration from ``path`` (TOML) plus the environment.

    >>> load_config().resets.hard_gap_days
    30.0
    """
    _check_environment(os.environ)
    settings_cls: type[Config] = Config
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")

        class _FromFile(Config):
            model_config = SettingsConfigDict(toml_file=path)

        settings_cls = _FromFile
    try:
        loaded = settings_cls(**overrides)
        if settings_cls is Config:
            return loaded
        return Config.model_construct(**dict(loaded))  # a plain Config, equal by value
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable configuration {path}: {exc}") from None


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``WEIGHTSTREAM_<SECTION>__...`` when ``<SECTION>`` is not a section.

    pydantic-settings silently ignores such a variable, while an unknown key of a known
    section is refused by the section (``extra="forbid"``): a typo such as
    ``WEIGHTSTREAM_RESET__TRANSACTIONAL=false`` (the section is ``resets``) would change
    nothing without a word. Variables without ``__`` (``WEIGHTSTREAM_FAULT``,
    ``WEIGHTSTREAM_CHAOS``, ...) are not configuration and are left alone.
    """
    prefix = "WEIGHTSTREAM_"
    sections = set(Config.model_fields)
    for name in sorted(environ):
        if not name.upper().startswith(prefix):
            continue
        section, nested, _ = name[len(prefix) :].partition("__")
        if nested and section.lower() not in sections:
            raise ConfigError(
                f"environment variable {name}: no configuration section {section.lower()!r} "
                f"(sections: {', '.join(sorted(sections))})"
            )


def to_toml(config: Config) -> str:
    """The configuration as TOML that :func:`load_config` reads back to an equal value.

    A 30-line emitter for our own shapes (sections of scalars, tuples and one level of tables)
    rather than a dependency: the standard library reads TOML (``tomllib``) but cannot write it.

    >>> load_config_text(to_toml(Config())) == Config()
    True
    """
    lines: list[str] = []
    for section, model in config:
        tables: list[tuple[str, BaseModel]] = []
        lines.append(f"[{section}]")
        for key, value in model:
            if isinstance(value, BaseModel):
                tables.append((key, value))
            elif isinstance(value, dict):
                tables.append((key, value))  # type: ignore[arg-type]
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, table in tables:
            lines.append("")
            lines.append(f"[{section}.{key}]")
            items = table.items() if isinstance(table, dict) else iter(table)
            for sub, value in items:
                lines.append(f"{_toml_key(sub)} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def load_config_text(text: str, **overrides: Any) -> Config:
    """Load a configuration from TOML text (tests and ``weightstream config``)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path, **overrides)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
