"""One commit group of a file through the engine: the common path in arrays, the rest as before.

The pipeline hands :func:`run_group` a group of valid readings in processing order (sorted by
user, time and content) and the :class:`~weightstream.batch.Batch` the group commits as.
For each user's run of readings:

1. duplicates are found first, once for the group (the same id or content, stored or earlier
   in the group), exactly as :meth:`Batch.process` would find them one by one;
2. readings the compiled loop (:mod:`weightstream.engine.kernel`) can decide are decided
   there, in a stretch, and staged as encoded rows with one new state for the user;
3. any other reading (a new user, a reset, a late reading, a state the loop cannot vouch for)
   goes through ``Batch.process``, the path of ``process_one``, and the loop takes over again
   from the state it left.

Both paths make the same decisions (``tests/engine/test_engine_equivalence.py`` runs every
synthetic scenario both ways, with chaos on, and compares every result and state).
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import ne
from typing import TYPE_CHECKING, Any

import numpy as np

from weightstream import rules
from weightstream.copies import MAX_SHIFT_HOURS, given_kg, may_be_copy
from weightstream.engine import kernel as K
from weightstream.engine.results import ResultsTable
from weightstream.engine.state import from_arrays, to_arrays
from weightstream.model import (
    BufferedReading,
    Measurement,
    Reason,
    UserState,
    Verdict,
    content_keys,
    from_micros,
    order_key,
    times_at,
    to_micros,
)
from weightstream.observe import ReadingEvent
from weightstream.offsets import offset_kg_array
from weightstream.resets.manager import ResetManager
from weightstream.resets.validator import StateValidator
from weightstream.store.codec import READING_COLUMNS, RESULT_COLUMNS

if TYPE_CHECKING:
    from weightstream.batch import Batch
    from weightstream.processor import Processor

__all__ = ["GroupReadings", "run_group", "EngineConfig"]

# What the loop's message codes say: the rules' own verdicts (weightstream.rules).
_MESSAGES = {
    K.MSG_NONE: rules.Rejection(Reason.OK, ""),
    K.MSG_POUNDS: rules.POUNDS_AS_KG,
    K.MSG_TWICE: rules.KG_CONVERTED_TWICE,
    K.MSG_BMI: rules.BMI_SIZED,
    K.MSG_RATE: rules.TOO_FAST,
    K.MSG_UNUSABLE: rules.UNCERTAINTY_UNUSABLE,
    K.MSG_SIGMA: rules.Rejection(Reason.INNOVATION_OUTLIER, ""),  # its message has its sigma
}
_REASONS = {code: str(verdict.reason) for code, verdict in _MESSAGES.items()}
_TEXTS = {code: verdict.message for code, verdict in _MESSAGES.items()}
#: The result columns after the weight for a reading that touched no filter (codec order).
_ACCEPTED = str(Verdict.ACCEPTED)
_REJECTED = str(Verdict.REJECTED)
_DUPLICATE = str(Verdict.DUPLICATE)
_DUP_KEY = str(Reason.DUPLICATE_KEY)
_DUP_CONTENT = str(Reason.DUPLICATE_CONTENT)
#: How far apart a clock-shifted copy may be, in the loop's time unit (microseconds).
_SHIFT_US = MAX_SHIFT_HOURS * 3_600_000_000
# The same, as arrays indexed by message code (a whole group's texts in one take).
_CODES = range(max(_MESSAGES) + 1)
_VERDICT_TEXT = np.array(
    [_ACCEPTED if c == K.MSG_NONE else _REJECTED for c in _CODES], dtype=object
)
_REASON_TEXT = np.array([_REASONS.get(c) for c in _CODES], dtype=object)
_MESSAGE_TEXT = np.array([_TEXTS.get(c) for c in _CODES], dtype=object)


@dataclass
class GroupReadings:
    """A group's valid readings in processing order, as plain columns."""

    line: list[int]
    ident: list[str | None]
    user: list[str]
    ts: list[int]
    value: list[float]
    unit: list[str]
    weight_kg: list[float]
    source: list[str]
    #: Each reading's content key, when its maker computed them column-wise
    #: (:func:`weightstream.engine.content_keys.frame_content_keys`); else computed here.
    contents: list[str] | None = None

    def __len__(self) -> int:
        return len(self.line)

    def measurement(
        self, i: int, reading_id: str, content: str, offset_kg: float = 0.0
    ) -> Measurement:
        return Measurement(
            reading_id=reading_id,
            user_id=self.user[i],
            timestamp=from_micros(self.ts[i]),
            value=self.value[i],
            unit=self.unit[i],
            weight_kg=self.weight_kg[i],
            source=self.source[i],
            content_key=content,
            offset_kg=offset_kg,
        )


