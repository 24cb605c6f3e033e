"""While the app runs, the start's objects are frozen out of the collector; undone at its stop."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from weightstream.service import ServiceSettings

from .conftest import make_svc  # type: ignore[import-not-found]


@pytest.mark.parametrize("young", [20_000, 0])
def test_the_collector_is_tuned_while_the_app_runs(tmp_path: Path, young: int) -> None:
    """gc_young > 0: the start's objects frozen and young collections every gc_young
    allocations while the app runs; both undone when it stops. 0: the collector untouched."""
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    gen = make_svc(tmp_path, settings=ServiceSettings(gc_young=young))
    svc = next(gen)
    try:
        assert svc.client.get("/healthz").status_code == 200
        if young:
            assert gc.get_threshold() == (young, *before[1:])
            assert gc.get_freeze_count() > frozen + 10_000
        else:
            assert gc.get_threshold() == before
            assert gc.get_freeze_count() == frozen
    finally:
        for _ in gen:
            pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_gc_young_is_not_negative() -> None:
    """A negative gc_young is refused."""
    with pytest.raises(ValueError, match="gc_young"):
        ServiceSettings(gc_young=-1)
