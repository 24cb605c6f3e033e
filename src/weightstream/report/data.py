"""What the report shows, as plain values: one user's page, the index and the cohort summary.

Everything here reads the store's public API only (``history``, ``audits``, ``users``,
``results_for_input``; :func:`weightstream.stats.compute_stats` for the reset safety figures)
and changes nothing. No plotting and no HTML: :mod:`weightstream.report.charts` turns these
values into plotly figures and :mod:`weightstream.report.site` into pages.

**Rows.** A user's stored history (:meth:`StateStore.history`) holds every reading the filter
decided on: accepted, rejected and late. Duplicate and invalid rows are never stored as
readings; they live only in the results of the input they came in, so they are read from
``results_for_input`` of the inputs named (``weightstream report --input EXPORT``) and shown
beside the history (:func:`input_extras`; an invalid row's user is read back from the
export's line, as the stored result has none).

**Definitions** (each figure says what it counts):

* acceptance rate: accepted / readings the filter decided on (accepted, rejected, late);
* resets: every reset audit record of the user (committed, rolled back, refused by the open
  breaker), plus any reading that carries a reset without an audit record;
* last filtered weight and trend per week: the live filter's values at the user's last
  accepted reading, as stored (never recomputed);
* adaptation periods: replayed from the history with the reset manager's own rule
  (:meth:`ResetManager.create_adaptation_state` at a committed reset,
  :meth:`ResetManager.advance` at each accepted reading), from the reset to the reading at
  which adaptation ended, or to the last reading while it goes on.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from weightstream.config import Config
from weightstream.model import (
    AuditOutcome,
    Reason,
    ResetAudit,
    ResetOutcome,
    ResetType,
    Result,
    Verdict,
)
from weightstream.offsets import Offsets, from_config, offset_kg
from weightstream.resets.manager import ResetManager
from weightstream.smooth import smooth_rows
from weightstream.stats import Figure, Stats
from weightstream.store.base import HistoryRow, ResultRows, StateStore

__all__ = [
    "Reading",
    "ResetMark",
    "AdaptationPeriod",
    "OffsetInUse",
    "UserSummary",
    "UserReport",
    "Cohort",
    "CohortTally",
    "OUTCOME_CATEGORIES",
    "outcome_category",
    "input_extras",
    "user_report",
    "offsets_table",
    "audits_by_user",
]

#: How a reset ended, as the report groups it: the transaction committed; it rolled back
#: and the old state was kept; it fell back to the last-known-good state; the recovery service
#: rebuilt the state; the open breaker refused it.
OUTCOME_CATEGORIES: tuple[str, ...] = (
    "committed",
    "rolled_back",
    "fallback",
    "recovered",
    "breaker_open",
)

_RECOVERED = {
    ResetOutcome.RECOVERED_HISTORY,
    ResetOutcome.RECOVERED_INTERPOLATED,
    ResetOutcome.CONSERVATIVE,
}
_DECIDED = {str(Verdict.ACCEPTED), str(Verdict.REJECTED), str(Verdict.LATE)}


def outcome_category(outcome: AuditOutcome | None, fallback: ResetOutcome | None) -> str:
    """The report's category of a reset (see :data:`OUTCOME_CATEGORIES`).

    ``outcome`` is the audit's (None for a reading without an audit record), ``fallback`` the
    path that produced the state (the audit's ``fallback`` or the reading's ``reset_outcome``).

    >>> outcome_category(AuditOutcome.ROLLED_BACK, ResetOutcome.FALLBACK_LAST_GOOD)
    'fallback'
    >>> outcome_category(None, ResetOutcome.FAILED)
    'rolled_back'
    """
    if fallback is ResetOutcome.FALLBACK_LAST_GOOD:
        return "fallback"
    if fallback in _RECOVERED:
        return "recovered"
    if outcome is AuditOutcome.BREAKER_OPEN:
        return "breaker_open"
    if outcome is AuditOutcome.ROLLED_BACK or fallback is ResetOutcome.FAILED:
        return "rolled_back"
    return "committed"


@dataclass(frozen=True, slots=True)
class Reading:
    """One row as plotted: what was decided live, and the smoothed estimate at its time."""

    reading_id: str
    time: datetime | None
    source: str
    weight_kg: float | None
    verdict: str
    reason: str
    message: str
    offset_kg: float
    filtered_weight: float | None
    filtered_std: float | None
    filtered_trend_kg_week: float | None
    smoothed_weight: float | None
    smoothed_std: float | None
    smoothed_trend_kg_week: float | None
    reset_type: str | None
    reset_outcome: str | None
    segment: int | None
    #: An invalid row's cells as written in the export ("" otherwise).
    raw: str = ""


@dataclass(frozen=True, slots=True)
class ResetMark:
    """One reset: where it stands on the chart, its type and how it ended."""

    time: datetime
    reading_id: str
    reset_type: str
    category: str
    trigger: str
    detail: str
    weight_kg: float | None


@dataclass(frozen=True, slots=True)
class AdaptationPeriod:
    """A stretch during which the filter adapted after a reset (``ongoing``: not ended yet)."""

    start: datetime
    end: datetime
    reset_type: str
    ongoing: bool


@dataclass(frozen=True, slots=True)
class OffsetInUse:
    """One configured offset: a source's, or a time-of-day band's (kg, 95% interval, count)."""

    kind: str
    name: str
    kg: float
    low: float
    high: float
    count: int


@dataclass(frozen=True, slots=True)
class UserSummary:
    """One user's line of the index."""

    user_id: str
    readings: int
    decided: int
    accepted: int
    acceptance_rate: float | None
    resets: int
    last_filtered_weight: float | None
    trend_kg_week: float | None
    last_time: datetime | None


