"""Frozen values that flow through weightstream.

Every per-user quantity is an immutable value: a processing step returns a *new*
:class:`UserState` (``dataclasses.replace``), a reset computes the whole new state in memory
and the store writes it once. If anything fails before the commit, the old value is still what
is stored, so rollback costs nothing and cannot be half-done (this is what makes the user's
reset plan real rather than ceremony: its sketch deep-copied mutable dicts and its rollback
restored nothing).

Time is an aware UTC :class:`datetime.datetime`; weights are kilograms; trends are kg/day
inside the filter and kg/week in results.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from itertools import repeat

from weightstream.clock import SECONDS_PER_DAY
from weightstream.frozen import fast_init

__all__ = [
    "Verdict",
    "Reason",
    "ResetType",
    "ResetOutcome",
    "AuditOutcome",
    "Measurement",
    "KalmanState",
    "AdaptationState",
    "BufferedReading",
    "UserState",
    "Result",
    "ResetAudit",
    "RecoveryAttempt",
    "content_key",
    "content_key_at",
    "content_keys",
    "key_digest",
    "KEY_SEPARATOR",
    "normal_unit",
    "times_at",
    "to_micros",
    "from_micros",
    "order_key",
    "EPOCH",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A content key is ``"h:"`` and the hex of this 16-byte hash of its fields' text, joined
#: by :data:`KEY_SEPARATOR`, the unit as :func:`normal_unit` gives it (:func:`content_keys`).
key_digest = partial(hashlib.blake2b, digest_size=16)
KEY_SEPARATOR = "\x1f"


class Verdict(StrEnum):
    """What happened to one input row. Every row gets exactly one."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    LATE = "late"


class Reason(StrEnum):
    """Machine-readable reason codes. ``ok`` for accepted readings."""

    OK = "ok"
    # invalid: the row is not a usable weight reading
    MALFORMED_ROW = "malformed_row"
    MISSING_USER = "missing_user"
    MISSING_VALUE = "missing_value"
    NOT_A_NUMBER = "not_a_number"
    NON_FINITE = "non_finite"
    NON_POSITIVE = "non_positive"
    UNKNOWN_UNIT = "unknown_unit"
    UNIT_IS_BMI = "unit_is_bmi"
    UNIT_IS_BSA = "unit_is_bsa"
    OUT_OF_RANGE = "out_of_range"
    INCONSISTENT_WEIGHT = "inconsistent_weight"  # weight_kg is not value converted from unit
    MISSING_TIMESTAMP = "missing_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    # rejected: a valid reading that the filter does not believe
    INNOVATION_OUTLIER = "innovation_outlier"
    RATE_OF_CHANGE = "rate_of_change"
    PROBABLE_UNIT_ERROR = "probable_unit_error"
    PROBABLE_BMI = "probable_bmi"
    IMPLAUSIBLE_RESET = "implausible_reset"
    RESET_FAILED = "reset_failed"
    # duplicate / late
    DUPLICATE_KEY = "duplicate_key"
    DUPLICATE_CONTENT = "duplicate_content"
    SAME_READING_OTHER_UNIT = "same_reading_other_unit"  # weightstream.copies
    CLOCK_SHIFTED_COPY = "clock_shifted_copy"  # weightstream.copies
    LATE_READING = "late_reading"


class ResetType(StrEnum):
    """Why a user's filter was (re)initialised."""

    INITIAL = "initial"
    HARD = "hard"
    SOFT = "soft"


class ResetOutcome(StrEnum):
    """Which path produced the state after a reset was attempted."""

    COMMITTED = "committed"
    FAILED = "failed"  # rolled back, old state kept (no fallback configured)
    FALLBACK_LAST_GOOD = "fallback_last_good"
    RECOVERED_HISTORY = "recovered_history"
    RECOVERED_INTERPOLATED = "recovered_interpolated"
    CONSERVATIVE = "conservative"


class AuditOutcome(StrEnum):
    """What became of one reset transaction: the ``outcome`` of its :class:`ResetAudit`.

    The values are stored in the audit table and matched by the Prometheus rules (as the
    ``result`` label of ``weightstream_reset_transactions_total``): never rename one.
    """

    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    BREAKER_OPEN = "breaker_open"  # refused by the open breaker: no transaction ran

    @property
    def ran(self) -> bool:
        """True if a transaction ran (and committed or rolled back)."""
        return self is not AuditOutcome.BREAKER_OPEN


def to_micros(when: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (no float rounding).

    >>> to_micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC))
    1000005
    """
    delta = when - EPOCH
    return (delta.days * SECONDS_PER_DAY + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros`.

    >>> from_micros(1000005).isoformat()
    '1970-01-01T00:00:01.000005+00:00'
    """
    return EPOCH + timedelta(microseconds=micros)


