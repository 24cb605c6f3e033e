"""Deterministic synthetic weight exports, with the ground truth behind every row.

Tests and the accuracy benchmark need exports shaped like the real ones (grouped by user and
source, newest first, pounds and BMIs mixed in, duplicates, junk) *and* the answer: the weight
each person really had, and what an ideal processor should say about each row.
:func:`generate` returns both in memory; :func:`write_stream` writes them one user at a time.
Everything comes from one ``random.Random(seed)``: the same arguments give byte-identical files
(on the same Python minor version; ``random``'s algorithms are stable across versions but not
promised to be).

>>> data = generate(2, 5, seed=1, scenario="steady_loss")
>>> len(data.rows), len(data.truth), {t.kind for t in data.truth}
(10, 10, {'clean'})

Row count
---------
Every user gets **exactly** ``per_user`` rows, so a file has exactly ``users × per_user`` data
lines (plus the header). Duplicate rows are *part of* ``per_user``: a user with ``d`` duplicates
has ``per_user − d`` distinct readings (``d ≤ per_user − 1``). Invalid rows (NULL weight, bad
timestamp, ...) replace a reading; they are never extra.

The model
---------
**True weight** (kg, the ``true_weight_kg`` column) is piecewise linear per user:

- start weight uniform 60-160 kg; a height is drawn so that the start BMI is 25-45 (people in
  a weight-loss program), height 1.50-1.95 m;
- phases: *loss* 0.5-1.5 kg/week, *plateau* -0.1..+0.1 kg/week, *regain* 0.3-1.0 kg/week,
  each lasting 14-56 days (first phase: loss 70%, plateau 20%, regain 10%; later phases loss
  45%, plateau 35%, regain 20%). ``true_trend_kg_week`` is the slope of the current phase;
- a loss stops (the phase turns into a plateau) at max(75% of the start weight, BMI 20.5); a
  regain stops at min(112% of the start weight, BMI 45). So BMIs stay within 20.5-45;
- a *gap* is 30-90 days with no reading; across it the weight moves linearly by 3-10 kg (up
  65% of the time, the other way if that would leave the bounds above; always >= 3 kg), so
  the first reading after the gap sits at a new level.

**Readings.** Event times (``effectiveDateTime``) start 0-27 days after ``start`` and step
1 day, plus one more day with probability ``missed_day_rate`` per extra day (at most 14 days
between readings). Device readings come at a personal morning hour (5:30-9:30, sd 40 min; 15%
at a random time of day); questionnaires and connectivehealth.io carry a date only
(``00:00:00``); uploads are entered in the daytime. The ingest ``timestamp`` is after the event:
seconds (iglucose), minutes to hours, 15% 1-72 h late (device), hours (questionnaires), days to
weeks (connectivehealth). Each user has a source profile: 70% device users (86% device, the
rest questionnaires, uploads, connectivehealth), 15% iglucose users (86% iglucose), 15%
connectivehealth users (82%). In ``mixed`` and ``manual_disagree`` half the users start with an
``initial-questionnaire`` row.

**Measurement noise** (the daily physiological wobble — water, meals, clothes — is part of it,
not of the truth): Gaussian, sd = ``device_sd_kg`` × √multiplier of the source:

========================== ========== ======= ===============================================
source                     multiplier sd (kg) recorded as
========================== ========== ======= ===============================================
care-team-upload           0.5        0.57    whole pounds × 0.453592 (as real exports do)
patient-upload             0.7        0.67    whole pounds × 0.453592
internal-/initial-quest.   0.8        0.72    whole pounds × 0.453592, date only
patient-device             1.0        0.80    0.2 lb steps × 0.45359237 (float noise kept)
connectivehealth.io        1.5        0.98    kg, 2 decimals, date only
api.iglucose.com           3.0        1.39    kg, 1 decimal
========================== ========== ======= ===============================================

``device_sd_kg`` defaults to 0.8 = √0.64, the filter's default measurement variance, which
also gives the ≈1.0 and ≈1.4 kg of connectivehealth and iglucose.

**Trouble** (the ``kind`` column; ``expected`` is what an ideal processor should say). Rates
are the ``mixed`` defaults of :class:`SynthOptions` (per row unless said otherwise):

================= ======== ========= =========================================================
kind              expected rate      what the row looks like
================= ======== ========= =========================================================
clean             valid    the rest  a reading of the true weight plus the source's noise
lb                valid    2%        pounds, unit ``[lb_ap]`` (70%) or ``lb``, correctly
                                     labelled: value × 0.45359237 = the reading in kg
manual_off        valid    10% of    a manual source (questionnaire, upload) off by 2-5 kg:
                           manual    still a real reading, it disagrees with the scale
outlier           outlier  1.2%      device/integration: another person on the scale (±15-40
                                     kg); manual: a typing error (77 → 177, 59 ↔ 95)
(outlier burst)   outlier  4% users  3-5 consecutive readings of the main source from another
                                     person (one consistent weight ± noise); kind ``outlier``
unit_error        outlier  0.4%      a pound value labelled ``kg`` (≈ 2.2046 × the weight)
bmi_as_kg         outlier  0.3%      the person's BMI (20.5-45) labelled ``kg``
bmi_unit          invalid  0.4%      the BMI with unit ``kg/m2``
bsa_unit          invalid  0.3%      body surface area (Mosteller, 1.6-2.6) with unit ``m2``
null              invalid  0.4%      empty weight, unit ``kg``
bad_timestamp     invalid  0.2%      unparseable ``effectiveDateTime`` (day 32, hour 25,
                                     ``0000-00-00 00:00:00``, text, empty)
future            invalid  0.1%      the event time with year 2099
ancient           invalid  0.1%      the event time with year 1850
bad_number        invalid  0.2%      ``72,5`` (decimal comma, 70%) or ``abc``/``n/a``/``#VALUE!``
duplicate_id      duplicate 0.4%     an exact copy of a clean row (same id), right after it
duplicate_content duplicate 0.6%     the same reading under a new id, ingested 1-50 ms later,
                                     right after it
================= ======== ========= =========================================================

Every outlier-kind value stays inside 30-400 kg and every BMI is ≥ 20.5, so none of them is
*invalid* under the default hard limits (20-500 kg): they are for the filter to catch.
Gaps: 8% of ``mixed`` users. Only ``clean`` rows are duplicated (any row of a user who has no
clean row), so the first copy in file order carries the original's kind.

**Truth rows.** One per export row, in the same order. ``true_weight_kg`` and
``true_trend_kg_week`` are at the *intended* event time, and the truth's
``effectiveDateTime`` is that intended time even where the export's is corrupted
(``bad_timestamp``, ``future``, ``ancient``). :attr:`TruthRow.measured_kg` (in memory only)
is the source's reading in kg after its rounding, before any trouble was applied.

**Scenarios** (:data:`SCENARIOS`): ``mixed`` has all of the above. Each other scenario has
clean readings plus only its own trouble (:data:`SCENARIO_KINDS`); ``scenario_rate`` sets
how much of it:

- ``steady_loss``, ``plateau``, ``loss_regain``: one fixed path shape (loss the whole time;
  flat; loss for 40-60% of the span, then regain);
- ``gap_level_change``: every user (with ≥ 2 readings) has one gap with a level change;
- ``dense_daily``: a reading every day, half the days a second one in the evening;
- ``sparse_weekly``: a reading every 5-9 days;
- ``noisy_integration``: every user is an iglucose user;
- ``lb_as_kg``: ``unit_error`` on ``scenario_rate`` of the rows;
- ``bmi_values``: ``bmi_unit`` and ``bmi_as_kg`` on ``scenario_rate / 2`` of the rows each;
- ``outlier_bursts``: max(1, round(``scenario_rate`` × readings / 4)) bursts per user;
- ``manual_disagree``: 40% of readings manual, min(1, 4 × ``scenario_rate``) of those off
  by 2-5 kg;
- ``sparse_clinical``: clinic-visit histories over years, clean readings only (below).
- ``offsets`` and ``duplicates``: source and time-of-day offsets; the same weighing exported
  twice (below).

**The sparse clinical cohort** (``sparse_clinical``) is what a clinic's records look like: a
weight at each visit, about one a month, for years (50 readings span about four years).

- Sources: care-team-upload 80% (the visit's weighing), patient-upload 10%,
  internal-questionnaire 10% (date only); visits are in the daytime (08:00-21:00).
- Intervals: a follow-up visit 21-29 days after the last one, or, with probability
  ``clinical_long_gap`` (default 0.13), a long interval of 30-91 days (missed visits, a
  three-month review). A long interval is a HARD reset under the default
  ``resets.hard_gap_days`` of 30, so a file is mostly follow-ups: about 15% of its rows
  trigger a reset when processed with the default configuration (the first reading of each
  user, the long intervals, and a few soft resets of manual entries; measured in
  ``tests/test_synth.py``).
- The true path drifts slowly: phases of 60-360 days, loss 0.05-0.5 kg/week (first phase
  60%, later 35%), plateau -0.05..+0.05 kg/week (25%, 35%), regain 0.05-0.3 kg/week (15%,
  30%), within the same floor and ceiling as above; no level jumps.
- Placement: a history *ends* 1-28 days before ``start`` (it begins years before it), so
  that no reading of a long history lies in the future. Visits average about 30 days apart:
  from the default start, 50 a user begin around 2019, while beyond about 400 a user the
  first ones fall before 1990, which the default ``validation.min_year`` refuses.

**Offsets and the same weighing exported twice** (issue 13). Two scenarios carry what real
exports carry beyond noise; their truth files add ``true_offset_kg`` and ``duplicate_of``
(:data:`~weightstream.synth.options.TRUTH_EXTRA_COLUMNS`), the other scenarios' files are
unchanged byte for byte.

- ``offsets``: a source reads above (below) the true weight by a fixed offset, and a weighing
  in the day or evening reads heavier than one in the morning. Defaults
  (:attr:`SynthOptions.source_offsets`, ``day_offset_kg``, ``evening_offset_kg``): iglucose
  +1.0 kg and connectivehealth.io +0.7 kg (integrations weigh people clothed),
  questionnaires -1.5 kg (under-reported, and recorded in whole pounds like every manual
  source), device, uploads and care team 0; local hour bands morning 04-11 (0), day 11-17
  (+0.4 kg), evening 17-04 (+0.8 kg). A reading with a date and no time (``00:00:00``) has no
  time-of-day offset. The offsets are added to what the source measured, before its
  rounding, and are deterministic (no draw), so no other scenario moves. Every source is in
  use (a profile of all six for 50% of users, device 30%, iglucose 20%), at the dense
  cadence (mornings and, half the days, an evening); half the users begin with an initial
  questionnaire.
- ``duplicates``: the ``mixed`` source profiles, clean readings, plus ``duplicate_unit``
  (``SynthOptions.duplicate_unit``, 6% of rows: the same weighing in pounds, ``[lb_ap]``, at
  the same instant, whole pounds for manual sources and 0.1 lb otherwise, so value x
  0.45359237 is the kg row within its rounding) and ``clock_shift``
  (``SynthOptions.clock_shift``, 6%: the same row, value text to its last digit, source and
  unit, with the event and ingest times moved by a whole number of hours, 1-14 either way,
  one shift per user: local time against UTC). Copies take slots of ``per_user`` like the
  other duplicates; a reading has at most one copy of each kind. The pound copy follows its
  original; a shifted copy stands where its time puts it among its source's rows.
  ``duplicate_of`` is the file line of the original; a processor is right to keep either row
  of the pair (at one instant a ``[lb_ap]`` row sorts before ``kg``) as long as it keeps
  exactly one.

**File order**, like real exports: grouped by user (in generation order); within a user
grouped by source (a random source order per user); within a source newest first; a
duplicate right after its original.

**The package**: :mod:`~weightstream.synth.options` (what can be asked: scenarios, kinds,
:class:`SynthOptions`, the returned rows, each scenario's plan),
:mod:`~weightstream.synth.sources` (the sources and the text each writes),
:mod:`~weightstream.synth.person` (the person model: body, habits, true path, measurement),
:mod:`~weightstream.synth.trouble` (the trouble injectors),
:mod:`~weightstream.synth.generate` (one user's rows in file order; :func:`generate`,
:func:`iter_users`) and :mod:`~weightstream.synth.writer` (:func:`write`,
:func:`write_stream`).
"""

from weightstream.synth.generate import generate, iter_users
from weightstream.synth.options import (
    EXPECTED,
    EXPORT_COLUMNS,
    KINDS,
    SCENARIO_KINDS,
    SCENARIOS,
    TRUTH_COLUMNS,
    SynthData,
    SynthOptions,
    SynthRow,
    TruthRow,
)
from weightstream.synth.sources import LB_KG, MANUAL_SOURCES, SOURCE_MULTIPLIERS, SOURCES
from weightstream.synth.writer import write, write_stream

__all__ = [
    "EXPORT_COLUMNS",
    "TRUTH_COLUMNS",
    "KINDS",
    "EXPECTED",
    "SCENARIOS",
    "SCENARIO_KINDS",
    "SOURCES",
    "MANUAL_SOURCES",
    "SOURCE_MULTIPLIERS",
    "LB_KG",
    "SynthOptions",
    "SynthRow",
    "TruthRow",
    "SynthData",
    "generate",
    "iter_users",
    "write",
    "write_stream",
]
