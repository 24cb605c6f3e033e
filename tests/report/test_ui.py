"""The report live under /ui/: the same pages from the current store, behind read keys."""

from __future__ import annotations

import csv
import json
import re
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from weightstream.config import Config
from weightstream.report import charts
from weightstream.report.site import user_page_name
from weightstream.report.ui import router
from weightstream.service import Scope, create_app, open_keys
from weightstream.store.sqlite import SQLiteStore
from weightstream.synth import write_stream

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SEED = 20261216
_DATA = re.compile(r'<script type="application/json" id="page-data">(.*?)</script>', re.S)


def synth_readings(tmp_path: Path, per_user: int = 24) -> list[dict[str, Any]]:
    """One synthetic user's rows (seeded) as the service's JSON readings."""
    path = tmp_path / "one.csv"
    write_stream(1, per_user, SEED, path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {
            "id": r["id"],
            "user_id": r["user_id"],
            "timestamp": r["effectiveDateTime"],
            "weight": r["weight"],
            "unit": r["unit"],
            "source": r["source_type"],
        }
        for r in rows
    ]


def with_ui(app: Any) -> Any:
    """The app with the /ui routes (included here until the service's factory includes them)."""
    if not any(getattr(r, "path", "") == "/ui/index.html" for r in app.routes):
        app.include_router(router())
    return app


@dataclass
class App:
    app: Any
    store: SQLiteStore
    read_key: str
    write_key: str


@pytest.fixture
def ui_app(tmp_path: Path) -> Iterator[App]:
    db = tmp_path / "ui.db"
    keys = open_keys(db)
    write_key = keys.create([Scope.READ, Scope.WRITE], "tests").secret
    read_key = keys.create([Scope.READ], "reader").secret
    store = SQLiteStore(db)
    try:
        yield App(with_ui(create_app(store, Config(), keys=keys)), store, read_key, write_key)
    finally:
        store.close()
        keys.close()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _page_points(html: str) -> list[str]:
    match = _DATA.search(html)
    assert match is not None
    figure = json.loads(match.group(1))["figure"]
    return [
        c[0] for t in figure["data"] if t["meta"]["role"] == "readings" for c in t["customdata"]
    ]


def test_ui_pages_need_a_read_key_and_show_a_new_reading(ui_app: App, tmp_path: Path) -> None:
    """/ui/ answers 401 without a key; with a read key its pages show what was just posted."""
    readings = synth_readings(tmp_path)
    user = readings[0]["user_id"]
    name = user_page_name(user)
    with TestClient(ui_app.app) as client:
        assert client.get("/ui/index.html").status_code == 401
        first = client.post(
            "/v1/measurements", json={"readings": readings[:-1]}, headers=_bearer(ui_app.write_key)
        )
        assert first.status_code == 200
        page = client.get(f"/ui/users/{name}", headers=_bearer(ui_app.read_key))
        assert page.status_code == 200
        before = _page_points(page.text)
        client.post(
            "/v1/measurements", json={"readings": readings[-1:]}, headers=_bearer(ui_app.write_key)
        )
        after = _page_points(client.get(f"/ui/users/{name}", headers=_bearer(ui_app.read_key)).text)
        assert readings[-1]["id"] in after and readings[-1]["id"] not in before
        index = client.get("/ui/index.html", headers=_bearer(ui_app.read_key))
        assert index.status_code == 200 and user in index.text
        assert client.get("/ui/cohort.html", headers=_bearer(ui_app.read_key)).status_code == 200
        js = client.get("/ui/assets/plotly.min.js", headers=_bearer(ui_app.read_key))
        assert js.status_code == 200 and len(js.content) > 1_000_000
        assert (
            client.get("/ui/users/nobody.html", headers=_bearer(ui_app.read_key)).status_code == 404
        )


@pytest.fixture
def live_ui(ui_app: App) -> Iterator[tuple[str, App]]:
    """The app served by uvicorn on a free loopback port, in a thread of this process."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(ui_app.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", ui_app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_live_ui_in_chromium_sees_a_posted_reading(
    live_ui: tuple[str, App], tmp_path: Path, chromium: tuple[str, list[str]]
) -> None:
    """Headless chromium on a live server's /ui/ (read key in a header): the user page draws
    one DOM point per plotted reading, and after a reading is posted it shows one more; no
    console error and no request outside /ui/."""
    import httpx
    from playwright.sync_api import sync_playwright

    url, app = live_ui
    readings = synth_readings(tmp_path)
    user = readings[0]["user_id"]
    post = lambda rs: httpx.post(  # noqa: E731
        url + "/v1/measurements", json={"readings": rs}, headers=_bearer(app.write_key), timeout=30
    )
    assert post(readings[:-1]).status_code == 200
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium[0],
            headless=True,
            args=chromium[1],
            extra_http_headers=_bearer(app.read_key),
        )
        try:
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/ui/")
            assert page.locator("#users tbody tr").count() == 1
            page.click("#users tbody tr td a")
            page.wait_for_selector("body[data-drawn='1']", timeout=30_000)
            assert page.url == f"{url}/ui/users/{user_page_name(user)}"
            before = page.locator("#chart .scatterlayer path.point").count()
            assert post(readings[-1:]).status_code == 200
            page.reload()
            page.wait_for_selector("body[data-drawn='1']", timeout=30_000)
            html = page.content()
            after = page.locator("#chart .scatterlayer path.point").count()
            figure = json.loads(_DATA.search(html).group(1))["figure"]  # type: ignore[union-attr]
            assert after == charts.marker_count(figure)
            assert readings[-1]["id"] in _page_points(html)
            valid_last = readings[-1]["weight"] not in ("", None)
            assert after == before + (1 if valid_last else 0)
        finally:
            context.close()
    assert errors == []
    outside = [u for u in requests if not u.startswith(url + "/ui/")]
    assert not outside, outside


def test_ui_on_weightstream_serve(tmp_path: Path, chromium: tuple[str, list[str]]) -> None:
    """``weightstream serve`` (the real command, a child process) serves /ui/ behind read keys:
    after a reading is posted, headless chromium sees it on its user's page."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx
    from playwright.sync_api import sync_playwright

    db = tmp_path / "serve.db"
    keys = open_keys(db)
    write_key = keys.create([Scope.READ, Scope.WRITE]).secret
    read_key = keys.create([Scope.READ]).secret
    keys.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    launch = (
        "import weightstream.cli as c\n"
        "from weightstream.cli import serve\n"
        "if 'serve' not in {i.name for i in c.app.registered_commands}: serve.register(c.app)\n"
        "c.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSTREAM_")}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", launch, "serve", "--db", str(db), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        readings = [r for r in synth_readings(tmp_path) if r["weight"]]
        post = lambda rs: httpx.post(  # noqa: E731
            url + "/v1/measurements", json={"readings": rs}, headers=_bearer(write_key), timeout=30
        )
        assert post(readings[:-1]).status_code == 200
        assert httpx.get(url + "/ui/index.html", timeout=30).status_code == 401
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=chromium[0], headless=True,
                args=chromium[1], extra_http_headers=_bearer(read_key),
            )  # fmt: skip
            try:
                errors: list[str] = []
                page = context.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(url + "/ui/")
                page.click("#users tbody tr td a")
                page.wait_for_selector("body[data-drawn='1']", timeout=30_000)
                assert readings[-1]["id"] not in _page_points(page.content())
                assert post(readings[-1:]).status_code == 200
                page.reload()
                page.wait_for_selector("body[data-drawn='1']", timeout=30_000)
                assert readings[-1]["id"] in _page_points(page.content())
                assert errors == []
            finally:
                context.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