class EngineConfig:
    """What the compiled loop needs from a processor's policy, computed once."""

    def __init__(self, processor: Processor) -> None:
        policy = processor.policy
        cfg = policy.config
        v = policy.validator
        self.policy = policy
        c = np.zeros(K.C_SLOTS, dtype=np.float64)
        c[K.C_Q_WEIGHT] = cfg.filter.q_weight
        c[K.C_Q_TREND] = cfg.filter.q_trend
        c[K.C_HARD_GAP] = cfg.resets.hard_gap_days
        c[K.C_SOFT_KG] = cfg.resets.soft_threshold_kg
        c[K.C_SOFT_COOLDOWN] = cfg.resets.soft_cooldown_days
        c[K.C_STREAK_NEW] = cfg.rules.streak_new_user
        c[K.C_STREAK_OLD] = cfg.rules.streak_established
        c[K.C_ESTABLISHED] = cfg.rules.established_readings
        c[K.C_STREAK_WINDOW] = cfg.rules.streak_window_days
        c[K.C_UNIT_TOL] = cfg.rules.unit_error_tolerance
        c[K.C_BMI_LOW], c[K.C_BMI_HIGH] = cfg.rules.bmi_range
        c[K.C_RATE_SLACK] = cfg.rules.rate_slack_kg
        c[K.C_MAX_RATE] = cfg.rules.max_rate_kg_per_day
        c[K.C_GATE] = cfg.rules.gate_sigma
        c[K.C_GATE_ADAPTING] = cfg.rules.adapting_gate_sigma
        c[K.C_MIN_W] = v.min_weight_kg
        c[K.C_MAX_W] = v.max_weight_kg
        c[K.C_MAX_TREND] = v.max_abs_trend
        c[K.C_MANUAL_SIGMA] = cfg.resets.manual_reset_sigma
        c[K.C_MANUAL_ROBUST] = cfg.rules.manual_robust_sigma
        c[K.C_RATE_SIGMAS] = cfg.rules.rate_noise_sigmas
        c[K.C_STREAK_SINGLE] = cfg.rules.streak_single_reading
        c[K.C_BASELINE_CHECKS] = 1.0 if cfg.rules.baseline_checks else 0.0
        self.base = c
        self.by_type: dict[str, np.ndarray] = {}
        for reset_type in ("initial", "hard", "soft"):
            boost = cfg.resets.boost(reset_type)
            ct = c.copy()
            ct[K.C_BOOST_Q] = boost.q_multiplier
            ct[K.C_BOOST_READINGS] = boost.adaptation_readings
            ct[K.C_BOOST_DAYS] = boost.adaptation_days
            ct[K.C_BOOST_DECAY] = boost.decay_readings
            ct[K.C_HARD_RESET] = 1.0 if reset_type == "hard" else 0.0
            self.by_type[reset_type] = ct
        self.buffer_size = cfg.resets.buffer_size
        # The loop is the stock manager's and validator's rules; a processor given others
        # (fault injection, a subclass) decides every reading through the step instead.
        self.usable = (
            cfg.processing.engine == "compiled"
            and cfg.processing.late_policy == "replay"
            and type(processor.manager) is ResetManager
            and type(v) is StateValidator
            and K.COMPILED
        )
        if self.usable:
            # The loop's machine code now: a cold cache compiles in a child process, so this
            # one never holds the compiler's memory (kernel.prepare).
            K.prepare(child=True)
        self._sources: dict[str, tuple[float, bool, float]] = {}

    def source(self, source: str) -> tuple[float, bool, float]:
        """(measurement variance, manual?, quality) of a source."""
        found = self._sources.get(source)
        if found is None:
            cfg = self.policy.config
            found = (
                self.policy.manager.measurement_var(source),
                cfg.sources.is_manual(source),
                self.policy.source_quality(source),
            )
            self._sources[source] = found
        return found


