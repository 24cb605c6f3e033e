"""``weightstream report``: per-user charts and a cohort summary that explain every verdict.

:mod:`~weightstream.report.data` builds plain values from the store's public API,
:mod:`~weightstream.report.charts` turns them into plotly figures (JSON),
:mod:`~weightstream.report.site` renders the Jinja2 templates and writes an offline site, and
:mod:`~weightstream.report.ui` serves the same pages live under ``/ui/``.
"""

from __future__ import annotations

from weightstream.report.site import Renderer, SiteSummary, user_page_name, write_site

__all__ = ["Renderer", "SiteSummary", "user_page_name", "write_site"]
