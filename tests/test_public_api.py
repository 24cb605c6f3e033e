"""The package's public surface is small and pinned."""

from __future__ import annotations

import weightstream

PINNED = {
    "Config", "Estimate", "Measurement", "MemoryStore", "Processor", "Reason", "ResetOutcome",
    "ResetType", "Result", "RunSummary", "SQLiteStore", "StateStore", "UserState", "Verdict",
    "WeightstreamError", "load_config", "process_file",
}


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(weightstream.__all__) == PINNED


def test_every_public_name_resolves() -> None:
    """Every name in __all__ is importable from the package."""
    for name in weightstream.__all__:
        assert getattr(weightstream, name) is not None


def test_package_ships_type_information() -> None:
    """py.typed marks the package as typed for its users' type checkers."""
    from importlib.resources import files

    assert files("weightstream").joinpath("py.typed").is_file()
