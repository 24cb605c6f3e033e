"""The site in a real browser: Debian's chromium, headless, fresh profile, from disk.

``make test`` installs chromium when it is missing (``scripts/install-chromium``); a missing
browser fails here rather than skipping. Playwright drives the installed binary over the
DevTools protocol (``executable_path``: no browser is downloaded).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from weightstream.report import charts
from weightstream.report.site import user_page_name


class Browser:
    """A headless chromium with a fresh profile; records requests and console errors."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.requests: list[str] = []
        self.errors: list[str] = []
        context.on("request", lambda r: self.requests.append(r.url))
        self.page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: Path) -> Any:
        self.page.goto(path.resolve().as_uri())
        return self.page


@pytest.fixture
def browser(tmp_path: Path, chromium: tuple[str, list[str]]) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium[0],
            headless=True,
            args=chromium[1],
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield Browser(context)
        finally:
            context.close()


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, pixels) of an 8-bit RGB/RGBA, non-interlaced PNG (a screenshot)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = colour = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels = bytearray(stride), []
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        pixels += [bytes(line[i : i + 3]) for i in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


def assert_drawn(png: bytes) -> None:
    """The screenshot is not blank: many colours, and a fair share of non-white pixels."""
    _, _, pixels = png_pixels(png)
    inked = sum(1 for p in pixels if p != b"\xff\xff\xff")
    assert len(set(pixels)) > 20
    assert inked > 0.02 * len(pixels)


def assert_local(requests: list[str], root: Path) -> None:
    """Every request is a file under the site's directory."""
    base = root.resolve().as_uri() + "/"
    outside = [u for u in requests if not (u.startswith(base) or u.startswith(("data:", "about:")))]
    assert not outside, outside


def test_user_page_draws_offline(site: Any, read_page: Any, browser: Browser) -> None:
    """A user page from disk: no console error, no request outside DIR, the chart drawn with
    one DOM point per plotted reading and reset."""
    for page_path in sorted((site.out / "users").glob("*.html"))[:3]:
        page = browser.open(page_path)
        page.wait_for_selector("body[data-drawn='1']", timeout=30_000)
        figure = read_page(page_path)["figure"]
        drawn = page.locator("#chart .scatterlayer path.point").count()
        assert drawn == charts.marker_count(figure) > 0
        readings = sum(len(t["x"]) for t in figure["data"] if t["meta"]["role"] == "readings")
        assert drawn - readings == sum(
            len(t["x"]) for t in figure["data"] if t["meta"]["role"] == "resets"
        )
        assert_drawn(page.locator("#chart").screenshot())
    assert browser.errors == []
    assert_local(browser.requests, site.out)
    assert any(u.endswith("/assets/plotly.min.js") for u in browser.requests)


def test_index_and_cohort_offline(site: Any, browser: Browser) -> None:
    """The index lists every user, searches and sorts; the cohort page draws its charts."""
    page = browser.open(site.out / "index.html")
    rows = page.locator("#users tbody tr")
    assert rows.count() == site.summary.users
    first = page.locator("#users tbody tr td a").first.inner_text()
    page.fill("#search", first)
    assert rows.count() == 1
    page.fill("#search", "")
    page.click("#users th[data-key='0']")
    page.click("#users th[data-key='0']")  # descending
    ids = page.locator("#users tbody tr td a").all_inner_texts()
    assert ids == sorted(ids, reverse=True)
    href = page.locator("#users tbody tr td a").first.get_attribute("href")
    assert href == f"users/{user_page_name(ids[0])}"
    page = browser.open(site.out / "cohort.html")
    page.wait_for_selector("body[data-drawn='1']", timeout=30_000)
    assert page.locator(".main-svg").count() >= 4
    assert_drawn(page.locator("#resets").screenshot())
    assert browser.errors == []
    assert_local(browser.requests, site.out)
