"""The one error hierarchy of weightstream.

A rejected reading is *not* an error: outliers, duplicates, late readings, invalid rows and
resets that failed and fell back are verdicts carried by :class:`weightstream.model.Result`.
Exceptions are for failures the caller must act on. Every one derives from
:class:`WeightstreamError` and carries its context (user, reading, operation) as attributes,
never a weight value (health data stays out of error bodies).

::

    WeightstreamError
    ├── ConfigError                      bad or degenerate configuration (exit 78)
    ├── InputError                       the input as a whole is unusable (exit 65)
    │   └── MissingColumnError           a required column is absent
    ├── ResetError                       a reset transaction rolled back
    │   └── ResetValidationError         ...because a checkpoint failed validation (also ValueError)
    ├── CircuitOpenError                 the reset breaker is open; call not attempted
    ├── StateCorruptionError             a stored state row does not decode or validate
    └── StorageError                     the store failed; the unit of work was not committed
        ├── StorageFullError             disk or page limit reached
        ├── StoreBusyError               lock held past busy_timeout (retryable)
        ├── ConflictError                a concurrent writer changed the user first (retryable)
        └── StoreOpenError               corrupt, foreign or unsafe database file
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "WeightstreamError",
    "ConfigError",
    "InputError",
    "MissingColumnError",
    "ResetError",
    "ResetValidationError",
    "CircuitOpenError",
    "StateCorruptionError",
    "StorageError",
    "StorageFullError",
    "StoreBusyError",
    "ConflictError",
    "StoreOpenError",
    "ExitCode",
    "EXIT_CODES",
    "exit_code_for",
]


class WeightstreamError(Exception):
    """Base of every error weightstream raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        user_id: str | None = None,
        reading_id: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.user_id = user_id
        self.reading_id = reading_id
        self.operation = operation

    def __str__(self) -> str:
        context = [
            f"{name}={value}"
            for name, value in (
                ("user", self.user_id),
                ("reading", self.reading_id),
                ("operation", self.operation),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(context)})" if context else self.message


class ConfigError(WeightstreamError):
    """The configuration is unreadable or names a degenerate value (R = 0, Q < 0, NaN...)."""


class InputError(WeightstreamError):
    """The input file as a whole cannot be processed (not CSV, empty, unreadable)."""


class MissingColumnError(InputError):
    """A required column (user, time, weight) is not in the header."""


class ResetError(WeightstreamError):
    """A reset transaction failed and was rolled back; the stored state is unchanged."""


class ResetValidationError(ResetError, ValueError):
    """A reset checkpoint failed :class:`~weightstream.resets.validator.StateValidator`."""


class CircuitOpenError(WeightstreamError):
    """The reset circuit breaker is open: the reset was not attempted."""


class StateCorruptionError(WeightstreamError):
    """A stored user state row does not decode, or does not pass validation, when loaded.

    ``stored_version`` is the row's ``version`` column exactly as stored (any type, even
    ``None`` or text), so a repair can replace that very row by compare-and-swap even when the
    version is what is corrupt. The message names the field and what is wrong, never a value.
    """

    def __init__(
        self,
        message: str,
        *,
        user_id: str | None = None,
        reading_id: str | None = None,
        operation: str | None = None,
        stored_version: object = None,
    ) -> None:
        super().__init__(message, user_id=user_id, reading_id=reading_id, operation=operation)
        self.stored_version = stored_version


class StorageError(WeightstreamError):
    """The store failed. The whole unit of work was rolled back; nothing of it is stored."""

    retryable = False


class StorageFullError(StorageError):
    """The database hit its size limit (disk full, or ``max_page_count``)."""


class StoreBusyError(StorageError):
    """Another writer held the lock past the busy timeout. Safe to retry the unit."""

    retryable = True


class ConflictError(StorageError):
    """The user's stored version moved under us (another writer). Safe to retry the unit."""

    retryable = True


class StoreOpenError(StorageError):
    """The database file is corrupt, foreign, or opened with unsafe durability settings."""


class ExitCode(IntEnum):
    """The process exit codes of the command line: the only place their numbers are written.

    ``sysexits.h`` numbers where one fits; the CLI names a member, never a number.
    """

    OK = 0
    UNKNOWN_USER = 1  # the user asked for has no state or no readings (state, recover)
    USAGE = 64  # bad usage, including an output path that would destroy something
    BAD_INPUT = 65  # unusable input: empty, not CSV, a results file fed back in
    NO_INPUT = 66  # missing input file or required column
    INTERNAL = 70  # a weightstream error with no more specific code
    STORAGE_FULL = 73  # the database or an output file is out of space
    STORAGE = 74  # storage failure, unusable database, failed output write, corrupt state
    BUSY = 75  # busy or conflicting writer: retry
    CONFIG = 78  # bad configuration


#: The exit code of each kind of error (most specific first).
EXIT_CODES: tuple[tuple[type[WeightstreamError], ExitCode], ...] = (
    (MissingColumnError, ExitCode.NO_INPUT),
    (InputError, ExitCode.BAD_INPUT),
    (ConfigError, ExitCode.CONFIG),
    (StorageFullError, ExitCode.STORAGE_FULL),
    (StoreBusyError, ExitCode.BUSY),
    (ConflictError, ExitCode.BUSY),
    (StoreOpenError, ExitCode.STORAGE),
    (StorageError, ExitCode.STORAGE),
    (WeightstreamError, ExitCode.INTERNAL),
)


def exit_code_for(error: WeightstreamError) -> int:
    """The process exit code that tells an operator what kind of failure ``error`` is.

    >>> exit_code_for(MissingColumnError("no weight column"))
    66
    >>> exit_code_for(StoreBusyError("locked"))
    75
    """
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return int(code)
    return int(ExitCode.INTERNAL)
