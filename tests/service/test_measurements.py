"""POST /v1/measurements: one or many readings, idempotent, partial batches, limits."""

from __future__ import annotations

import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from weightstream.engine.results import RESULT_FIELDS
from weightstream.service import ServiceSettings

T0 = datetime(2025, 1, 1, 8, tzinfo=UTC)


def reading(i: int, user: str = "u1", weight: float = 80.0, **extra):
    return {
        "id": f"{user}-r{i}",
        "user_id": user,
        "timestamp": (T0 + timedelta(days=i)).isoformat(),
        "weight": weight + 0.1 * (i % 5),
        "unit": "kg",
        "source": "patient-device",
        **extra,
    }


def test_one_reading_gets_one_result_with_the_results_file_fields(svc) -> None:
    """A single reading is decided, stored, and answered with the results file's fields."""
    r = svc.post(reading(0))
    assert r.status_code == 200
    (result,) = r.json()["results"]
    assert tuple(result) == RESULT_FIELDS
    assert result["verdict"] == "accepted" and result["reset_type"] == "initial"
    assert result["row"] == 1 and result["reading_id"] == "u1-r0"
    assert svc.table_counts()["readings"] == 1


def test_batch_answers_in_order(svc) -> None:
    """A batch gets one result per reading, in request order, whatever the time order."""
    batch = [reading(i) for i in (3, 1, 2, 0)]
    results = svc.post(batch).json()["results"]
    assert [r["reading_id"] for r in results] == ["u1-r3", "u1-r1", "u1-r2", "u1-r0"]
    assert [r["row"] for r in results] == [1, 2, 3, 4]
    # Decided in time order, as a file is: the earliest one is the initial reset.
    assert results[3]["reset_type"] == "initial"
    assert all(r["verdict"] == "accepted" for r in results)


def test_resubmission_gives_the_same_answer_and_changes_nothing(svc) -> None:
    """Idempotent: the same readings again give the same answers; no row is written."""
    batch = [reading(i) for i in range(5)] + [reading(9, weight=150.0)]
    first = svc.post(batch).json()
    counts = svc.table_counts()
    again = svc.post(batch).json()
    assert again == first
    assert svc.table_counts() == counts


def test_resubmission_without_ids_is_idempotent_by_content(svc) -> None:
    """A reading without an id is identified by its content."""
    one = {"user_id": "u2", "timestamp": "2025-02-01T07:00:00Z", "weight": 70.5}
    first = svc.post(one).json()
    counts = svc.table_counts()
    assert svc.post(one).json() == first
    assert svc.table_counts() == counts
    assert first["results"][0]["reading_id"].startswith("h:")


def test_a_copy_with_another_id_is_a_duplicate(svc) -> None:
    """The same content under a new id is a duplicate, as in a file."""
    svc.post(reading(0))
    copy = dict(reading(0), id="other-id")
    (result,) = svc.post(copy).json()["results"]
    assert result["verdict"] == "duplicate" and result["reason"] == "duplicate_content"


def test_a_repeated_reading_inside_one_batch_is_a_duplicate_and_stays_so(svc) -> None:
    """Twice the same reading in one batch: accepted then duplicate; resubmitted, the same."""
    batch = [reading(0), reading(0)]
    first = svc.post(batch).json()["results"]
    assert [r["verdict"] for r in first] == ["accepted", "duplicate"]
    assert svc.post(batch).json()["results"] == first


