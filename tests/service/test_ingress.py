"""The hot path of POST /v1/measurements answers as FastAPI's route does, and is counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from weightstream.service import ServiceSettings
from weightstream.service.ingress import Ingress

from .conftest import Svc, make_svc  # type: ignore[import-not-found]

T0 = datetime(2025, 1, 1, 8, tzinfo=UTC)


def _reading(i: int, user: str = "u1", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{user}-r{i}",
        "user_id": user,
        "timestamp": (T0 + timedelta(days=i)).isoformat(),
        "weight": 80.0 + 0.1 * (i % 5),
        "unit": "kg",
        "source": "patient-device",
        **extra,
    }


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Svc, Svc]]:
    """Two apps over two fresh databases: the first serves the route by its hot path, the
    second through FastAPI (its ingress removed)."""
    settings = ServiceSettings(max_batch=5, max_body_bytes=4096)
    (tmp_path / "hot").mkdir()
    (tmp_path / "fastapi").mkdir()
    hot_gen = make_svc(tmp_path / "hot", settings=settings)
    slow_gen = make_svc(tmp_path / "fastapi", settings=settings)
    hot, slow = next(hot_gen), next(slow_gen)
    assert isinstance(hot.app.ingress, Ingress)
    slow.app.ingress = None
    yield hot, slow
    for gen in (hot_gen, slow_gen):
        for _ in gen:
            pass


def _post(svc: Svc, body: bytes, headers: Any) -> tuple[int, Any, dict[str, str]]:
    r = svc.client.post("/v1/measurements", content=body, headers=headers)
    kept = {k: r.headers[k] for k in ("content-type", "www-authenticate") if k in r.headers}
    return r.status_code, r.json(), kept


def _cases(svc: Svc) -> list[tuple[str, bytes, Any]]:
    """(name, body, headers) of requests that take every way through the route."""
    js = {"content-type": "application/json"}
    write, read = svc.auth(svc.write_key), svc.auth(svc.read_key)
    one = json.dumps(_reading(0)).encode()
    batch = json.dumps(
        {"readings": [_reading(1), _reading(2), {"user_id": "u1", "timestamp": "x", "weight": 1}]}
    ).encode()
    return [
        ("one", one, {**write, **js}),
        ("batch with an invalid reading", batch, {**write, **js}),
        ("resubmitted", one, {**write, **js}),
        ("no key", one, js),
        ("not a bearer key", one, {"Authorization": f"Basic {svc.write_key}", **js}),
        ("unknown key", one, {"Authorization": "Bearer ws_000000000000_" + "x" * 43, **js}),
        ("read scope only", one, {**read, **js}),
        ("not json", b"{not json", {**write, **js}),
        ("empty body", b"", {**write, **js}),
        ("missing field", b'{"user_id": "u1"}', {**write, **js}),
        ("extra field", json.dumps(_reading(3, extra=1)).encode(), {**write, **js}),
        ("not a json content type", one, {**write, "content-type": "text/plain"}),
        ("no content type", one, write),
        ("json+suffix content type", one, {**write, "content-type": "application/fhir+json"}),
        (
            "too many readings",
            json.dumps({"readings": [_reading(10 + i) for i in range(6)]}).encode(),
            {**write, **js},
        ),
        ("body over the cap", b" " * 5000 + one, {**write, **js}),
        (
            "two keys, the first a reader's",
            json.dumps(_reading(4)).encode(),
            [("authorization", read["Authorization"]), ("authorization", write["Authorization"])]
            + list(js.items()),
        ),
        (
            "two content types, the first not json",
            json.dumps(_reading(5)).encode(),
            [*write.items(), ("content-type", "text/plain"), *js.items()],
        ),
    ]


def test_hot_path_answers_as_the_fastapi_route(pair: tuple[Svc, Svc]) -> None:
    """Every kind of request (200, 401, 403, 413, 422) gets the same status, body and
    headers from the hot path as from FastAPI's own route and edge."""
    hot, slow = pair
    for (name, body, headers), (_, body2, headers2) in zip(_cases(hot), _cases(slow), strict=True):
        got, want = _post(hot, body, headers), _post(slow, body2, headers2)
        assert got == want, name
    assert hot.table_counts()["readings"] == slow.table_counts()["readings"] == 3


def test_hot_path_is_counted_under_the_route(svc: Svc) -> None:
    """Requests served by the hot path are in /metrics under the route's template, by status."""
    assert svc.post(_reading(0)).status_code == 200
    assert svc.client.post("/v1/measurements", json=_reading(1)).status_code == 401
    text = svc.client.get("/metrics").text
    for status in ("200", "401"):
        line = (
            'weightstream_http_requests_total{method="POST",route="/v1/measurements",'
            f'status="{status}"}} 1.0'
        )
        assert line in text


