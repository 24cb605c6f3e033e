"""The public surface of weightstream.ingest is small and pinned."""

from __future__ import annotations

import weightstream.ingest as ingest


def test_all_is_pinned() -> None:
    """ingest exports exactly the documented names, all importable."""
    assert sorted(ingest.__all__) == sorted(
        [
            "CsvInput",
            "MalformedRow",
            "RawRow",
            "RowProblem",
            "file_digest",
            "open_csv",
            "parse_number",
            "parse_timestamp",
            "to_kg",
            "to_measurement",
            "validate_reading",
        ]
    )
    for name in ingest.__all__:
        assert getattr(ingest, name) is not None
