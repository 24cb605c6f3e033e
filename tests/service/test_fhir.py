"""FHIR R4: Observations and Bundles in, searchset Bundles with verdict extensions out."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome

from weightstream.service.fhir import EXTENSION_BASE

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def obs(
    user: str = "p1",
    when: str = "2025-01-10T08:00:00Z",
    value: Any = 80.4,
    code: str = "kg",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{user}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": code, "system": UCUM, "code": code},
    }
    body.update(extra)
    return body


def post(svc, body: Any, path: str = "/fhir/Observation"):
    return svc.client.post(
        path, json=body, headers={**svc.auth(), "content-type": "application/fhir+json"}
    )


def ext(resource: dict[str, Any], name: str) -> Any:
    for e in resource.get("extension", []):
        if e["url"] == EXTENSION_BASE + name:
            return e.get("valueCode", e.get("valueQuantity"))
    return None


def test_single_observation_is_stored_and_answered_with_extensions(svc) -> None:
    """201 with the stored Observation (valid FHIR), its verdict and filtered weight."""
    r = post(svc, obs(meta={"source": "clinic-scale"}))
    assert r.status_code == 201
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    Observation.model_validate(body)
    assert ext(body, "verdict") == "accepted"
    assert ext(body, "filtered-weight")["value"] == pytest.approx(80.4)
    assert body["device"]["display"] == "clinic-scale"
    assert svc.table_counts()["readings"] == 1


@pytest.mark.parametrize(
    ("value", "code", "kg"),
    [
        (80.4, "kg", 80.4),
        (80400, "g", 80.4),
        (177.25, "[lb_av]", 177.25 * 0.45359237),
        (177.25, "[lb_ap]", 177.25 * 0.45359237),
    ],
)
def test_units(svc, value, code, kg) -> None:
    """kg, g, [lb_av] and [lb_ap] (read as the export reads it) are converted exactly."""
    body = post(svc, obs(value=value, code=code)).json()
    assert ext(body, "filtered-weight")["value"] == pytest.approx(kg, rel=1e-12)
    assert body["valueQuantity"]["code"] == code


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        (
            {"code": {"coding": [{"system": LOINC, "code": "39156-5", "display": "BMI"}]}},
            "Observation.code",
        ),
        (
            {"code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}},
            "Observation.code",
        ),
        ({"status": "entered-in-error"}, "Observation.status"),
    ],
)
def test_non_weight_observation_is_422_with_operation_outcome(svc, change, expression) -> None:
    """A BMI, a heart rate or an entered-in-error Observation: 422 OperationOutcome."""
    r = post(svc, {**obs(), **change})
    assert r.status_code == 422
    outcome = OperationOutcome.model_validate(r.json())
    assert outcome.issue[0].expression == [expression]
    assert svc.table_counts()["readings"] == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"resourceType": "Patient", "id": "x"}, 422),
        ({"resourceType": "Observation", "status": "final"}, 422),  # no code
        ("not an object", 422),
    ],
)
def test_not_an_observation_is_422(svc, body, status) -> None:
    """Anything the FHIR models refuse is a 422 OperationOutcome."""
    r = post(svc, body)
    assert r.status_code == status
    assert r.json()["resourceType"] == "OperationOutcome"


def test_reading_that_breaks_a_rule_is_422_with_its_reason(svc) -> None:
    """A weight out of range: 422, the reason a CSV row gets, no value in the answer."""
    r = post(svc, obs(value=987.6))
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "out_of_range"
    assert "987" not in r.text
    assert svc.table_counts()["readings"] == 0


def test_resubmitted_observation_is_idempotent(svc) -> None:
    """The same Observation twice: the same answer, nothing written the second time."""
    body = obs(identifier=[{"system": "urn:scale", "value": "reading-77"}])
    first = post(svc, body).json()
    counts = svc.table_counts()
    assert post(svc, body).json() == first
    assert svc.table_counts() == counts
    assert first["identifier"][0]["value"] == "reading-77"


def bundle(kind: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": "Observation"}} for r in resources
        ],
    }


def test_transaction_bundle_commits_all(svc) -> None:
    """A transaction of weights: every entry 201, one result each, all stored."""
    resources = [obs(when=f"2025-01-{d:02d}T08:00:00Z", value=80 + d / 10) for d in range(1, 6)]
    r = post(svc, bundle("transaction", resources), "/fhir")
    assert r.status_code == 200
    answer = r.json()
    Bundle.model_validate(answer)
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 5
    assert svc.table_counts()["readings"] == 5


def test_transaction_with_one_bad_entry_stores_nothing(svc) -> None:
    """All or nothing: one BMI entry refuses the whole transaction."""
    bad = copy.deepcopy(obs(when="2025-01-03T08:00:00Z"))
    bad["code"]["coding"][0]["code"] = "39156-5"
    r = post(svc, bundle("transaction", [obs(), bad]), "/fhir")
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.code"]
    assert svc.table_counts()["readings"] == 0


def test_batch_bundle_is_processed_entry_by_entry(svc) -> None:
    """A batch: good entries stored (201), a bad one answered 422 with its outcome."""
    bad = obs(when="2025-01-03T08:00:00Z", value=-3)
    r = post(svc, bundle("batch", [obs(), bad, obs(when="2025-01-04T08:00:00Z")]), "/fhir")
    answer = r.json()
    Bundle.model_validate(answer)
    assert [e["response"]["status"] for e in answer["entry"]] == [
        "201 Created",
        "422 Unprocessable Entity",
        "201 Created",
    ]
    assert (
        answer["entry"][1]["response"]["outcome"]["issue"][0]["details"]["coding"][0]["code"]
        == "non_positive"
    )
    assert svc.table_counts()["readings"] == 2


def test_bundle_over_the_cap_is_413(svc_factory) -> None:
    """More entries than max_batch: 413 OperationOutcome."""
    from weightstream.service import ServiceSettings

    svc = svc_factory(settings=ServiceSettings(max_batch=2))
    r = post(svc, bundle("batch", [obs(), obs(), obs()]), "/fhir")
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"


def test_other_bundle_types_are_refused(svc) -> None:
    """A collection or searchset Bundle cannot be posted."""
    r = post(svc, bundle("collection", [obs()]), "/fhir")
    assert r.status_code == 422


def test_search_returns_a_searchset_with_verdicts(svc) -> None:
    """GET ?subject=&date=ge: the user's readings in range, with verdict and filtered weight."""
    days = [obs(when=f"2025-02-{d:02d}T08:00:00Z", value=70 + d / 10) for d in range(1, 11)]
    days.append(obs(when="2025-02-11T08:00:00Z", value=140.0))  # an outlier
    post(svc, bundle("batch", days), "/fhir")
    post(svc, obs(user="someone-else"))
    r = svc.client.get(
        "/fhir/Observation",
        params=[("subject", "Patient/p1"), ("date", "ge2025-02-05"), ("date", "lt2025-02-12")],
        headers=svc.auth(svc.read_key),
    )
    assert r.status_code == 200
    found = r.json()
    Bundle.model_validate(found)
    assert found["type"] == "searchset" and found["total"] == 7
    entries = [e["resource"] for e in found["entry"]]
    assert [e["effectiveDateTime"][:10] for e in entries] == [
        f"2025-02-{d:02d}" for d in range(5, 12)
    ]
    assert [ext(e, "verdict") for e in entries] == ["accepted"] * 6 + ["rejected"]
    assert ext(entries[-1], "reason") is not None
    assert all(ext(e, "filtered-weight") is not None for e in entries[:6])


