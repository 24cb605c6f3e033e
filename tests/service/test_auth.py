"""Every /v1 and /fhir route needs a bearer key with its scope; keys are stored as hashes."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

READING = {"user_id": "u1", "timestamp": "2025-01-01T08:00:00Z", "weight": 80.0}
OBS = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    "subject": {"reference": "Patient/u1"},
    "effectiveDateTime": "2025-01-01T08:00:00Z",
    "valueQuantity": {
        "value": 80,
        "unit": "kg",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    },
}

#: (method, path, JSON body, scope needed)
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", "/v1/measurements", READING, "write"),
    ("GET", "/v1/users/u1/estimate", None, "read"),
    ("GET", "/v1/users/u1/measurements", None, "read"),
    ("GET", "/v1/users/u1/resets", None, "read"),
    ("POST", "/v1/users/u1/recover", None, "write"),
    ("POST", "/fhir/Observation", OBS, "write"),
    ("POST", "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": []}, "write"),
    ("GET", "/fhir/Observation?subject=Patient/u1", None, "read"),
]


def _call(svc, method: str, path: str, body: Any, headers: dict[str, str]):
    return svc.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_no_key_is_401(svc, method, path, body, scope) -> None:
    """A request without a key gets 401 with a Bearer challenge, and nothing is stored."""
    before = svc.table_counts()
    r = _call(svc, method, path, body, {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert svc.table_counts() == before


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
@pytest.mark.parametrize(
    "bad", ["ws_000000000000_" + "A" * 43, "not-a-key", "", "ws_", "Basic dXNlcjpwYXNz"]
)
def test_wrong_key_is_401(svc, method, path, body, scope, bad) -> None:
    """An unknown, malformed or non-bearer key gets 401."""
    header = bad if bad.startswith("Basic") else f"Bearer {bad}"
    r = _call(svc, method, path, body, {"Authorization": header})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"), [r for r in ROUTES if r[3] == "write"]
)
def test_read_key_on_write_route_is_403(svc, method, path, body, scope) -> None:
    """A read-only key cannot write: 403, nothing stored."""
    before = svc.table_counts()
    r = _call(svc, method, path, body, svc.auth(svc.read_key))
    assert r.status_code == 403
    assert "write" in r.text
    assert svc.table_counts() == before


@pytest.mark.parametrize(("method", "path", "body", "scope"), [r for r in ROUTES if r[3] == "read"])
def test_write_only_key_on_read_route_is_403(svc, method, path, body, scope) -> None:
    """A key without the read scope cannot read: 403."""
    from weightstream.service import Scope

    key = svc.keys.create([Scope.WRITE]).secret
    r = _call(svc, method, path, body, svc.auth(key))
    assert r.status_code == 403


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_right_key_passes(svc, method, path, body, scope) -> None:
    """With the right scope the route answers (not 401/403)."""
    key = svc.write_key if scope == "write" else svc.read_key
    r = _call(svc, method, path, body, svc.auth(key))
    assert r.status_code not in (401, 403)


def test_keys_are_stored_only_as_hashes(svc) -> None:
    """The database file holds no key in clear; the table holds a SHA-256 per key."""
    raw = svc.db.read_bytes()
    for path in svc.db.parent.glob(svc.db.name + "*"):
        raw += path.read_bytes()
    for key in (svc.write_key, svc.read_key):
        secret = key.split("_", 2)[2]  # after "ws_" and the id: the random part, whole
        assert secret.encode() not in raw
    conn = sqlite3.connect(svc.db)
    hashes = [h for (h,) in conn.execute("SELECT key_hash FROM api_keys")]
    conn.close()
    assert len(hashes) == 2 and all(len(h) == 64 for h in hashes)


def test_revoked_key_is_refused(svc) -> None:
    """A revoked key stops working (the verified-key cache is dropped on revoke)."""
    from weightstream.service import Scope

    created = svc.keys.create([Scope.READ])
    assert svc.get("/v1/users/u1/resets", key=created.secret).status_code == 200
    assert svc.keys.revoke(created.key.key_id)
    assert svc.get("/v1/users/u1/resets", key=created.secret).status_code == 401
    assert not svc.keys.revoke(created.key.key_id)


def test_revoked_in_another_process_is_refused_within_cache_time(tmp_path) -> None:
    """A key revoked through another connection is refused once the cache time has passed."""
    from weightstream.service import Scope, open_keys
    from weightstream.testing import FakeClock

    clock = FakeClock()
    db = tmp_path / "k.db"
    server_side = open_keys(db, clock=clock)
    server_side.cache_s = 1.0
    other = open_keys(db)
    key = other.create([Scope.READ])
    assert server_side.verify(key.secret) == frozenset({Scope.READ})
    other.revoke(key.key.key_id)
    assert server_side.verify(key.secret) is not None  # cached
    clock.advance(1.5)
    assert server_side.verify(key.secret) is None
    other.close()
    server_side.close()


def test_key_of_one_id_with_another_secret_is_refused(svc) -> None:
    """A key whose id exists but whose secret differs is refused (the hash decides)."""
    key_id = svc.write_key.split("_")[1]
    forged = f"ws_{key_id}_" + "B" * 43
    assert svc.post([READING], key=forged).status_code == 401


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"readings": []}'])
def test_the_write_route_checks_the_key_before_the_body(svc, raw) -> None:
    """POST /v1/measurements reads no body for a request without a valid key: 401, not 422."""
    headers = {"content-type": "application/json"}
    r = svc.client.post("/v1/measurements", content=raw, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = svc.client.post("/v1/measurements", content=raw, headers={**headers, **svc.auth("x")})
    assert r.status_code == 401
    r = svc.client.post(
        "/v1/measurements", content=raw, headers={**headers, **svc.auth(svc.read_key)}
    )
    assert r.status_code == 403


def test_the_write_route_keeps_its_openapi_operation(svc) -> None:
    """The direct route's operation shows its bearer scheme, its body and its answers."""
    op = svc.client.get("/openapi.json").json()["paths"]["/v1/measurements"]["post"]
    assert op["security"] == [{"ApiKey": []}]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert "ReadingIn" in json.dumps(schema) and "BatchIn" in json.dumps(schema)
    assert {"200", "401", "403", "413", "422"} <= set(op["responses"])