@dataclass(frozen=True, slots=True)
class UserReport:
    """Everything one user's page shows."""

    user_id: str
    readings: tuple[Reading, ...]
    resets: tuple[ResetMark, ...]
    adaptation: tuple[AdaptationPeriod, ...]
    offsets: tuple[OffsetInUse, ...]
    summary: UserSummary


def offsets_table(offsets: Offsets, sources: Iterable[str] | None = None) -> list[OffsetInUse]:
    """The configured offsets (only those of ``sources`` when given): empty when none."""
    wanted = None if sources is None else set(sources)
    out = [
        OffsetInUse("source", name, e.kg, e.low, e.high, e.count)
        for name, e in offsets.sources
        if e.kg and (wanted is None or name in wanted)
    ]
    out += [
        OffsetInUse("time of day", name, e.kg, e.low, e.high, e.count)
        for name, e in offsets.time_of_day
        if e.kg
    ]
    return out


def input_extras(
    store: StateStore, exports: Sequence[Path], config: Config, *, now: datetime | None = None
) -> dict[str, list[Reading]]:
    """Rows of the named exports that no user's history holds, by user, in input order.

    Duplicates come from the input's stored results (user, time, weight and source as
    stored). An invalid row is stored without its user (it could not be trusted as a
    reading), so its user, time and weight are read back from the export's line the result
    names, as written: the time where it parses (else the row has no place on the time axis
    and is listed only), the weight where its number and unit give one (else it is drawn at the
    chart's edge), and the cells as written in ``raw``. Rows without a user are left out.
    """
    from weightstream.ingest.csv_reader import RawRow, file_digest, open_csv
    from weightstream.ingest.numbers import parse_number
    from weightstream.ingest.timestamps import parse_timestamp
    from weightstream.ingest.units import to_kg

    now = now if now is not None else datetime.now(UTC)
    offsets = from_config(config.offsets)
    out: dict[str, list[Reading]] = defaultdict(list)
    for path in exports:
        invalid: dict[int, Result] = {}
        for r in _not_in_history(store, file_digest(path)):
            if r.verdict is Verdict.DUPLICATE and r.user_id:
                out[r.user_id].append(_extra(r, offsets))
            elif r.verdict is Verdict.INVALID and r.row is not None:
                invalid[r.row] = r
        if not invalid:
            continue
        for raw in open_csv(path):
            if not isinstance(raw, RawRow) or raw.line not in invalid:
                continue
            user = raw.user_id.strip()
            if not user:
                continue
            r = invalid[raw.line]
            when = parse_timestamp(raw.timestamp, now=now, config=config.validation)
            number = parse_number(raw.weight)
            kg = to_kg(number, raw.unit, config.units) if isinstance(number, float) else None
            out[user].append(
                replace(
                    _extra(r, offsets),
                    time=when if isinstance(when, datetime) else None,
                    source=(raw.source or "").strip() or "unknown",
                    weight_kg=kg if isinstance(kg, float) and math.isfinite(kg) else None,
                    reading_id=r.reading_id or (raw.id or "").strip() or f"line {raw.line}",
                    raw=f"{raw.timestamp!r}, {raw.weight!r} {raw.unit or ''}".strip(),
                )
            )
    return dict(out)


