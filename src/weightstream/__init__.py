"""weightstream: trustworthy per-user weight trajectories from messy exports.

>>> from weightstream import Processor, MemoryStore, Verdict
>>> from weightstream.testing import measurement
>>> processor = Processor(MemoryStore())
>>> processor.process_one(measurement(82.0, day=0)).verdict is Verdict.ACCEPTED
True
>>> round(processor.estimate("u1").weight_kg, 1)
82.0
"""

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
from weightstream.pipeline import RunSummary, process_file
from weightstream.processor import Estimate, Processor
from weightstream.store.base import StateStore
from weightstream.store.memory import MemoryStore
from weightstream.store.sqlite import SQLiteStore

__version__ = "0.1.0"

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