def content_key(user_id: str, timestamp: datetime, value: float, unit: str, source: str) -> str:
    """Idempotency key of a reading that has no id: a hash of what it says.

    >>> a = content_key("u1", EPOCH, 80.0, "kg", "patient-device")
    >>> a == content_key("u1", EPOCH, 80.0, "KG", "patient-device")
    True
    >>> a == content_key("u1", EPOCH, 80.5, "kg", "patient-device")
    False
    """
    return content_key_at(user_id, to_micros(timestamp), value, unit, source)


def content_key_at(user_id: str, micros: int, value: float, unit: str, source: str) -> str:
    """:func:`content_key` with the time as UTC microseconds (the file engine's form)."""
    return content_keys((user_id,), (micros,), (value,), (unit,), (source,))[0]


def content_keys(
    users: Iterable[str],
    micros: Iterable[int],
    values: Iterable[float],
    units: Iterable[str],
    sources: Iterable[str],
) -> list[str]:
    """:func:`content_key_at` of many readings at once (aligned columns): the one definition
    of a content key, so what the file engine stores is what ``process_one`` computes.

    One comprehension over the columns, each unit normalised once however often it recurs:
    about two thirds of the CPU of a call per reading (the hash and the float's ``repr``
    are most of what is left).

    >>> content_keys(["u1"], [0], [80.0], [" KG"], ["patient-device"]) == [
    ...     content_key("u1", EPOCH, 80.0, "kg", "patient-device")
    ... ]
    True
    """
    units = list(units)
    norm = {unit: normal_unit(unit) for unit in set(units)}
    digest = key_digest  # the keyword bound once: about 15% of a key's CPU
    return [  # KEY_SEPARATOR, written into the text
        "h:" + digest(f"{u}\x1f{t}\x1f{v!r}\x1f{norm[un]}\x1f{s}".encode()).hexdigest()
        for u, t, v, un, s in zip(users, micros, values, units, sources, strict=True)
    ]


def normal_unit(unit: str) -> str:
    """A unit as a content key holds it: ``" KG"`` and ``"kg"`` are one unit."""
    return unit.strip().lower()


def times_at(micros: Iterable[int]) -> Iterator[datetime]:
    """:func:`from_micros` of many times, without a Python call per time.

    >>> [t.isoformat() for t in times_at([0, 1000005])]
    ['1970-01-01T00:00:00+00:00', '1970-01-01T00:00:01.000005+00:00']
    """
    # timedelta(days, seconds, microseconds), added to the epoch: from_micros, in C calls.
    return map(EPOCH.__add__, map(timedelta, repeat(0), repeat(0), micros))


@dataclass(frozen=True, slots=True)
class Measurement:
    """One valid weight reading, normalised to kilograms and UTC.

    ``reading_id`` is the idempotency key: the input's id when it has one, else
    :func:`content_key`. ``weight_kg`` is the reading in kg as given; ``offset_kg`` the part
    of it that is its source's and time of day's systematic offset
    (:func:`weightstream.offsets.offset_kg`, set once where the reading comes in; 0 when no
    offsets are configured), and :attr:`filter_kg` what every decision uses: the reading on
    the reference source's morning scale.
    """

    reading_id: str
    user_id: str
    timestamp: datetime
    value: float
    unit: str
    weight_kg: float
    source: str
    content_key: str = ""  # computed from the fields above when not given
    offset_kg: float = 0.0

    @property
    def filter_kg(self) -> float:
        """The reading less its offset: what the filter, the rules and the resets see."""
        return self.weight_kg - self.offset_kg

    def __post_init__(self) -> None:
        if not self.content_key:
            try:
                key = content_key(self.user_id, self.timestamp, self.value, self.unit, self.source)
            except (TypeError, ValueError, AttributeError, OverflowError):
                # Not a valid reading (a naive time, a text weight...): constructing it must
                # not raise; weightstream.ingest.validate_reading says what is wrong, or
                # normalises it (naive = UTC) and computes the key then.
                return
            object.__setattr__(self, "content_key", key)


@dataclass(frozen=True, slots=True)
class KalmanState:
    """Posterior of the local-linear-trend filter at ``timestamp``.

    ``x`` = (weight kg, trend kg/day); ``P`` its 2×2 covariance, stored in full so that an
    asymmetric (corrupted) matrix can be represented and caught by the validator.
    """

    x: tuple[float, ...]
    P: tuple[tuple[float, ...], ...]
    timestamp: datetime

    @property
    def weight(self) -> float:
        return self.x[0]

    @property
    def trend(self) -> float:
        return self.x[1]

    @property
    def weight_std(self) -> float:
        return math.sqrt(self.P[0][0]) if self.P[0][0] >= 0 else math.nan


@dataclass(frozen=True, slots=True)
class AdaptationState:
    """Boost after a reset: process noise × ``adaptation_factor`` and a looser gate.

    The factor decays to 1 with readings and days (see :mod:`weightstream.resets.manager`), and
    adaptation *ends*: ``is_adapting`` turns False and the factor is exactly 1.
    """

    is_adapting: bool = False
    adaptation_start: datetime | None = None
    adaptation_factor: float = 1.0
    measurements_since_reset: int = 0
    reset_type: ResetType | None = None


