"""The report live under ``/ui/``: the same pages as the static site, from the current store.

:func:`router` gives an ``APIRouter`` that the service's app includes. Its URLs mirror the
site's files (``/ui/index.html``, ``/ui/cohort.html``, ``/ui/users/NAME.html``,
``/ui/assets/plotly.min.js``), so the pages' relative links and the library's path work the
same as from disk. Every route needs an API key with the ``read`` scope, as ``/v1`` does; a
browser sends it as an ``Authorization: Bearer`` header (a proxy or an extension adds it).

Each page is rendered per request with :class:`~weightstream.report.site.Renderer`: the
store is read on the service's store thread (``committer.read``, between commit groups), so a
reading's verdict shows on its user's page as soon as its group has committed. The HTML is
rendered off the event loop. The index and the cohort read every user's history (one pass,
without the smoother, whose values they do not show): fine for a care team's cohort, slow for
tens of thousands of users, where the static site (``weightstream report``) is the tool.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from weightstream.report.data import CohortTally, UserReport, audits_by_user
from weightstream.report.site import Renderer, plotly_js, user_page_name

__all__ = ["router"]


def _service(request: Request) -> Any:
    from weightstream.service.state import service_of

    return service_of(request)


def _renderer(service: Any) -> Renderer:
    clock = service.clock
    return Renderer(service.processor.store, service.config, clock=clock.now)


def _all_reports(renderer: Renderer) -> list[UserReport]:
    """Every user's report without smoothed values (read on the store thread)."""
    store = renderer.store
    audits = audits_by_user(store.audits())
    reports = [renderer.user_report(u, audits.get(u, []), smooth=False) for u in store.users()]
    return [r for r in reports if r.readings]


def router() -> APIRouter:
    """The ``/ui`` routes (read scope), to include in the service's app."""
    from weightstream.service.auth import require
    from weightstream.service.keys import Scope

    ui = APIRouter(
        prefix="/ui", dependencies=[Depends(require(Scope.READ))], include_in_schema=False
    )

    @ui.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("index.html")

    @ui.get("/index.html", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        service = _service(request)
        renderer = _renderer(service)
        reports = await service.committer.read(lambda: _all_reports(renderer))
        html = await run_in_threadpool(renderer.render_index, [r.summary for r in reports])
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @ui.get("/cohort.html", response_class=HTMLResponse)
    async def cohort(request: Request) -> HTMLResponse:
        service = _service(request)
        renderer = _renderer(service)

        def read() -> Any:
            tally = CohortTally()
            for report in _all_reports(renderer):
                tally.add(report)
            return renderer.cohort(tally)

        summary = await service.committer.read(read)
        html = await run_in_threadpool(renderer.render_cohort, summary)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @ui.get("/users/{name}", response_class=HTMLResponse)
    async def user(request: Request, name: str) -> HTMLResponse:
        service = _service(request)
        renderer = _renderer(service)

        def read() -> UserReport | None:
            store = renderer.store
            for user_id in store.users():
                if user_page_name(user_id) == name:
                    return renderer.user_report(user_id)
            return None

        report = await service.committer.read(read)
        if report is None or not report.readings:
            raise HTTPException(404, "no such user page")
        html = await run_in_threadpool(renderer.render_user, report)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @ui.get("/assets/plotly.min.js")
    async def plotly() -> Response:
        return Response(
            plotly_js(),
            media_type="text/javascript",
            headers={"Cache-Control": "private, max-age=86400"},
        )

    return ui