def run_group(
    processor: Processor,
    batch: Batch,
    g: GroupReadings,
    engine: EngineConfig,
    table: ResultsTable | None = None,
    offset: int = 0,
    *,
    keys_known: bool = False,
) -> None:
    """Decide every reading of ``g`` into ``batch`` (which the caller commits).

    With ``table``, what the compiled loop decided fills the table's slots from ``offset``
    once the batch is committed (results decided one by one are the caller's to fill).
    ``keys_known``: the batch has looked up the stored keys of these readings already
    (``Batch.prefetch``), so the group does not ask the store again.
    """
    if len(g):
        _Group(processor, batch, g, engine, table, offset).run(keys_known)


class _Group:
    """One group's readings as the loop's input arrays, and what it decided."""

    def __init__(
        self,
        processor: Processor,
        batch: Batch,
        g: GroupReadings,
        engine: EngineConfig,
        table: ResultsTable | None,
        offset: int,
    ) -> None:
        self.p, self.batch, self.g, self.engine = processor, batch, g, engine
        self.table, self.offset = table, offset
        n = len(g)
        # A reading's content key, computed once; its id is its own, else that key.
        self.contents = g.contents or content_keys(g.user, g.ts, g.value, g.unit, g.source)
        self.ids = [c if i is None else i for i, c in zip(g.ident, self.contents, strict=True)]
        # Each source's (variance, manual?, quality), once; the readings take theirs by code.
        codes = {s: k for k, s in enumerate(dict.fromkeys(g.source))}
        per_source = [engine.source(s) for s in codes]
        code = np.fromiter(map(codes.__getitem__, g.source), dtype=np.intp, count=n)
        self.r = np.array([s[0] for s in per_source], dtype=np.float64)[code]
        self.manual = np.array([s[1] for s in per_source], dtype=np.bool_)[code]
        self.srcq = np.array([s[2] for s in per_source], dtype=np.float64)[code]
        #: Each unit as a buffer entry keeps it (normalised), by the unit as given.
        self.units = {u: u.strip().lower() for u in set(g.unit)}
        self.ts = np.asarray(g.ts, dtype=np.int64)
        # Each reading's offset, once for the group (weightstream.offsets); the loop sees the
        # readings less their offsets, as the step does (Measurement.filter_kg).
        offsets = engine.policy.offsets
        self.shown = not offsets.empty
        self.off = offset_kg_array(offsets, g.source, self.ts)
        self.offs: list[float] = self.off.tolist()
        self.z = np.asarray(g.weight_kg, dtype=np.float64) - self.off
        self.filter_kg: list[float] = self.z.tolist()  # what a buffer entry keeps as weight
        self.out = _Outputs(n)
        self.events: list[ReadingEvent] = []
        self.dup: list[str | None] = []
        #: The spans of readings the loop decided (their rows are staged by _flush).
        self.stretches: list[tuple[int, int]] = []
        #: Where the readings a copy rule could pair within the group are (ascending).
        self.shared_at: list[int] = np.flatnonzero(
            _shared_readings(g.user, g.source, g.weight_kg, self.ts, self.off)
        ).tolist()

    def run(self, keys_known: bool = False) -> None:
        started = time.perf_counter()
        g, batch = self.g, self.batch
        users = set(g.user)
        self.p.preload(users)
        if not keys_known:
            # Only a user with a stored state can have stored readings: a new user needs no
            # lookup.
            stored = {u for u in users if batch.current(u) is not None}
            probe = [
                pair
                for u, key, content in zip(g.user, self.ids, self.contents, strict=True)
                if u in stored
                for pair in ((u, key), (u, content))
            ]
            batch.use_known_keys(self.p.store.existing_keys(probe) if probe else set())
        self.dup = _duplicates(g.user, self.ids, self.contents, batch)
        if self.table is not None:
            own = {self.offset + k: self.ids[k] for k, i in enumerate(g.ident) if i is None}
            if own:
                batch.after_commit(self.table.content_ids.update, own)
        for start, end in _runs(g.user):
            self._user(start, end)
        self._flush()
        if self.events:
            per_row = (time.perf_counter() - started) / len(g)
            observer = self.p.observer
            batch.after_commit(lambda rows: observer.readings_processed(rows, per_row), self.events)

    def _user(self, start: int, end: int) -> None:
        """One user's readings ``start .. end-1``: stretches of the loop, the rest one by one."""
        g, batch, engine = self.g, self.batch, self.engine
        i = start
        while i < end:
            why = self.dup[i]
            if why is not None:
                self._duplicate(i, why)
                i += 1
                continue
            state = batch.current(g.user[i])
            arrays = to_arrays(state, engine.by_type, engine.base) if engine.usable else None
            if (
                arrays is not None
                and state is not None
                and _in_order(batch, state, g, i, self.ids, self.contents)
            ):
                limit = i
                while limit < end and self.dup[limit] is None:
                    limit += 1
                limit = self._first_copy(state, i, limit)
                stop = self._loop(i, limit, *arrays)
                if stop > i:
                    self._stage(state, i, stop, *arrays[:2])
                    i = stop
                    if stop == limit:
                        continue
                    # The loop stopped at a reading it cannot decide: that one goes to the step.
            # Not a duplicate (self.dup): the batch need not look again.
            batch.process(self._measurement(i), row=g.line[i], new=True)
            i += 1

    def _order_key(self, i: int) -> tuple[int, str, str, float, str]:
        """:func:`weightstream.model.order_key` of reading ``i``, without its Measurement."""
        g, key = self.g, self.ids[i]
        return (g.ts[i], g.source[i], g.unit[i], g.value[i], "" if key == self.contents[i] else key)

    def _measurement(self, i: int) -> Measurement:
        return self.g.measurement(i, self.ids[i], self.contents[i], self.offs[i])

    def _entries(self, at: list[int]) -> list[BufferedReading]:
        """What the state remembers of readings ``at``: as ``BufferedReading.of`` gives each,
        built column by column (no Python call per reading but the constructor's)."""
        if not at:
            return []
        g = self.g

        def pick(column: list[Any]) -> Iterator[Any]:
            return map(column.__getitem__, at)

        return list(
            map(
                BufferedReading,
                times_at(pick(g.ts)),
                pick(self.filter_kg),  # the reading less its offset (Measurement.filter_kg)
                pick(g.source),
                map(self.units.__getitem__, pick(g.unit)),
                pick(g.value),
                pick(self.ids),
                pick(self.offs),
            )
        )

    def _first_copy(self, state: UserState, i: int, limit: int) -> int:
        """The first reading of ``i .. limit-1`` that may repeat a reading (else ``limit``).

        A possible copy (:func:`weightstream.copies.may_be_copy`) of a reading the state
        remembers, or of an earlier one of the stretch, goes through the step, which applies
        the copy rules exactly; the loop never sees it.

        Most readings can be passed over without a look: a copy of an earlier reading of the
        stretch shares its time or its (source, weight) with another reading of the group
        (:func:`_shared_readings`), and a copy of a remembered reading is at most
        :data:`~weightstream.copies.MAX_SHIFT_HOURS` after the newest of them. Only those
        readings are indexed and asked, in order: two dict lookups each.
        """
        remembered = (*state.buffer, *state.rejected)
        g = self.g
        near = i
        if remembered:
            newest = to_micros(max(e.timestamp for e in remembered))
            near = bisect_right(g.ts, newest + _SHIFT_US, i, limit)  # a user's times ascend
        shared_at = self.shared_at
        shared = shared_at[bisect_left(shared_at, near) : bisect_left(shared_at, limit)]
        asked: list[int] = [*range(i, near), *shared]
        if not asked:
            return limit
        instants: dict[int, list[tuple[float, float | None]]] = {}
        values: dict[tuple[str, float], list[int]] = {}
        # Readings as given (the copy rules' weights): a remembered one's given_kg, and an
        # earlier reading of the stretch's weight as its buffer entry will give it back.
        for e in remembered:
            t = to_micros(e.timestamp)
            kg = given_kg(e)
            instants.setdefault(t, []).append((kg, e.value))
            values.setdefault((e.source, kg), []).append(t)
        ts, kgs, sources, raw, offs = g.ts, g.weight_kg, g.source, g.value, self.offs
        for k in asked:
            t, kg = ts[k], kgs[k]
            key = (sources[k], kg)
            if (t in instants or key in values) and may_be_copy(
                instants, values, t, kg, raw[k], key[0]
            ):
                return k
            off = offs[k]
            if off:
                kg = (kg - off) + off
                key = (key[0], kg)
            instants.setdefault(t, []).append((kg, raw[k]))
            values.setdefault(key, []).append(t)
        return limit

    def _loop(self, i: int, stop: int, sf: Any, si: Any, rej_w: Any, rej_t: Any, c: Any) -> int:
        """Run the compiled loop over readings ``i .. stop-1``; where it stopped."""
        o = self.out
        return int(
            K.run(
                self.ts,
                self.z,
                self.r,
                self.manual,
                self.srcq,
                i,
                stop,
                sf,
                si,
                rej_w,
                rej_t,
                c,
                o.verdict,
                o.msg,
                o.z,
                o.filt,
                o.trend,
                o.std,
                o.qi,
                o.qr,
                o.q,
            )
        )

    def _stage(self, base: UserState, i0: int, i1: int, sf: Any, si: Any) -> None:
        """Stage readings ``i0 .. i1-1`` as the loop decided them: the user's new state now,
        their rows with the group's others (:meth:`_flush`).

        Their keys are staged at once (:meth:`Batch.stage_keys`), so a later duplicate check
        of the unit sees them.
        """
        g, batch, engine = self.g, self.batch, self.engine
        user = g.user[i0]
        self.stretches.append((i0, i1))
        batch.stage_keys(user, self.ids[i0:i1], self.contents[i0:i1])
        batch.note_last_key(user, self._order_key(i1 - 1))
        # Only the entries the bounded buffer and the rejection list keep become objects.
        accepted_at = (np.flatnonzero(self.out.verdict[i0:i1] == K.ACCEPTED) + i0).tolist()
        after = accepted_at[-1] + 1 if accepted_at else i0
        rejected_since = range(after, i1)
        size = engine.buffer_size
        buffer = [*base.buffer[-size:], *self._entries(accepted_at[-size:])][-size:]
        kept = K.REJECTED_KEPT
        earlier = base.rejected if not accepted_at else ()
        rejected = [*earlier[-kept:], *self._entries(list(rejected_since[-kept:]))][-kept:]
        batch.stage_state(from_arrays(base, sf, si, buffer, rejected))

    def _flush(self) -> None:
        """Stage the rows of every reading the loop decided, column by column, once a group.

        The stored rows are zipped from whole columns, and only a rejected reading's message
        is built one by one.
        """
        if not self.stretches:
            return
        g, batch, out = self.g, self.batch, self.out
        spans = self.stretches
        at = np.concatenate([np.arange(a, b) for a, b in spans])
        n = len(at)

        def pick(column: list[Any]) -> list[Any]:
            # Slices of the stretches (copied in C), not an index per reading.
            return list(chain.from_iterable(column[a:b] for a, b in spans))

        msgs = out.msg[at]
        verdicts = _VERDICT_TEXT[msgs].tolist()
        reasons = _REASON_TEXT[msgs].tolist()
        messages = _MESSAGE_TEXT[msgs].tolist()
        sigma = np.flatnonzero(msgs == K.MSG_SIGMA).tolist()
        if sigma:
            zs = out.z[at]
            for k in sigma:
                messages[k] = rules.sigma_message(float(zs[k]))
        filt = out.filt[at].tolist()
        trend = out.trend[at].tolist()
        std = out.std[at].tolist()
        q = out.q[at].tolist()
        offs = self.off[at].tolist()
        ids, contents, users = pick(self.ids), pick(self.contents), pick(g.user)
        ts, kg, sources = pick(g.ts), pick(g.weight_kg), pick(g.source)
        reading = {
            "key": ids,
            "content_key": contents,
            "user_id": users,
            "ts": ts,
            "value": pick(g.value),
            "unit": pick(g.unit),
            "weight_kg": kg,
            "source": sources,
            "verdict": verdicts,
            "reason": reasons,
            "message": messages,
            "filtered_weight": filt,
            "trend_kg_week": trend,
            "std_kg": std,
            "quality": q,
            "offset_kg": offs,
        }
        result = {
            "input_id": repeat(batch.input_id, n),
            "row": pick(g.line),
            "reading_id": ids,
            "user_id": users,
            "verdict": verdicts,
            "reason": reasons,
            "message": messages,
            "ts": ts,
            "source": sources,
            "weight_kg": kg,
            "filtered_weight": filt,
            "trend_kg_week": trend,
            "std_kg": std,
            "quality": q,
            "q_innovation": out.qi[at].tolist(),
            "q_rate": out.qr[at].tolist(),
            "q_source": self.srcq[at].tolist(),
            "offset_kg": offs if self.shown else None,
        }
        # In the column tables' order; a column the loop does not decide is NULL. Each
        # reading's result is marked as that reading's (a store may link the two).
        unit = batch.unit
        first = len(unit.result_rows)
        unit.result_of_reading.extend(range(first, first + n))
        unit.reading_rows.extend(
            zip(*(reading.get(name) or repeat(None, n) for name in READING_COLUMNS), strict=False)
        )
        unit.result_rows.extend(
            zip(*(result.get(name) or repeat(None, n) for name in RESULT_COLUMNS), strict=False)
        )
        self.events.extend(zip(users, ids, verdicts, reasons, sources, strict=False))
        if self.table is not None:
            columns = {
                "verdict": verdicts,
                "reason": reasons,
                "message": messages,
                "filtered_weight": filt,
                "trend_kg_week": trend,
                "std_kg": std,
                "quality": q,
            }
            if self.shown:
                columns["offset_kg"] = offs
            table, offset = self.table, self.offset
            batch.after_commit(lambda c: _fill(table, offset, spans, c), columns)

    def _duplicate(self, i: int, reason: str) -> None:
        g, batch = self.g, self.batch
        reading_id = self.ids[i]
        given = {
            "input_id": batch.input_id,
            "row": g.line[i],
            "reading_id": reading_id,
            "user_id": g.user[i],
            "verdict": _DUPLICATE,
            "reason": reason,
            "message": "already processed",
            "ts": g.ts[i],
            "source": g.source[i],
            "weight_kg": g.weight_kg[i],
            "offset_kg": self.offs[i] if self.shown else None,
        }
        batch.unit.result_rows.append(tuple(given.get(name) for name in RESULT_COLUMNS))
        self.events.append((g.user[i], reading_id, _DUPLICATE, reason, g.source[i]))
        if self.table is not None:
            columns: dict[str, Any] = {
                "verdict": [_DUPLICATE],
                "reason": [reason],
                "message": ["already processed"],
            }
            if self.shown:
                columns["offset_kg"] = [self.offs[i]]
            table, at = self.table, self.offset + i
            batch.after_commit(lambda c: table.fill_stretch(at, c), columns)