#: A state's adaptation before any reset: one shared value (it is frozen), not one per state.
_NOT_ADAPTING = AdaptationState()


@dataclass(frozen=True, slots=True)
class BufferedReading:
    """A reading the user's state remembers (recent accepted ones, rejected ones since).

    ``weight_kg`` is the reading less its offset (:attr:`Measurement.filter_kg`, what the
    triggers and rules compare) and ``offset_kg`` that offset, so ``weight_kg + offset_kg`` is
    the reading as given (exactly, when the offset is 0). ``unit`` (normalised), ``value`` (as
    given, in that unit) and ``reading_id`` are what the copy rules
    (:mod:`weightstream.copies`) compare and name; a state stored before they were kept has
    ``value`` None.
    """

    timestamp: datetime
    weight_kg: float
    source: str
    unit: str = ""
    value: float | None = None
    reading_id: str = ""
    offset_kg: float = 0.0

    @classmethod
    def of(cls, m: Measurement) -> BufferedReading:
        """What the state remembers of reading ``m``."""
        return cls(
            m.timestamp,
            m.weight_kg - m.offset_kg,
            m.source,
            unit=m.unit.strip().lower(),
            value=m.value,
            reading_id=m.reading_id,
            offset_kg=m.offset_kg,
        )


@dataclass(frozen=True, slots=True)
class UserState:
    """Everything weightstream knows about one user between two readings."""

    user_id: str
    kalman: KalmanState | None = None
    adaptation: AdaptationState = _NOT_ADAPTING
    buffer: tuple[BufferedReading, ...] = ()
    rejected: tuple[BufferedReading, ...] = ()  # consecutive rejections since the last accept
    last_accepted_at: datetime | None = None
    last_event_at: datetime | None = None
    last_reset_at: datetime | None = None
    last_reset_type: ResetType | None = None
    accepted_count: int = 0
    version: int = 0


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome for one input row (or one library call).

    ``weight_kg`` is the reading as given; ``offset_kg`` the offset subtracted from it before
    the filter saw it (``filtered_weight`` is on the reference source's scale). It is None
    when the reading carries no offset and none are configured (the results file's cell is
    then empty), and set, 0.0 included, for every reading of a processor with offsets.
    """

    reading_id: str | None
    user_id: str | None
    verdict: Verdict
    reason: Reason = Reason.OK
    message: str = ""
    row: int | None = None
    timestamp: datetime | None = None
    source: str | None = None
    weight_kg: float | None = None
    filtered_weight: float | None = None
    trend_kg_week: float | None = None
    std_kg: float | None = None
    reset_type: ResetType | None = None
    reset_outcome: ResetOutcome | None = None
    quality: float | None = None
    quality_components: tuple[tuple[str, float], ...] = ()
    offset_kg: float | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED

    def with_row(self, row: int | None) -> Result:
        """This result for input row ``row``: ``dataclasses.replace(self, row=row)``, built
        directly (a batch gives every staged result its row; ``replace`` costs four times as
        much)."""
        return Result(
            self.reading_id,
            self.user_id,
            self.verdict,
            self.reason,
            self.message,
            row,
            self.timestamp,
            self.source,
            self.weight_kg,
            self.filtered_weight,
            self.trend_kg_week,
            self.std_kg,
            self.reset_type,
            self.reset_outcome,
            self.quality,
            self.quality_components,
            self.offset_kg,
        )


@dataclass(frozen=True, slots=True)
class ResetAudit:
    """The persisted record of one reset transaction (committed or rolled back)."""

    user_id: str
    reading_id: str
    reset_type: ResetType
    trigger: str
    outcome: AuditOutcome
    failed_operation: str | None
    reason: str | None
    duration_s: float
    at: datetime
    fallback: ResetOutcome | None = None
    checkpoints: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class RecoveryAttempt:
    """The persisted record of one recovery-strategy attempt."""

    user_id: str
    reading_id: str
    strategy: str
    succeeded: bool
    detail: str
    at: datetime


def order_key(m: Measurement) -> tuple[int, str, str, float, str]:
    """Where ``m`` stands in its user's processing order: event time, then its content.

    Readings at the same instant (many exports carry a date without a time) are ordered by
    source, unit, value and id, never by where they stand in a file, so the results do not
    depend on the order of rows (invariant I14). A reading without an id of its own sorts by
    ``""``: two such readings that tie on everything else are the same reading.
    """
    own_id = "" if m.reading_id == m.content_key else m.reading_id
    return (to_micros(m.timestamp), m.source, m.unit, m.value, own_id)


# -- construction ---------------------------------------------------------------------------------

# Each frozen value is built by its slots' own setters (weightstream.frozen), not through
# object.__setattr__ as @dataclass writes it.
for _cls in (
    Measurement,
    KalmanState,
    AdaptationState,
    BufferedReading,
    UserState,
    Result,
    ResetAudit,
    RecoveryAttempt,
):
    fast_init(_cls)
del _cls
