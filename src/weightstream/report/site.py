"""The report as pages: render one user's page, the index or the cohort page; write a site.

A site is a directory that works offline, from disk::

    DIR/index.html            every user, sortable and searchable, linking to each page
    DIR/cohort.html           the cohort summary
    DIR/users/NAME.html       one page per user (NAME: :func:`user_page_name`)
    DIR/assets/plotly.min.js  plotly's JavaScript, once per site (from the installed package)

Each page embeds only its own data (a JSON ``<script type="application/json">`` block, with
``<``, ``>``, ``&`` and ``'`` escaped so no value can close it) and loads the library by a
relative path; nothing is fetched from anywhere else. The same :class:`Renderer` renders a
page into a string per request for the live ``/ui/`` (:mod:`weightstream.report.ui`), whose
URLs mirror the files.

:func:`write_site` reads each user once (``history``; the audit records once for all users),
writes its page and adds it to the index and the cohort tally, so a site is one pass over the
users. It logs no weight.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from weightstream.config import Config
from weightstream.model import ResetAudit, Verdict
from weightstream.offsets import from_config
from weightstream.report import charts
from weightstream.report.data import (
    Cohort,
    CohortTally,
    Reading,
    UserReport,
    UserSummary,
    audits_by_user,
    input_extras,
    user_report,
)
from weightstream.resets.manager import ResetManager
from weightstream.stats import Figure, compute_stats
from weightstream.store.base import StateStore

__all__ = [
    "PLOTLY_ASSET",
    "Renderer",
    "SiteSummary",
    "plotly_js",
    "user_page_name",
    "write_assets",
    "write_site",
]

_log = logging.getLogger("weightstream.report")

#: Where a site keeps plotly's JavaScript (relative to the site's root).
PLOTLY_ASSET = "assets/plotly.min.js"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def user_page_name(user_id: str) -> str:
    """The file name of a user's page: readable, safe on any file system, one per user id.

    The id's safe characters (at most 40) and 8 hex digits of its hash, so ids that differ
    only in unsafe characters or in case still get different files.

    >>> user_page_name("CD613E30")
    'CD613E30-35aa74ac.html'
    >>> user_page_name("../etc/passwd")
    'etc_passwd-42540b52.html'
    """
    slug = _UNSAFE.sub("_", user_id).strip("._")[:40] or "user"
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug}-{digest}.html"


@cache
def plotly_js() -> str:
    """plotly's JavaScript bundle, from the installed ``plotly`` package (read once)."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return str(get_plotlyjs())


def write_assets(out: Path) -> Path:
    """Write plotly's JavaScript under ``out`` (once per site); return its path."""
    path = out / PLOTLY_ASSET
    path.parent.mkdir(parents=True, exist_ok=True)
    data = plotly_js().encode("utf-8")
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        _write(path, data)
    return path


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a page is rewritten whole; renaming a temporary file over
    each of 10,000 pages cost more than writing them)."""
    with path.open("wb") as stream:
        stream.write(data)


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{digits}f}%"


def _num(value: float | None, spec: str, unit: str) -> str:
    return "n/a" if value is None else f"{format(value, spec)}{unit}"


def _when(value: datetime | None) -> str:
    return "no time" if value is None else charts.plot_time(value)


def _figure_value(f: Figure) -> str:
    if f.value is None:
        return "n/a"
    if f.unit == "%":
        return f"{100.0 * f.value:.2f}%"
    return f"{f.value:.3f} {f.unit}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("weightstream.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Compact JSON; NaN is refused (the report's values are finite or null).
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "allow_nan": False}
    env.globals.update(pct=_pct, num=_num, when=_when, figure_value=_figure_value)
    return env


@dataclass(frozen=True, slots=True)
class SiteSummary:
    """What :func:`write_site` wrote."""

    out: Path
    index: Path
    users: int
    seconds: float
    largest_user_page_bytes: int
    user_pages_bytes: int


class Renderer:
    """Renders the report's pages from a store (reads only; one per site or per request).

    ``extras``: the duplicate and invalid rows of each user (:func:`input_extras`).
    """

    def __init__(
        self,
        store: StateStore,
        config: Config,
        *,
        extras: Mapping[str, Sequence[Reading]] | None = None,
        clock: Callable[[], datetime] | None = None,
        generated: str | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.extras = extras or {}
        self._offsets = from_config(config.offsets)
        self._manager = ResetManager(config)
        self._known = tuple(config.sources.multipliers)
        self._env = _environment()
        if generated is None:
            now = (clock or (lambda: datetime.now(UTC)))()
            generated = now.strftime("%Y-%m-%d %H:%M UTC")
        #: When the pages say they were generated.
        self.generated = generated

    def user_report(
        self, user_id: str, audits: Sequence[ResetAudit] | None = None, *, smooth: bool = True
    ) -> UserReport:
        """One user's values (its audit records read when not given; ``smooth=False``: no
        smoothed values, enough for the index and the cohort)."""
        if audits is None:
            audits = self.store.audits(user_id=user_id)
        return user_report(
            user_id,
            self.store.history(user_id),
            audits,
            self.config,
            extras=self.extras.get(user_id, ()),
            offsets=self._offsets,
            manager=self._manager,
            smooth=smooth,
        )

    def _render(self, template: str, prefix: str, **values: Any) -> str:
        return self._env.get_template(template).render(
            prefix=prefix, generated=self.generated, **values
        )

    def user_figure(self, report: UserReport) -> charts.Figure:
        """The user's chart as plotly JSON."""
        return charts.user_figure(report, self._known)

    def render_user(self, report: UserReport, prefix: str = "../") -> str:
        """The user's page (``prefix``: the site's root relative to the page)."""
        figure = self.user_figure(report)
        readings = [r for r in report.readings if r.time is not None]
        return self._render(
            "user.html",
            prefix,
            report=report,
            data={"user_id": report.user_id, "figure": figure},
            symbols=charts.source_symbols((r.source for r in readings), self._known),
            verdict_colours=charts.VERDICT_COLOURS,
            reset_symbols=charts.RESET_SYMBOLS,
            not_accepted=[r for r in report.readings if r.verdict != Verdict.ACCEPTED],
            extras=bool(self.extras),
        )

    def render_index(self, summaries: Iterable[UserSummary], prefix: str = "") -> str:
        """The index of ``summaries``, each linking to ``users/NAME.html``."""
        rows = [
            [
                s.user_id,
                s.readings,
                s.acceptance_rate,
                s.resets,
                s.last_filtered_weight,
                s.trend_kg_week,
                _when(s.last_time) if s.last_time is not None else None,
                f"users/{user_page_name(s.user_id)}",
            ]
            for s in summaries
        ]
        return self._render("index.html", prefix, count=len(rows), data={"users": rows})

    def cohort(self, tally: CohortTally) -> Cohort:
        """The cohort summary: the tally, the store's reset safety figures, the offsets."""
        return tally.cohort(compute_stats(self.store), self._offsets)

    def render_cohort(self, cohort: Cohort, prefix: str = "") -> str:
        """The cohort page."""
        return self._render(
            "cohort.html",
            prefix,
            cohort=cohort,
            data={"figures": charts.cohort_figures(cohort)},
        )


