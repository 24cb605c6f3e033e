"""GET estimate, measurements (range, pages), resets; POST recover; health, readiness, metrics."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

T0 = datetime(2025, 3, 1, 7, tzinfo=UTC)


def _readings(user: str, n: int, start: int = 0):
    return [
        {
            "id": f"{user}-{i}",
            "user_id": user,
            "timestamp": (T0 + timedelta(days=i)).isoformat(),
            "weight": 90.0 - 0.05 * i,
            "source": "patient-device",
        }
        for i in range(start, start + n)
    ]


def test_estimate_of_unknown_user_is_404(svc) -> None:
    """No state: 404."""
    assert svc.get("/v1/users/nobody/estimate").status_code == 404


def test_estimate_after_readings(svc) -> None:
    """The estimate has the filtered weight, trend, uncertainty, adaptation and its time."""
    results = svc.post(_readings("e1", 10)).json()["results"]
    est = svc.get("/v1/users/e1/estimate").json()
    assert est["weight_kg"] == results[-1]["filtered_weight"]
    assert est["trend_kg_week"] == results[-1]["trend_kg_week"]
    assert est["std_kg"] == results[-1]["std_kg"]
    assert isinstance(est["adapting"], bool)
    assert datetime.fromisoformat(est["as_of"]) == T0 + timedelta(days=9)
    assert est["accepted_count"] == 10


def test_measurements_range_and_pages(svc) -> None:
    """History within [since, until), oldest first, in pages joined by the cursor."""
    svc.post(_readings("m1", 30))
    since = (T0 + timedelta(days=5)).isoformat()
    until = (T0 + timedelta(days=25)).isoformat()
    seen, cursor = [], None
    while True:
        params = {"since": since, "until": until, "limit": 7}
        if cursor is not None:
            params["after"] = cursor
        page = svc.get("/v1/users/m1/measurements", **params).json()
        seen += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    assert [m["reading_id"] for m in seen] == [f"m1-{i}" for i in range(5, 25)]
    assert all(m["verdict"] == "accepted" and m["filtered_weight"] is not None for m in seen)
    # Smoothed from all the readings: close to the filtered value, and present where accepted.
    assert all(abs(m["smoothed_weight"] - m["filtered_weight"]) < 2.0 for m in seen)
    assert all(m["smoothed_std"] > 0 for m in seen)


def test_measurements_of_unknown_user_is_404(svc) -> None:
    """No stored readings: 404."""
    assert svc.get("/v1/users/nobody/measurements").status_code == 404


def test_bad_query_parameters_are_422(svc) -> None:
    """A limit out of range or a time that is not a time: 422."""
    svc.post(_readings("q1", 2))
    assert svc.get("/v1/users/q1/measurements", limit=0).status_code == 422
    assert svc.get("/v1/users/q1/measurements", since="soon").status_code == 422


def test_resets_lists_the_audit_record(svc) -> None:
    """The user's reset transactions: the initial one, then a hard reset after a long gap."""
    svc.post(_readings("r1", 3))
    svc.post(_readings("r1", 2, start=80))
    resets = svc.get("/v1/users/r1/resets").json()
    assert [r["type"] for r in resets] == ["initial", "hard"]
    assert all(r["outcome"] == "committed" for r in resets)
    assert svc.get("/v1/users/nobody/resets").json() == []


def test_recover_dry_run_and_apply(svc) -> None:
    """Recover replays the history; a state damaged behind the service's back is restored."""
    svc.post(_readings("v1", 12))
    before = svc.get("/v1/users/v1/estimate").json()
    dry = svc.client.post("/v1/users/v1/recover?dry_run=true", headers=svc.auth()).json()
    assert dry["readings"] == 12 and dry["differences"] == [] and not dry["applied"]
    conn = sqlite3.connect(svc.db)
    conn.execute("UPDATE user_states SET accepted_count = 3 WHERE user_id = 'v1'")
    conn.commit()
    conn.close()
    svc.app.state.service.processor.forget()
    done = svc.client.post("/v1/users/v1/recover", headers=svc.auth()).json()
    assert done["applied"] and "accepted_count" in done["differences"]
    after = svc.get("/v1/users/v1/estimate").json()
    assert after["accepted_count"] == 12 and after["weight_kg"] == before["weight_kg"]
    assert svc.client.post("/v1/users/none/recover", headers=svc.auth()).status_code == 404


def test_health_ready_metrics_need_no_key(svc) -> None:
    """/healthz, /readyz (store reachable, breaker state) and /metrics answer without a key."""
    assert svc.client.get("/healthz").json() == {"status": "ok"}
    ready = svc.client.get("/readyz").json()
    assert ready == {"status": "ready", "store": "ok", "breaker": "closed"}
    svc.post(_readings("p1", 3))
    text = svc.client.get("/metrics").text
    assert (
        'weightstream_readings_total{reason="ok",source="patient-device",verdict="accepted"} 3.0'
        in text
    )
    assert "weightstream_http_requests_total" in text
    assert "weightstream_group_commit_readings_count" in text


def test_readyz_is_503_when_the_store_fails(svc) -> None:
    """A store that cannot answer makes /readyz 503 (no trace in the body)."""
    svc.store.close()
    r = svc.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["store"] == "error" and "Traceback" not in r.text


def test_storage_failure_is_503_without_values(svc) -> None:
    """A store failure on commit: 503 with a plain message; no weight, no trace."""
    svc.store.close()
    r = svc.post(_readings("f1", 1))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "90" not in r.text and "Traceback" not in r.text
