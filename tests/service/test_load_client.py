"""The load benchmark's client (``benchmarks/service_load.py``) speaks to the real server: one
keep-alive connection, answers read by their Content-Length, readings as the benchmark makes
them (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "service_load.py"


def _load() -> ModuleType:
    name = "_weightstream_service_load_bench"
    spec = importlib.util.spec_from_file_location(name, _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_batches_hold_consecutive_readings_of_each_user() -> None:
    """``per_user`` readings of one user follow each other, each user's in time order."""
    bench = _load()
    readings = bench.Readings(users=7)
    batch = readings.batch(20, per_user=3)
    users = [r["user_id"] for r in batch]
    assert len(batch) == 20 and len({r["id"] for r in batch}) == 20
    assert users[:3] == [users[0]] * 3 and users[3] != users[0]
    again = [r for r in readings.batch(30, per_user=3) if r["user_id"] == users[0]]
    times = [r["timestamp"] for r in batch if r["user_id"] == users[0]] + [
        r["timestamp"] for r in again
    ]
    assert times == sorted(times)


def test_raw_client_reuses_one_connection_and_reads_every_answer(live_server) -> None:
    """Several requests over one connection, big and small answers, errors included."""
    bench = _load()
    url = urlsplit(live_server.url)
    client = bench.RawClient(url.hostname, url.port, live_server.write_key)
    readings = bench.Readings(users=3)
    try:
        status, body = client.request("GET", "/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        sock = client._sock
        one = readings.one()
        status, body = client.request("POST", "/v1/measurements", json.dumps(one).encode())
        assert status == 200
        assert json.loads(body)["results"][0]["reading_id"] == one["id"]
        big = {"readings": readings.batch(500, per_user=5)}
        status, body = client.request("POST", "/v1/measurements", json.dumps(big).encode())
        results = json.loads(body)["results"]
        assert status == 200 and [r["reading_id"] for r in results] == [
            r["id"] for r in big["readings"]
        ]
        status, body = client.request("POST", "/v1/measurements", b"{not json")
        assert status == 422
        assert client._sock is sock  # the same keep-alive connection all along
    finally:
        client.close()
    anonymous = bench.RawClient(url.hostname, url.port)
    try:
        assert anonymous.request("POST", "/v1/measurements", b"{}")[0] == 401
    finally:
        anonymous.close()