def test_partial_batch_good_readings_processed_bad_ones_get_verdicts(svc) -> None:
    """Bad readings get invalid verdicts with the CSV reasons; good ones are stored."""
    batch = [
        reading(0),
        {"user_id": "u1", "timestamp": "2025-01-02", "weight": "72,5"},
        {"user_id": "u1", "timestamp": "2999-01-01", "weight": 80},
        {"user_id": "u1", "timestamp": "2025-01-03", "weight": 27.1, "unit": "kg/m2"},
        {"user_id": "", "timestamp": "2025-01-03", "weight": 80},
        {"user_id": "u1", "timestamp": "2025-01-03", "weight": 1e308},
        {"user_id": "u1", "timestamp": "yesterday", "weight": 80},
        reading(1),
    ]
    results = svc.post(batch).json()["results"]
    assert [r["verdict"] for r in results] == ["accepted"] + ["invalid"] * 6 + ["accepted"]
    assert [r["reason"] for r in results[1:7]] == [
        "not_a_number",
        "timestamp_in_future",
        "unit_is_bmi",
        "missing_user",
        "out_of_range",
        "bad_timestamp",
    ]
    assert svc.table_counts()["readings"] == 2
    for r in results[1:7]:  # an invalid result names the field, never the value
        assert "72" not in r["message"] and "27.1" not in r["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timestamp": "2025-01-01", "weight": 80}, "user_id"),
        ({"user_id": "u1", "weight": 80}, "timestamp"),
        ({"user_id": "u1", "timestamp": "2025-01-01"}, "weight"),
        ({"user_id": "u1", "timestamp": "2025-01-01", "weight": {"kg": 80}}, "weight"),
        ({"user_id": "u1", "timestamp": "2025-01-01", "weight": True}, "weight"),
        ({"user_id": 7, "timestamp": "2025-01-01", "weight": 80}, "user_id"),
        ({"user_id": "u1", "timestamp": "2025-01-01", "weight": 80, "extra": 1}, "extra"),
        ({"readings": []}, "readings"),
        ({"readings": [{"user_id": "u1", "timestamp": "2025-01-01"}]}, "weight"),
    ],
)
def test_malformed_body_is_422_with_per_field_errors(svc, body, field) -> None:
    """A body missing fields or with wrong types: 422 naming each field, values not echoed."""
    r = svc.post(body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any(field in map(str, e["loc"]) for e in detail)
    assert all(set(e) == {"loc", "msg", "type"} for e in detail)
    assert "80" not in json.dumps(detail)
    assert svc.table_counts()["readings"] == 0


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2", '{"user_id": "\u00e9"'.encode()])
def test_not_json_is_422(svc, raw) -> None:
    """A body that is not JSON is a 422."""
    r = svc.client.post(
        "/v1/measurements", content=raw, headers={**svc.auth(), "content-type": "application/json"}
    )
    assert r.status_code == 422


def test_body_over_the_cap_is_413(svc_factory) -> None:
    """A body over max_body_bytes gets 413, by Content-Length or while streaming."""
    svc = svc_factory(settings=ServiceSettings(max_body_bytes=4096, max_batch=100))
    big = [reading(i) for i in range(60)]
    r = svc.post(big)
    assert r.status_code == 413
    assert "Traceback" not in r.text

    def chunks():
        data = json.dumps({"readings": big}).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = svc.client.post(
        "/v1/measurements",
        content=chunks(),
        headers={**svc.auth(), "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert svc.table_counts()["readings"] == 0


def test_batch_over_the_reading_cap_is_413(svc_factory) -> None:
    """More readings than max_batch: 413, nothing stored."""
    svc = svc_factory(settings=ServiceSettings(max_batch=5))
    r = svc.post([reading(i) for i in range(6)])
    assert r.status_code == 413 and "5" in r.json()["detail"]
    assert svc.table_counts()["readings"] == 0
    assert svc.post([reading(i) for i in range(5)]).status_code == 200


def test_default_cap_is_10000(svc) -> None:
    """The default batch cap is 10,000 readings."""
    assert svc.app.state.service.settings.max_batch == 10_000


def test_concurrent_requests_for_one_user_never_interleave_and_commit_in_groups(svc) -> None:
    """Many requests at once: all stored once, the user's state equals a sequential run."""
    readings = [reading(i, user="c1") for i in range(80)]

    def send(r):
        return svc.post(r).json()["results"][0]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, readings))
    assert len({a["reading_id"] for a in answers}) == 80
    conn = sqlite3.connect(svc.db)
    n, version = conn.execute(
        "SELECT (SELECT count(*) FROM readings WHERE user_id = 'c1'), "
        "(SELECT version FROM user_states WHERE user_id = 'c1')"
    ).fetchone()
    conn.close()
    assert n == 80
    stats = svc.app.state.service.committer.stats
    assert stats.readings == 80
    # The stored history equals a replay: rebuild changes nothing.
    rec = svc.client.post("/v1/users/c1/recover?dry_run=true", headers=svc.auth()).json()
    assert rec["differences"] == [] and rec["readings"] == 80
    assert version >= 1


def test_group_commit_shares_one_transaction(svc) -> None:
    """Requests that arrive together are committed in fewer groups than requests."""
    import threading

    committer = svc.app.state.service.committer
    before = committer.stats.groups
    barrier = threading.Barrier(12)

    def send(i):
        barrier.wait()
        return svc.post(reading(0, user=f"g{i}")).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(send, range(12)))
    assert codes == [200] * 12
    assert committer.stats.groups - before < 12


def test_no_weight_and_no_trace_in_logs(svc, caplog) -> None:
    """Processing logs no weight and no stack trace at INFO and above."""
    caplog.set_level(logging.INFO)
    svc.post(
        [reading(i, weight=83.37) for i in range(3)]
        + [{"user_id": "u1", "timestamp": "x", "weight": 91.19}]
    )
    text = "\n".join(rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO)
    assert "83.3" not in text and "91.19" not in text and "Traceback" not in text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_422(svc, content_type) -> None:
    """A valid reading sent without a JSON content type is refused (422 at the body), as
    FastAPI refuses it; nothing is stored."""
    headers = svc.auth()
    if content_type is not None:
        headers["content-type"] = content_type
    r = svc.client.post("/v1/measurements", content=json.dumps(reading(1)), headers=headers)
    assert r.status_code == 422
    assert all(e["loc"][0] == "body" for e in r.json()["detail"])
    assert svc.table_counts()["readings"] == 0


def test_json_with_a_charset_is_read(svc) -> None:
    """``application/json; charset=utf-8`` and ``application/fhir+json`` are JSON."""
    for content_type in ("application/json; charset=utf-8", "application/fhir+json"):
        body = json.dumps(reading(len(content_type)))
        headers = {**svc.auth(), "content-type": content_type}
        r = svc.client.post("/v1/measurements", content=body, headers=headers)
        assert r.status_code == 200, r.text