@dataclass
class _Part:
    """What writing some users' pages gave: their index lines, the tally, the page sizes."""

    summaries: list[UserSummary]
    tally: CohortTally
    largest: int = 0
    total: int = 0


def _write_users(renderer: Renderer, out: Path, users: Sequence[str], audits: _Audits) -> _Part:
    part = _Part([], CohortTally())
    for user_id in users:
        report = renderer.user_report(user_id, audits.get(user_id, []))
        if not report.readings:
            continue
        page = renderer.render_user(report).encode("utf-8")
        _write(out / "users" / user_page_name(user_id), page)
        part.largest, part.total = max(part.largest, len(page)), part.total + len(page)
        part.summaries.append(report.summary)
        part.tally.add(report)
    return part


_Audits = Mapping[str, Sequence[ResetAudit]]
#: What a forked worker of :func:`write_site` works with (set in the parent before the fork).
_JOB: tuple[Callable[[], StateStore], Config, Mapping[str, Sequence[Reading]], _Audits, Path, str]


def _job(users: Sequence[str]) -> _Part:
    """A worker's share: its own store connection, the same renderer settings."""
    open_store, config, extras, audits, out, generated = _JOB
    store = open_store()
    try:
        renderer = Renderer(store, config, extras=extras, generated=generated)
        return _write_users(renderer, out, users, audits)
    finally:
        store.close()


def write_site(
    store: StateStore,
    config: Config,
    out: Path,
    *,
    users: Sequence[str] | None = None,
    inputs: Sequence[Path] = (),
    clock: Callable[[], datetime] | None = None,
    jobs: int = 1,
    open_store: Callable[[], StateStore] | None = None,
) -> SiteSummary:
    """Write the report of ``users`` (None: every user with a stored state) into ``out``.

    ``inputs``: processed exports whose duplicate and invalid rows to show.
    Users without any row get no page and are not listed. With ``jobs`` > 1 and
    ``open_store`` (a new connection to the same store), the user pages are written by that
    many forked processes, each with its own connection; the site is the same.
    """
    global _JOB
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "users").mkdir(exist_ok=True)
    write_assets(out)
    renderer = Renderer(store, config, extras=input_extras(store, inputs, config), clock=clock)
    audits = audits_by_user(store.audits())
    wanted = list(store.users()) if users is None else list(dict.fromkeys(users))
    if jobs > 1 and open_store is not None and len(wanted) >= 2 * jobs:
        import multiprocessing

        _JOB = (open_store, config, renderer.extras, audits, out, renderer.generated)
        size = -(-len(wanted) // (4 * jobs))
        chunks = [wanted[i : i + size] for i in range(0, len(wanted), size)]
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            parts = pool.map(_job, chunks)
    else:
        parts = [_write_users(renderer, out, wanted, audits)]
    summaries = [s for p in parts for s in p.summaries]
    tally = CohortTally()
    for p in parts:
        tally.merge(p.tally)
    index = out / "index.html"
    _write(index, renderer.render_index(summaries).encode("utf-8"))
    _write(out / "cohort.html", renderer.render_cohort(renderer.cohort(tally)).encode("utf-8"))
    seconds = time.perf_counter() - started
    _log.info("report: %d user pages written to %s in %.1f s", len(summaries), out, seconds)
    return SiteSummary(
        out,
        index,
        len(summaries),
        seconds,
        max((p.largest for p in parts), default=0),
        sum(p.total for p in parts),
    )