@pytest.mark.parametrize("hot", [True, False])
def test_an_unexpected_failure_is_a_plain_500_without_weight_or_trace(
    pair: tuple[Svc, Svc], caplog: pytest.LogCaptureFixture, hot: bool
) -> None:
    """An exception no handler knows: 500 "internal error", one log line naming its type."""
    svc = pair[0] if hot else pair[1]

    async def broken(readings: Any) -> Any:
        raise ValueError("weight 83.37 kg")

    svc.app.state.service.committer.submit = broken
    caplog.set_level(logging.INFO)
    r = svc.post(_reading(0))
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "ValueError" in text and "83.37" not in text and "Traceback" not in text
    assert not any(rec.exc_info for rec in caplog.records)


_BATCHES = [
    {"readings": [_reading(0), _reading(1, user="u2")]},
    {"readings": [{"user_id": "u", "timestamp": 1735718400, "weight": 81}]},
    {"readings": [{"user_id": "u", "timestamp": 1735718400123.5, "weight": "81,5", "id": None}]},
    {"readings": [{"user_id": "\u00e9\u6f22", "timestamp": "2025-01-01", "weight": 1e308}]},
    {"readings": [_reading(0, unit=None, source=None)]},
]
#: Single readings the fast parse reads as the union's ``one`` member.
_ONES = [r["readings"][0] for r in _BATCHES] + [_reading(7, id=None)]
#: Bodies that orjson does not read and pydantic does: validated the whole way, as before.
_NOT_ORJSON = [
    b'{"readings": [{"user_id": "u", "timestamp": 99999999999999999999999, "weight": 1}]}',
    b'{"readings": [{"user_id": "u", "timestamp": "x", "weight": NaN}]}',
    b'{"readings": [{"user_id": "u", "timestamp": 1, "weight": -18446744073709551617}]}',
    b'{"user_id": "u", "timestamp": 99999999999999999999999, "weight": 1}',
    b'{"user_id": "u", "timestamp": "x", "weight": Infinity}',
]
_REFUSED = [
    b'{"readings": []}',
    b'{"readings": [{"user_id": 1, "timestamp": "x", "weight": 1}]}',
    b'{"readings": [{"user_id": "u", "timestamp": true, "weight": 1}]}',
    b'{"readings": [{"user_id": "u", "timestamp": "x", "weight": 1, "extra": 2}]}',
    b'{"readings": [{"user_id": "u", "timestamp": "x", "weight": 1}], "more": 1}',
    b'{"readings": {"user_id": "u"}}',
    b'{"readings": [1]',
    b'{"user_id": "u"}',
    b'{"user_id": "u", "timestamp": [], "weight": 1}',
    b'{"user_id": "u", "timestamp": "x", "weight": 1, "readingz": []}',
    b'{"id": 5, "user_id": "u", "timestamp": "x", "weight": 1}',
    b'[{"user_id": "u", "timestamp": "x", "weight": 1}]',
    b'{"user_id": "u", "timestamp": "x", "weight": 1',
]


def _typed(model: Any) -> Any:
    """A validated body with each value's type (81 and 81.0 compare equal; they must not)."""
    if hasattr(model, "readings"):
        return [_typed(r) for r in model.readings]
    return [(k, type(v), repr(v)) for k, v in model.model_dump().items()]


@pytest.mark.parametrize("raw", [json.dumps(b).encode() for b in [*_BATCHES, *_ONES]] + _NOT_ORJSON)
def test_a_body_parsed_by_orjson_equals_the_union_from_json(raw: bytes) -> None:
    """A valid batch or reading read by the fast parse is the body pydantic's JSON validation
    gives."""
    from weightstream.service.routes_v1 import _BODY, parse_body

    assert _typed(parse_body(raw, "application/json")) == _typed(_BODY.validate_json(raw))


@pytest.mark.parametrize("raw", _REFUSED)
def test_a_refused_body_has_the_union_errors(raw: bytes) -> None:
    """A batch or reading the fast parse refuses gets the errors of the union validated from
    JSON."""
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    from weightstream.service.routes_v1 import _BODY, parse_body

    with pytest.raises(ValidationError) as want:
        _BODY.validate_json(raw)
    with pytest.raises(RequestValidationError) as got:
        parse_body(raw, "application/json")
    expected = [{**e, "loc": ("body", *e["loc"])} for e in want.value.errors(include_url=False)]
    assert list(got.value.errors()) == expected