_KEEP = (str(Verdict.DUPLICATE), str(Verdict.INVALID))


def _not_in_history(store: StateStore, input_id: str) -> Iterator[Result]:
    """The input's duplicate and invalid results.

    Through the store's flat rows where it has them (:class:`ResultRows`): an input of
    600,000 rows is read in half the time, and only the rows kept become ``Result`` values.
    """
    if not isinstance(store, ResultRows):
        yield from (r for r in store.results_for_input(input_id) if r.verdict in _KEEP)
        return
    from weightstream.store.columns import RESULTS

    at = {name: i for i, name in enumerate(RESULTS.file_fields)}
    verdict = at["verdict"]
    for row in store.iter_result_rows(input_id):
        if row[verdict] not in _KEEP:
            continue
        when, kg = row[at["timestamp"]], row[at["weight_kg"]]
        yield Result(
            reading_id=row[at["reading_id"]] or None,
            user_id=row[at["user_id"]] or None,
            verdict=Verdict(row[verdict]),
            reason=Reason(row[at["reason"]]),
            message=row[at["message"]],
            row=row[at["row"]],
            timestamp=datetime.fromisoformat(when) if when else None,
            source=row[at["source"]] or None,
            weight_kg=kg if isinstance(kg, float) else None,
        )


def _extra(r: Result, offsets: Offsets) -> Reading:
    """A stored result that is not in the history (a duplicate or an invalid row)."""
    source = r.source or ""
    return Reading(
        reading_id=r.reading_id or "",
        time=r.timestamp,
        source=source,
        weight_kg=_finite(r.weight_kg),
        verdict=str(r.verdict),
        reason=str(r.reason),
        message=r.message,
        offset_kg=offset_kg(offsets, source, r.timestamp) if r.timestamp is not None else 0.0,
        filtered_weight=None,
        filtered_std=None,
        filtered_trend_kg_week=None,
        smoothed_weight=None,
        smoothed_std=None,
        smoothed_trend_kg_week=None,
        reset_type=None,
        reset_outcome=None,
        segment=None,
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _live_readings(rows: Sequence[HistoryRow], offsets: Offsets) -> list[Reading]:
    """The history's rows with the live values only (no smoother: the index and the cohort
    need none of its values)."""
    out: list[Reading] = []
    for row in rows:
        m, r = row.measurement, row.result
        accepted = r.verdict is Verdict.ACCEPTED
        out.append(
            Reading(
                reading_id=m.reading_id,
                time=m.timestamp,
                source=m.source,
                weight_kg=m.weight_kg,
                verdict=str(r.verdict),
                reason=str(r.reason),
                message=r.message,
                offset_kg=offset_kg(offsets, m.source, m.timestamp),
                filtered_weight=_finite(r.filtered_weight) if accepted else None,
                filtered_std=_finite(r.std_kg) if accepted else None,
                filtered_trend_kg_week=_finite(r.trend_kg_week) if accepted else None,
                smoothed_weight=None,
                smoothed_std=None,
                smoothed_trend_kg_week=None,
                reset_type=str(r.reset_type) if r.reset_type is not None else None,
                reset_outcome=str(r.reset_outcome) if r.reset_outcome is not None else None,
                segment=None,
            )
        )
    return out


def _readings(
    rows: Sequence[HistoryRow], extras: Sequence[Reading], config: Config
) -> list[Reading]:
    smoothed = smooth_rows(rows, config)
    out: list[Reading] = []
    for row, s in zip(rows, smoothed, strict=True):
        r = row.result
        out.append(
            Reading(
                reading_id=s.reading_id,
                time=s.timestamp,
                source=s.source,
                weight_kg=s.weight_kg,
                verdict=s.verdict,
                reason=s.reason,
                message=r.message,
                offset_kg=s.offset_kg,
                filtered_weight=_finite(s.filtered_weight),
                filtered_std=_finite(s.filtered_std),
                filtered_trend_kg_week=_finite(s.filtered_trend_kg_week),
                smoothed_weight=_finite(s.smoothed_weight),
                smoothed_std=_finite(s.smoothed_std),
                smoothed_trend_kg_week=_finite(s.smoothed_trend_kg_week),
                reset_type=s.reset_type,
                reset_outcome=str(r.reset_outcome) if r.reset_outcome is not None else None,
                segment=s.segment,
            )
        )
    out.extend(extras)
    return out


def _resets(rows: Sequence[HistoryRow], audits: Sequence[ResetAudit]) -> list[ResetMark]:
    by_id = {row.measurement.reading_id: row for row in rows}
    marks: list[ResetMark] = []
    audited: set[str] = set()
    for a in audits:
        row = by_id.get(a.reading_id)
        if row is None:  # its reading was never stored: nothing to place it at
            continue
        audited.add(a.reading_id)
        detail = ", ".join(
            part
            for part in (
                f"failed at {a.failed_operation}" if a.failed_operation else "",
                a.reason or "",
                f"fallback {a.fallback}" if a.fallback else "",
            )
            if part
        )
        marks.append(
            ResetMark(
                time=row.measurement.timestamp,
                reading_id=a.reading_id,
                reset_type=str(a.reset_type),
                category=outcome_category(a.outcome, a.fallback or row.result.reset_outcome),
                trigger=a.trigger,
                detail=detail,
                weight_kg=row.measurement.weight_kg,
            )
        )
    for row in rows:
        r = row.result
        if r.reset_type is not None and row.measurement.reading_id not in audited:
            marks.append(
                ResetMark(
                    time=row.measurement.timestamp,
                    reading_id=row.measurement.reading_id,
                    reset_type=str(r.reset_type),
                    category=outcome_category(None, r.reset_outcome),
                    trigger="",
                    detail="no audit record",
                    weight_kg=row.measurement.weight_kg,
                )
            )
    marks.sort(key=lambda m: m.time)
    return marks


def _adaptation(rows: Sequence[HistoryRow], manager: ResetManager) -> list[AdaptationPeriod]:
    periods: list[AdaptationPeriod] = []
    adapting = None
    start: datetime | None = None
    kind = ""
    for row in rows:
        r = row.result
        if r.verdict is not Verdict.ACCEPTED:
            continue
        t = row.measurement.timestamp
        committed = r.reset_outcome in (None, ResetOutcome.COMMITTED)
        if r.reset_type is not None and committed:
            if adapting is not None and start is not None:
                periods.append(AdaptationPeriod(start, t, kind, False))
            adapting = manager.create_adaptation_state(ResetType(r.reset_type), t)
            start, kind = t, str(r.reset_type)
            continue
        if adapting is None:
            continue
        adapting = manager.advance(adapting, t)
        if not adapting.is_adapting and start is not None:
            periods.append(AdaptationPeriod(start, t, kind, False))
            adapting, start = None, None
    if adapting is not None and start is not None and rows:
        last = max(row.measurement.timestamp for row in rows)
        periods.append(AdaptationPeriod(start, last, kind, True))
    return periods


def user_report(
    user_id: str,
    rows: Sequence[HistoryRow],
    audits: Sequence[ResetAudit],
    config: Config,
    *,
    extras: Sequence[Reading] = (),
    offsets: Offsets | None = None,
    manager: ResetManager | None = None,
    smooth: bool = True,
) -> UserReport:
    """One user's page from its stored history, its audit records and its extra rows.

    ``smooth=False`` leaves the smoothed values out (None): the summary and everything the
    index and the cohort count are the same, for less work.
    """
    offsets = offsets if offsets is not None else from_config(config.offsets)
    manager = manager if manager is not None else ResetManager(config)
    if smooth:
        readings = _readings(rows, extras, config)
    else:
        readings = [*_live_readings(rows, offsets), *extras]
    resets = _resets(rows, audits)
    accepted = [r for r in readings if r.verdict == Verdict.ACCEPTED]
    decided = sum(1 for r in readings if r.verdict in _DECIDED)
    last = accepted[-1] if accepted else None
    times = [r.time for r in readings if r.time is not None]
    summary = UserSummary(
        user_id=user_id,
        readings=len(readings),
        decided=decided,
        accepted=len(accepted),
        acceptance_rate=len(accepted) / decided if decided else None,
        resets=len(resets),
        last_filtered_weight=last.filtered_weight if last else None,
        trend_kg_week=last.filtered_trend_kg_week if last else None,
        last_time=max(times) if times else None,
    )
    return UserReport(
        user_id=user_id,
        readings=tuple(readings),
        resets=tuple(resets),
        adaptation=tuple(_adaptation(rows, manager)),
        offsets=tuple(offsets_table(offsets, {r.source for r in readings})),
        summary=summary,
    )


@dataclass(frozen=True, slots=True)
class Cohort:
    """The cohort summary's values."""

    users: int
    readings: int
    #: source -> (readings the filter decided on, rejected)
    by_source: tuple[tuple[str, int, int], ...]
    #: reason -> rows with that reason (every verdict but accepted)
    by_reason: tuple[tuple[str, str, int], ...]
    #: (reset type, outcome category) -> count
    resets: tuple[tuple[str, str, int], ...]
    #: every user's last trend (kg/week)
    trends: tuple[float, ...]
    stats: Stats
    figures: tuple[Figure, ...]
    offsets: tuple[OffsetInUse, ...]
    reference_source: str


@dataclass
class CohortTally:
    """Adds up the cohort while the users' pages are written (one pass over the users)."""

    users: int = 0
    readings: int = 0
    decided: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    resets: Counter[tuple[str, str]] = field(default_factory=Counter)
    trends: list[float] = field(default_factory=list)

    def add(self, report: UserReport) -> None:
        """Count one user's page."""
        self.users += 1
        self.readings += len(report.readings)
        for r in report.readings:
            if r.verdict in _DECIDED:
                self.decided[r.source] += 1
                if r.verdict == Verdict.REJECTED:
                    self.rejected[r.source] += 1
            if r.verdict != Verdict.ACCEPTED:
                self.reasons[(r.verdict, r.reason)] += 1
        for m in report.resets:
            self.resets[(m.reset_type, m.category)] += 1
        if report.summary.trend_kg_week is not None:
            self.trends.append(report.summary.trend_kg_week)

    def merge(self, other: CohortTally) -> None:
        """Add another tally's counts (a worker's share of the users)."""
        self.users += other.users
        self.readings += other.readings
        self.decided.update(other.decided)
        self.rejected.update(other.rejected)
        self.reasons.update(other.reasons)
        self.resets.update(other.resets)
        self.trends += other.trends

    def cohort(self, stats: Stats, offsets: Offsets) -> Cohort:
        """The summary, with the store's reset safety figures and the configured offsets."""
        return Cohort(
            users=self.users,
            readings=self.readings,
            by_source=tuple((s, self.decided[s], self.rejected[s]) for s in sorted(self.decided)),
            by_reason=tuple(
                (v, reason, n)
                for (v, reason), n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            resets=tuple((t, c, n) for (t, c), n in sorted(self.resets.items())),
            trends=tuple(self.trends),
            stats=stats,
            figures=tuple(stats.figures()),
            offsets=tuple(offsets_table(offsets)),
            reference_source=offsets.reference,
        )


def audits_by_user(audits: Iterable[ResetAudit]) -> Mapping[str, list[ResetAudit]]:
    """Audit records grouped by user, oldest first (one query for a whole site)."""
    out: dict[str, list[ResetAudit]] = defaultdict(list)
    for a in audits:
        out[a.user_id].append(a)
    return out