def _fill(
    table: ResultsTable, offset: int, spans: list[tuple[int, int]], columns: dict[str, Any]
) -> None:
    """Fill the table's slots of the loop's stretches (``spans``, in ``columns``' order)."""
    done = 0
    for a, b in spans:
        part = {name: values[done : done + b - a] for name, values in columns.items()}
        table.fill_stretch(offset + a, part)
        done += b - a


def _runs(users: list[str]) -> Iterator[tuple[int, int]]:
    """The (start, end) of each user's run of readings (the group is in user order)."""
    names = np.array(users, dtype=object)
    edges = (np.flatnonzero(names[1:] != names[:-1]) + 1).tolist()
    return zip([0, *edges], [*edges, len(users)], strict=True)


def _shared_readings(
    users: list[str], sources: list[str], weights: list[float], ts: Any, off: Any
) -> Any:
    """Whether each reading of a group (in user and time order; ``ts`` in microseconds, ``off``
    each reading's offset) shares its time, or its (source, weight), with another of its
    user's readings there: the readings a copy rule could pair within the group.

    A weight counts as given and as its buffer entry will give it back (less its offset,
    plus it again), so either form matching another reading's flags both, if the two are
    at most :data:`~weightstream.copies.MAX_SHIFT_HOURS` apart (a clock-shifted copy).
    Vectorised: the group is in user and time order, so equal times are neighbours; equal
    weights are found by sorting (user, source, weight, time) keys.
    """
    n = len(users)
    out = np.zeros(n, dtype=np.bool_)
    if n < 2:
        return out
    names = np.array(users, dtype=object)
    user = np.concatenate(([0], np.cumsum(names[1:] != names[:-1])))
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
    out[1:] |= same
    out[:-1] |= same
    codes = {s: k for k, s in enumerate(dict.fromkeys(sources))}
    source = np.fromiter(map(codes.__getitem__, sources), dtype=np.int64, count=n)
    given = np.asarray(weights, dtype=np.float64)
    back = (given - off) + off
    other = np.flatnonzero(back != given)
    who = np.concatenate((np.arange(n), other))
    u, src, t = user[who], source[who], ts[who]
    kg = np.concatenate((given, back[other]))
    order = np.lexsort((t, kg, src, u))
    u, src, kg, t, who = u[order], src[order], kg[order], t[order], who[order]
    # Equal weights further apart than a clock shift cannot pair (a pair within it has
    # neighbours within it, in time order).
    tie = (u[1:] == u[:-1]) & (src[1:] == src[:-1]) & (kg[1:] == kg[:-1])
    tie &= t[1:] - t[:-1] <= _SHIFT_US
    out[who[1:][tie]] = True
    out[who[:-1][tie]] = True
    return out


