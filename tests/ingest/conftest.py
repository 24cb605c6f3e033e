"""Shared fixtures for the ingest tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

# The package is not installed in the venv yet; make ``src/`` importable when it is not.
if importlib.util.find_spec("weightstream") is None:  # pragma: no cover - environment dependent
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

HEADER = "id,user_id,timestamp,effectiveDateTime,source_type,weight,unit"


@pytest.fixture
def now() -> datetime:
    """A fixed 'now' for timestamp checks."""
    return NOW


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[[bytes | str], Path]:
    """Write bytes (or text, encoded as UTF-8 as is) to a fresh file and return its path."""
    counter = iter(range(1_000_000))

    def write(content: bytes | str) -> Path:
        path = tmp_path / f"input-{next(counter)}.csv"
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write
