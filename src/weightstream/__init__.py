"""weightstream: trustworthy per-user weight trajectories from messy exports.

>>> from weightstream import Processor, MemoryStore, Verdict
>>> from weightstream.testing import measurement
>>> processor = Processor(MemoryStore())
>>> processor.process_one(measurement(82.0, day=0)).verdict is Verdict.ACCEPTED
True
>>> round(processor.estimate("u1").weight_kg, 1)
82.0
"""

import importlib
from typing import TYPE_CHECKING, Any

from weightstream.config import Config, load_config
from weightstream.errors import WeightstreamError
from weightstream.model import (
    Measurement,
    Reason,
    ResetOutcome,
    ResetType,
    Result,
    UserState,
    Verdict,
)
from weightstream.processor import Estimate, Processor
from weightstream.store.base import StateStore
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from weightstream.pipeline import RunSummary, process_file

__version__ = "0.1.0"

#: Names imported on first use: the file pipeline brings polars and numba (~90 MB and a
#: second of start-up), which a command or a program that never processes a file does not
#: need.
_LAZY = {"RunSummary": "weightstream.pipeline", "process_file": "weightstream.pipeline"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weightstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Config",
    "Estimate",
    "Measurement",
    "MemoryStore",
    "Processor",
    "Reason",
    "ResetOutcome",
    "ResetType",
    "Result",
    "RunSummary",
    "SQLiteStore",
    "StateStore",
    "UserState",
    "Verdict",
    "WeightstreamError",
    "load_config",
    "process_file",
]