class _Outputs:
    __slots__ = ("verdict", "msg", "z", "filt", "trend", "std", "qi", "qr", "q")

    def __init__(self, n: int) -> None:
        self.verdict = np.zeros(n, dtype=np.int8)
        self.msg = np.zeros(n, dtype=np.int8)
        self.z = np.zeros(n)
        self.filt = np.zeros(n)
        self.trend = np.zeros(n)
        self.std = np.zeros(n)
        self.qi = np.zeros(n)
        self.qr = np.zeros(n)
        self.q = np.zeros(n)


def _duplicates(
    users: list[str], ids: list[str], contents: list[str], batch: Batch
) -> list[str | None]:
    """The duplicate reason of each reading (None if it is new), as ``Batch`` would judge it.

    Only a reading with a key that another reading of the group, or a stored or staged one,
    also has can be a duplicate, or make one: those are found column-wise (equal keys have
    equal hashes; a hash collision, or the same key for two users, only adds a reading to
    look at) and judged one by one, in order, by :func:`_judge`; every other reading is new.
    """
    n = len(users)
    # A reading's content key counts apart only when it has an id of its own. The tokens are
    # the keys without their user: equal (user, key) pairs have equal keys, and a key shared
    # across users only adds readings to look at (_judge compares the pairs).
    has_id = np.fromiter(map(ne, ids, contents), dtype=np.bool_, count=n)
    tokens = ids + list(compress(contents, has_id))
    hashes = np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens))
    order = np.argsort(hashes, kind="stable")
    shared = np.zeros(len(tokens), dtype=np.bool_)
    same = hashes[order[1:]] == hashes[order[:-1]]
    shared[order[1:][same]] = True
    shared[order[:-1][same]] = True
    outside = {key for _, key in batch.known_keys} | {key for _, key in batch.staged_keys}
    if outside:
        shared |= np.fromiter(map(outside.__contains__, tokens), dtype=np.bool_, count=len(tokens))
    asked = shared[:n]
    asked[np.flatnonzero(has_id)] |= shared[n:]
    out: list[str | None] = [None] * n
    at = np.flatnonzero(asked).tolist()
    if at:
        pick = [(k, users[k], ids[k], contents[k]) for k in at]
        for k, why in _judge(pick, batch):
            out[k] = why
    return out


def _judge(readings: list[tuple[int, str, str, str]], batch: Batch) -> list[tuple[int, str]]:
    """The duplicates among ``readings`` (place, user, id, content key), in order."""
    known = batch.known_keys
    seen = set(batch.staged_keys)
    out: list[tuple[int, str]] = []
    for k, user, key, content in readings:
        i, c = (user, key), (user, content)
        if i in seen or i in known:
            out.append((k, _DUP_KEY))
        elif c in seen or c in known:
            out.append((k, _DUP_CONTENT))
        else:
            seen.add(i)
            seen.add(c)
    return out


def _in_order(
    batch: Batch, state: UserState, g: GroupReadings, i: int, ids: list[str], contents: list[str]
) -> bool:
    """Whether reading ``i`` follows the user's last one (else Batch decides: late/replay)."""
    last = state.last_event_at
    if last is None:
        return True
    t = to_micros(last)
    if g.ts[i] > t:
        return True
    if g.ts[i] < t:
        return False
    key = batch.last_key(g.user[i])
    return key is not None and order_key(g.measurement(i, ids[i], contents[i])) > key
