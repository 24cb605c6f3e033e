"""The offsets model: what a reading's source and local time of day add to it (issue 13)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from weightstream.config import Config, OffsetConfig, load_config_text, to_toml
from weightstream.errors import ConfigError
from weightstream.model import to_micros
from weightstream.offsets import (
    NO_OFFSETS,
    OffsetEstimate,
    Offsets,
    band_of,
    from_config,
    local_second_of_day,
    offset_kg,
    offset_kg_array,
    offset_kg_at,
    to_config,
)

IGLUCOSE = "https://api.iglucose.com"
QUESTIONNAIRE = "internal-questionnaire"


def _offsets(**kwargs: object) -> Offsets:
    base: dict[str, object] = {
        "reference": "care-team-upload",
        "sources": (
            (IGLUCOSE, OffsetEstimate(1.0, 0.8, 1.2, 400)),
            (QUESTIONNAIRE, OffsetEstimate(-1.5, -1.8, -1.2, 90)),
        ),
        "time_of_day": (
            ("day", OffsetEstimate(0.4, 0.2, 0.6, 100)),
            ("evening", OffsetEstimate(0.8, 0.7, 0.9, 700)),
        ),
    }
    base.update(kwargs)
    return Offsets(**base)  # type: ignore[arg-type]


def _at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 3, 4, hour, minute, second, tzinfo=UTC)


def test_default_configuration_has_no_offsets() -> None:
    """The default [offsets] section subtracts nothing from any reading at any time."""
    offsets = from_config(Config().offsets)
    assert offsets.empty and offsets == NO_OFFSETS
    for source in (IGLUCOSE, QUESTIONNAIRE, "patient-device", "unknown"):
        for hour in (0, 3, 7, 12, 19, 23):
            assert offset_kg(offsets, source, _at(hour, 1)) == 0.0


@pytest.mark.parametrize(
    ("source", "when", "expected"),
    [
        (IGLUCOSE, _at(7, 30), 1.0),  # morning: the reference band
        (IGLUCOSE, _at(12, 0), 1.4),  # day band starts at 11:00
        (IGLUCOSE, _at(10, 59, 59), 1.0),
        (IGLUCOSE, _at(17, 0), 1.8),
        (IGLUCOSE, _at(3, 59), 1.8),  # the evening band runs round midnight to 04:00
        (IGLUCOSE, _at(4, 0), 1.0),
        (QUESTIONNAIRE, _at(0, 0), -1.5),  # a date without a time: no time-of-day offset
        ("patient-device", _at(19, 0), 0.8),  # an unknown source reads as the reference
        ("care-team-upload", _at(8, 0), 0.0),
    ],
)
def test_offset_is_source_plus_band(source: str, when: datetime, expected: float) -> None:
    """offset_kg adds the source's offset and its local band's offset."""
    o = _offsets()
    assert offset_kg(o, source, when) == pytest.approx(expected)
    assert offset_kg_at(o, source, to_micros(when)) == offset_kg(o, source, when)


def test_a_reading_at_exactly_midnight_has_no_time_of_day() -> None:
    """Exactly 00:00:00.000000 is a date without a time; one microsecond later is evening."""
    o = _offsets()
    midnight = _at(0)
    assert local_second_of_day(o, to_micros(midnight)) is None
    assert offset_kg(o, IGLUCOSE, midnight.replace(microsecond=1)) == pytest.approx(1.8)


def test_local_clock_offset_moves_the_band() -> None:
    """local_utc_offset_hours turns the stored UTC clock into the local one."""
    o = _offsets(local_utc_offset_hours=-5.0)
    # 14:00 UTC is 09:00 local: morning, so only the source offset.
    assert offset_kg(o, IGLUCOSE, _at(14)) == pytest.approx(1.0)
    # 23:00 UTC is 18:00 local: evening.
    assert offset_kg(o, IGLUCOSE, _at(23)) == pytest.approx(1.8)
    # A date-only time stays without a time of day whatever the zone.
    assert offset_kg(o, IGLUCOSE, _at(0)) == pytest.approx(1.0)


def test_band_of_follows_the_configured_starts() -> None:
    """Bands are found from their start hours; before the first start is the last band."""
    o = Offsets(bands=(("night", 0), ("morning", 6), ("later", 12)))
    assert [band_of(o, h * 3600) for h in (0, 5, 6, 11, 12, 23)] == [0, 0, 1, 1, 2, 2]


def test_offsets_round_trip_through_the_config_file() -> None:
    """Offsets written as an [offsets] section load back equal, intervals and counts too."""
    o = _offsets(local_utc_offset_hours=1.5)
    config = Config(offsets=to_config(o))
    loaded = load_config_text(to_toml(config))
    assert loaded == config
    again = from_config(loaded.offsets)
    assert again == o
    assert again.source(IGLUCOSE) == OffsetEstimate(1.0, 0.8, 1.2, 400)
    assert again.band("evening") == OffsetEstimate(0.8, 0.7, 0.9, 700)


@pytest.mark.parametrize(
    "section",
    [
        {"band_starts": [11, 4, 17]},
        {"band_starts": [4, 11], "band_names": ["a", "b", "c"]},
        {"band_starts": [4, 25, 26]},
        {"time_of_day": {"night": 0.5}},
        {"sources": {"x": float("nan")}},
        {"sources": {"x": 40.0}},
    ],
)
def test_bad_offset_sections_are_refused(section: dict[str, object]) -> None:
    """Unordered bands, unknown band names and absurd offsets are a ConfigError at load."""
    assert load_config_text(_with_offsets({})) == Config()  # the same text, unchanged, loads
    with pytest.raises(ConfigError):
        load_config_text(_with_offsets(section))


def _with_offsets(section: dict[str, object]) -> str:
    text = to_toml(Config()).split("[offsets]")[0]
    body = OffsetConfig().model_dump() | section
    lines = ["[offsets]"]
    tables = []
    for key, value in body.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml(value)}")
    for key, value in tables:
        lines.append(f"[offsets.{key}]")
        lines += [f'"{k}" = {_toml(v)}' for k, v in value.items()]
    return text + "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def test_array_form_equals_the_scalar_form() -> None:
    """offset_kg_array gives, reading for reading, what offset_kg_at gives."""
    import numpy as np

    rng = np.random.default_rng(13)
    micros = rng.integers(1_600_000_000, 1_700_000_000, 2000) * 1_000_000
    micros[::7] = (micros[::7] // 86_400_000_000) * 86_400_000_000  # dates without a time
    micros[1::11] += rng.integers(1, 999_999, len(micros[1::11]))
    names = [IGLUCOSE, QUESTIONNAIRE, "patient-device", "care-team-upload"]
    sources = [names[i] for i in rng.integers(0, 4, 2000)]
    for o in (
        _offsets(),
        _offsets(local_utc_offset_hours=-7.5),
        NO_OFFSETS,
        _offsets(time_of_day=()),
    ):
        array = offset_kg_array(o, sources, micros)
        scalar = [offset_kg_at(o, s, int(t)) for s, t in zip(sources, micros, strict=True)]
        assert array.tolist() == pytest.approx(scalar, abs=1e-12)
