"""A FHIR client we did not write (fhirclient) posts an Observation and a Bundle to the live
server and reads them back through the search."""

from __future__ import annotations

from fhirclient.models import (
    bundle,
    codeableconcept,
    coding,
    fhirdatetime,
    fhirreference,
    identifier,
    observation,
    quantity,
)
from fhirclient.server import FHIRServer

from weightstream.service.fhir import EXTENSION_BASE


def weight(user: str, when: str, value: float, unit: str, ident: str) -> observation.Observation:
    o = observation.Observation()
    o.status = "final"
    loinc = coding.Coding()
    loinc.system, loinc.code, loinc.display = "http://loinc.org", "29463-7", "Body weight"
    o.code = codeableconcept.CodeableConcept()
    o.code.coding = [loinc]
    o.subject = fhirreference.FHIRReference()
    o.subject.reference = f"Patient/{user}"
    o.effectiveDateTime = fhirdatetime.FHIRDateTime(when)
    q = quantity.Quantity()
    q.value, q.unit, q.system, q.code = value, unit, "http://unitsofmeasure.org", unit
    o.valueQuantity = q
    i = identifier.Identifier()
    i.system, i.value = "urn:test-scale", ident
    o.identifier = [i]
    return o


def _ext(resource: observation.Observation, name: str):
    for e in resource.extension or []:
        if e.url == EXTENSION_BASE + name:
            return e.valueCode if e.valueCode is not None else e.valueQuantity
    return None


def test_fhirclient_create_bundle_and_search(live_server) -> None:
    """fhirclient's models and server: create, transaction Bundle, search; all parse back."""
    server = FHIRServer(None, base_uri=live_server.url + "/fhir")
    server.session.headers["Authorization"] = f"Bearer {live_server.write_key}"

    created = weight("fc-1", "2025-03-01T07:00:00Z", 92.3, "kg", "fc-a").create(server)
    answer = observation.Observation(created)  # strict parsing by the client's models
    assert _ext(answer, "verdict") == "accepted"

    tx = bundle.Bundle()
    tx.type = "transaction"
    tx.entry = []
    for day, value in ((2, 92.1), (3, 203.0), (4, 91.9)):
        entry = bundle.BundleEntry()
        entry.resource = weight(
            "fc-1",
            f"2025-03-0{day}T07:00:00Z",
            value,
            "[lb_av]" if value > 200 else "kg",
            f"fc-{day}",
        )
        entry.request = bundle.BundleEntryRequest()
        entry.request.method, entry.request.url = "POST", "Observation"
        tx.entry.append(entry)
    response = server.post_json("", tx.as_json())
    result = bundle.Bundle(response.json())
    assert result.type == "transaction-response"
    assert [e.response.status for e in result.entry] == ["201 Created"] * 3

    found = observation.Observation.where(
        {"subject": "Patient/fc-1", "date": "ge2025-03-02"}
    ).perform_iter(server)
    found = next(iter(found))
    assert isinstance(found, bundle.Bundle) and found.type == "searchset"
    resources = [e.resource for e in found.entry]
    assert [r.identifier[0].value for r in resources] == ["fc-2", "fc-3", "fc-4"]
    assert all(isinstance(r, observation.Observation) for r in resources)
    assert [_ext(r, "verdict") for r in resources] == ["accepted", "accepted", "accepted"]
    assert abs(_ext(resources[1], "filtered-weight").value - 92.0) < 1.0
    assert resources[1].valueQuantity.code == "[lb_av]"

    everything = observation.Observation.where({"subject": "Patient/fc-1"}).perform_resources_iter(
        server
    )
    assert len(list(everything)) == 4