def test_search_pages_with_next_links(svc) -> None:
    """_count pages the Bundle; the next link gives the rest."""
    post(
        svc, bundle("batch", [obs(when=f"2025-02-{d:02d}T08:00:00Z") for d in range(1, 8)]), "/fhir"
    )
    first = svc.client.get(
        "/fhir/Observation", params={"patient": "p1", "_count": 3}, headers=svc.auth()
    ).json()
    assert len(first["entry"]) == 3 and first["total"] == 7
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = svc.client.get(nxt, headers=svc.auth()).json()
    assert len(second["entry"]) == 3


@pytest.mark.parametrize("params", [{}, {"subject": "Patient/p1", "date": "ge-soon"}])
def test_bad_search_is_400_operation_outcome(svc, params) -> None:
    """No subject, or a date that is not a date: 400 with an OperationOutcome."""
    r = svc.client.get("/fhir/Observation", params=params, headers=svc.auth())
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_fhir_auth_errors_are_operation_outcomes(svc) -> None:
    """401 and 403 under /fhir are OperationOutcomes too."""
    r = svc.client.post("/fhir/Observation", json=obs())
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    r = svc.client.post("/fhir/Observation", json=obs(), headers=svc.auth(svc.read_key))
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"


def test_fhir_and_v1_give_the_same_result(svc) -> None:
    """The same reading through FHIR and through /v1 gets the same decision."""
    a = post(svc, obs(user="same-a", value=81.25)).json()
    b = svc.post(
        {"user_id": "same-b", "timestamp": "2025-01-10T08:00:00Z", "weight": 81.25, "unit": "kg"}
    ).json()["results"][0]
    assert ext(a, "verdict") == b["verdict"]
    assert ext(a, "filtered-weight")["value"] == b["filtered_weight"]
    assert ext(a, "uncertainty")["value"] == b["std_kg"]
