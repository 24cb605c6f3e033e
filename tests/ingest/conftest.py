"""Shared fixtures for the ingest tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[[bytes | str], Path]:
    """Write bytes (or text, encoded as UTF-8 as is) to a fresh file and return its path."""
    counter = iter(range(1_000_000))

    def write(content: bytes | str) -> Path:
        path = tmp_path / f"input-{next(counter)}.csv"
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write
