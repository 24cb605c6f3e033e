"""FHIR R4 over HTTP: body-weight Observations in, searchset Bundles with verdicts out.

In
--
``POST /fhir/Observation`` takes one Observation; ``POST /fhir`` a ``transaction`` or
``batch`` Bundle of them. Each resource is validated by the FHIR model library
(:mod:`fhir.resources`, R4B models, which read R4 Observations and Bundles), never by a schema
of ours, and must be a body weight: a coding of LOINC ``29463-7``. Anything else (a BMI,
``39156-5``; a heart rate) is refused with 422 and an ``OperationOutcome``, as is an
Observation marked ``entered-in-error`` or ``cancelled``.

The reading is then what an export row would be, and goes through the same rules
(:func:`weightstream.ingest.to_measurement`): ``subject`` (``Patient/ID``, or its identifier)
is the user, ``effectiveDateTime`` (or ``effectiveInstant``) the time as written,
``valueQuantity.value`` the number as written and its UCUM ``code`` (else ``unit``) the unit
(``kg``, ``g``, ``[lb_av]``, and ``[lb_ap]`` read as the export reads it), ``device``
(display, else reference) or ``meta.source`` the source, and the first ``identifier`` (else
the resource ``id``) the reading id. A reading that breaks an input rule is refused with 422
and the reason code a file row would get; nothing of it is stored. A valid one is decided and
committed through the group commit, and the answer (201) is the Observation as stored, with
the verdict and the filtered weight as extensions.

A ``transaction`` is all or nothing: one refused entry refuses the Bundle (422, nothing
decided), and the others are committed in one unit of work. In a ``batch`` each entry stands
alone and gets its own ``response.status``.

Out
---
``GET /fhir/Observation?subject=Patient/ID&date=ge2025-01-01&date=lt2025-02-01`` answers a
``searchset`` Bundle of the user's stored readings (``patient=`` works too; ``date`` takes
the FHIR prefixes ``eq ne gt ge lt le`` on a year, month, day or instant; ``_count`` and
``_offset`` page, with a ``next`` link). Each Observation carries the extensions
:data:`EXTENSION_BASE` + ``verdict``, ``reason``, ``filtered-weight``, ``trend``,
``uncertainty`` and ``reset-type``.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from weightstream.ingest import RawRow, RowProblem, to_measurement
from weightstream.model import Measurement, Result, Verdict, to_micros
from weightstream.service.auth import require
from weightstream.service.commit import as_result
from weightstream.service.keys import Scope
from weightstream.service.readings import invalid_answer
from weightstream.service.state import service_of

__all__ = [
    "router",
    "outcome_response",
    "observation_json",
    "EXTENSION_BASE",
    "READING_ID_SYSTEM",
    "FHIR_JSON",
]

FHIR_JSON: Final = "application/fhir+json"
LOINC: Final = "http://loinc.org"
BODY_WEIGHT: Final = "29463-7"
UCUM: Final = "http://unitsofmeasure.org"
#: Where the extensions' definitions are named (one URL per extension, after this base).
EXTENSION_BASE: Final = "https://weightstream.example/fhir/StructureDefinition/"
#: The identifier system of a reading id.
READING_ID_SYSTEM: Final = "urn:weightstream:reading-id"
#: The code system of weightstream's reason codes (OperationOutcome details).
REASON_SYSTEM: Final = "urn:weightstream:reason"

_REFUSED_STATUS: Final = frozenset({"entered-in-error", "cancelled"})
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_UCUM_OF: Final = {
    "": "kg",
    "kg": "kg",
    "g": "g",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "[lb_av]": "[lb_av]",
    "[lb_ap]": "[lb_ap]",
    "st": "[stone_av]",
    "[stone_av]": "[stone_av]",
}

router = APIRouter(prefix="/fhir", tags=["fhir"])
_read = Depends(require(Scope.READ))
_write = Depends(require(Scope.WRITE))

_FHIR_BODY = {
    "required": True,
    "content": {
        FHIR_JSON: {"schema": {"type": "object"}},
        "application/json": {"schema": {"type": "object"}},
    },
}
_FHIR_ANSWER = {"content": {FHIR_JSON: {"schema": {"type": "object"}}}}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **_FHIR_ANSWER}
    for code, text in (
        (400, "Bad search parameter (OperationOutcome)."),
        (401, "No valid API key (OperationOutcome)."),
        (403, "The key lacks the scope (OperationOutcome)."),
        (413, "Body or Bundle too large (OperationOutcome)."),
        (422, "Not a valid body-weight Observation (OperationOutcome)."),
        (503, "Storage unavailable or shutting down; retry (OperationOutcome)."),
    )
}


# -- OperationOutcome ------------------------------------------------------------------------


class Refusal(Exception):
    """A resource refused before any decision: its issues, for an OperationOutcome."""

    def __init__(self, issues: list[dict[str, Any]], status: int = 422) -> None:
        super().__init__(f"{len(issues)} issue(s)")
        self.issues = issues
        self.status = status


def _issue(
    diagnostics: str,
    *,
    code: str = "invalid",
    expression: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if reason is not None:
        issue["details"] = {"coding": [{"system": REASON_SYSTEM, "code": reason}]}
    if expression is not None:
        issue["expression"] = [expression]
    return issue


def outcome_json(issues: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": issues}


def outcome_response(
    status: int,
    message: str | None,
    details: Any,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error answer under ``/fhir``: an OperationOutcome (per-field issues if given)."""
    if isinstance(details, list) and details and isinstance(details[0], dict):
        issues = [
            _issue(str(d.get("msg", "invalid")), expression=_path(d.get("loc", ())))
            for d in details
        ]
    else:
        code = {401: "login", 403: "forbidden", 413: "too-costly", 404: "not-found"}.get(
            status, "processing" if status >= 500 else "invalid"
        )
        issues = [_issue(message or str(details), code=code)]
    return JSONResponse(
        outcome_json(issues), status_code=status, media_type=FHIR_JSON, headers=headers
    )


def _path(loc: Any) -> str:
    parts = [str(p) for p in (loc or ())]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "Resource"


def _validation_issues(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    """The model library's errors as issues: where and what, never the value."""
    return [
        _issue(
            str(e.get("msg", "invalid")),
            code="structure",
            expression=prefix + ("." + _path(e.get("loc", ())) if e.get("loc") else ""),
        )
        for e in exc.errors(include_input=False, include_url=False)
    ]


# -- reading an Observation --------------------------------------------------------------------


def _load_json(body: bytes) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(body, parse_float=Decimal, parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Refusal([_issue("the body is not valid JSON", code="structure")]) from None


def _check_observation(data: Any, where: str) -> Observation:
    """``data`` as a validated Observation, or a :class:`Refusal` naming what is wrong."""
    if not isinstance(data, dict) or data.get("resourceType") != "Observation":
        raise Refusal([_issue("expected an Observation resource", expression=where)])
    try:
        obs = Observation.model_validate(data)
    except ValidationError as exc:
        raise Refusal(_validation_issues(exc, where)) from None
    codings = (obs.code.coding or []) if obs.code is not None else []
    if not any(c.system == LOINC and c.code == BODY_WEIGHT for c in codings):
        raise Refusal(
            [
                _issue(
                    f"not a body-weight Observation: expected code {LOINC}|{BODY_WEIGHT}",
                    code="not-supported",
                    expression=f"{where}.code",
                )
            ]
        )
    if obs.status in _REFUSED_STATUS:
        raise Refusal(
            [
                _issue(
                    f"an Observation with status {obs.status} is not a reading",
                    code="business-rule",
                    expression=f"{where}.status",
                )
            ]
        )
    return obs


def _user_of(obs: Observation) -> str:
    subject = obs.subject
    if subject is None:
        return ""
    if subject.reference:
        ref = str(subject.reference)
        return ref.split("/", 1)[1] if ref.startswith("Patient/") else ref
    if subject.identifier is not None and subject.identifier.value:
        return str(subject.identifier.value)
    return ""


def _source_of(obs: Observation) -> str | None:
    device = obs.device
    if device is not None:
        if device.display:
            return str(device.display)
        if device.reference:
            ref = str(device.reference)
            return ref.split("/", 1)[1] if ref.startswith("Device/") else ref
    if obs.meta is not None and obs.meta.source:
        return str(obs.meta.source)
    return None


def _id_of(obs: Observation) -> str | None:
    for ident in obs.identifier or []:
        if ident.value:
            return str(ident.value)
    return str(obs.id) if obs.id else None


def _reading(
    obs: Observation, data: dict[str, Any], *, config: Any, now: datetime
) -> Measurement | Result:
    """The reading in a validated Observation, through the CSV rules (see the docstring)."""
    when = data.get("effectiveDateTime", data.get("effectiveInstant", ""))
    quantity = data.get("valueQuantity") or {}
    value = quantity.get("value")
    unit = quantity.get("code") or quantity.get("unit")
    reading_id = _id_of(obs)
    raw = RawRow(
        0,
        _user_of(obs),
        str(when) if when is not None else "",
        "" if value is None else str(value),
        None if unit is None else str(unit),
        _source_of(obs),
        reading_id,
    )
    item = to_measurement(raw, config=config, now=now)
    if isinstance(item, RowProblem):
        return invalid_answer(reading_id, raw.user_id, item)
    return item


def _refusal_of(result: Result, where: str) -> Refusal:
    """An ``invalid`` result as a refusal (the reason code a file row would get)."""
    return Refusal(
        [_issue(result.message, code="invalid", expression=where, reason=str(result.reason))]
    )


# -- writing an Observation ------------------------------------------------------------------


def fhir_id(reading_id: str) -> str:
    """A FHIR id for a reading id: itself when it is one, else a digest of it."""
    if _FHIR_ID.fullmatch(reading_id):
        return reading_id
    return "ws-" + hashlib.blake2b(reading_id.encode("utf-8"), digest_size=16).hexdigest()


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def observation_json(m: Measurement, r: Result) -> dict[str, Any]:
    """A stored reading and its result as a FHIR Observation with weightstream extensions."""
    unit_key = m.unit.strip().lower()
    quantity: dict[str, Any] = {"value": m.value, "unit": m.unit or "kg"}
    if unit_key in _UCUM_OF:
        quantity.update(system=UCUM, code=_UCUM_OF[unit_key])
    extensions: list[dict[str, Any]] = [
        {"url": EXTENSION_BASE + "verdict", "valueCode": r.verdict.value},
        {"url": EXTENSION_BASE + "reason", "valueCode": str(r.reason)},
    ]
    for name, value, unit in (
        ("filtered-weight", r.filtered_weight, "kg"),
        ("trend", r.trend_kg_week, "kg/wk"),
        ("uncertainty", r.std_kg, "kg"),
    ):
        if value is not None and value == value:
            extensions.append(
                {"url": EXTENSION_BASE + name, "valueQuantity": _quantity(value, unit, unit)}
            )
    if r.reset_type is not None:
        extensions.append({"url": EXTENSION_BASE + "reset-type", "valueCode": str(r.reset_type)})
    return {
        "resourceType": "Observation",
        "id": fhir_id(m.reading_id),
        "extension": extensions,
        "identifier": [{"system": READING_ID_SYSTEM, "value": m.reading_id}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": BODY_WEIGHT, "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{m.user_id}"},
        "effectiveDateTime": m.timestamp.isoformat(),
        "valueQuantity": quantity,
        "device": {"display": m.source},
    }


def _fhir(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


# -- routes ----------------------------------------------------------------------------------


async def _decide(request: Request, readings: list[Measurement]) -> list[Result]:
    service = service_of(request)
    return [as_result(a) for a in await service.committer.submit(readings)]


@router.post(
    "/Observation",
    summary="Create a body-weight Observation",
    status_code=201,
    response_class=JSONResponse,
    openapi_extra={"requestBody": _FHIR_BODY},
    responses={
        201: {"description": "Stored, with verdict extensions.", **_FHIR_ANSWER},
        **_REFUSALS,
    },
)
async def post_observation(request: Request, _: Any = _write) -> Response:
    """Decide and store one body-weight Observation; answer it as stored."""
    service = service_of(request)
    try:
        data = _load_json(await request.body())
        obs = _check_observation(data, "Observation")
        item = _reading(obs, data, config=service.config, now=service.clock.now())
        if isinstance(item, Result):
            service.observer.reading_processed(item, 0.0)
            raise _refusal_of(item, "Observation")
    except Refusal as refusal:
        return _fhir(outcome_json(refusal.issues), refusal.status)
    (result,) = await _decide(request, [item])
    body = observation_json(item, result)
    return _fhir(body, 201)


@router.post(
    "",
    summary="A transaction or batch Bundle of body-weight Observations",
    response_class=JSONResponse,
    openapi_extra={"requestBody": _FHIR_BODY},
    responses={
        200: {"description": "transaction-response or batch-response", **_FHIR_ANSWER},
        **_REFUSALS,
    },
)
@router.post("/", include_in_schema=False)  # a client that joins the base URL and ""
async def post_bundle(request: Request, _: Any = _write) -> Response:
    """Process a Bundle: ``transaction`` all or nothing, ``batch`` entry by entry."""
    service = service_of(request)
    try:
        data = _load_json(await request.body())
        kind, entries = _check_bundle(data, service.settings.max_batch)
    except Refusal as refusal:
        return _fhir(outcome_json(refusal.issues), refusal.status)
    now = service.clock.now()
    items: list[Measurement | Refusal] = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}].resource"
        try:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            _check_request(entry, i)
            obs = _check_observation(resource, where)
            assert isinstance(resource, dict)
            item = _reading(obs, resource, config=service.config, now=now)
            if isinstance(item, Result):
                service.observer.reading_processed(item, 0.0)
                raise _refusal_of(item, where)
            items.append(item)
        except Refusal as refusal:
            items.append(refusal)
    refused = [x for x in items if isinstance(x, Refusal)]
    if kind == "transaction" and refused:
        issues = [issue for r in refused for issue in r.issues]
        return _fhir(outcome_json(issues), 422)
    readings = [x for x in items if isinstance(x, Measurement)]
    results = iter(await _decide(request, readings))
    answer: list[dict[str, Any]] = []
    for x in items:
        if isinstance(x, Refusal):
            answer.append(
                {
                    "response": {
                        "status": "422 Unprocessable Entity",
                        "outcome": outcome_json(x.issues),
                    }
                }
            )
        else:
            obs_json = observation_json(x, next(results))
            answer.append(
                {
                    "fullUrl": f"Observation/{obs_json['id']}",
                    "resource": obs_json,
                    "response": {
                        "status": "201 Created",
                        "location": f"Observation/{obs_json['id']}",
                    },
                }
            )
    return _fhir({"resourceType": "Bundle", "type": f"{kind}-response", "entry": answer})


def _check_bundle(data: Any, cap: int) -> tuple[str, list[Any]]:
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise Refusal([_issue("expected a Bundle resource", expression="Bundle")])
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise Refusal([_issue("Bundle.entry must be a list", code="structure")])
    if len(entries) > cap:
        raise Refusal([_issue(f"at most {cap} entries per Bundle", code="too-costly")], 413)
    shell = dict(data)
    shell["entry"] = [
        {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
        for e in entries
    ]
    try:
        bundle = Bundle.model_validate(shell)
    except ValidationError as exc:
        raise Refusal(_validation_issues(exc, "Bundle")) from None
    if bundle.type not in ("transaction", "batch"):
        raise Refusal(
            [
                _issue(
                    "only a transaction or batch Bundle can be posted",
                    code="not-supported",
                    expression="Bundle.type",
                )
            ]
        )
    return str(bundle.type), entries


def _check_request(entry: Any, i: int) -> None:
    request = entry.get("request") if isinstance(entry, dict) else None
    if request is None:
        return
    method = str(request.get("method", "POST")).upper()
    url = str(request.get("url", "Observation")).split("?", 1)[0].rstrip("/")
    if method != "POST" or url not in ("Observation", "/Observation"):
        raise Refusal(
            [
                _issue(
                    "only POST Observation entries are supported",
                    code="not-supported",
                    expression=f"Bundle.entry[{i}].request",
                )
            ]
        )


# -- search ----------------------------------------------------------------------------------


_PREFIXES: Final = ("eq", "ne", "gt", "ge", "lt", "le")


def _date_range(text: str) -> tuple[datetime, datetime]:
    """The instants [start, end) that a FHIR date value of its precision stands for."""
    try:
        if re.fullmatch(r"\d{4}", text):
            start = datetime(int(text), 1, 1, tzinfo=UTC)
            return start, start.replace(year=start.year + 1)
        if re.fullmatch(r"\d{4}-\d{2}", text):
            start = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
            end = (start + timedelta(days=32)).replace(day=1)
            return start, end
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start, start + timedelta(days=1)
        when = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise Refusal(
            [_issue(f"date {text[:40]!r} is not a FHIR date", code="value")], 400
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when, when + timedelta(microseconds=1)


def _date_test(param: str) -> tuple[str, int, int]:
    prefix = param[:2] if param[:2] in _PREFIXES else "eq"
    value = param[2:] if param[:2] in _PREFIXES else param
    start, end = _date_range(value)
    return prefix, to_micros(start), to_micros(end)


def _matches(t: int, test: tuple[str, int, int]) -> bool:
    prefix, lo, hi = test
    return {
        "eq": lo <= t < hi,
        "ne": not lo <= t < hi,
        "gt": t >= hi,
        "ge": t >= lo,
        "lt": t < lo,
        "le": t < hi,
    }[prefix]


@router.get(
    "/Observation",
    summary="Search a user's body-weight Observations",
    response_class=JSONResponse,
    responses={200: {"description": "A searchset Bundle.", **_FHIR_ANSWER}, **_REFUSALS},
)
async def search_observations(
    request: Request,
    subject: Annotated[str | None, Query(description="Patient/ID (or ID).")] = None,
    patient: Annotated[str | None, Query(description="The user's id.")] = None,
    date_: Annotated[list[str] | None, Query(alias="date", description="e.g. ge2025-01-01")] = None,
    code: Annotated[str | None, Query(description=f"{LOINC}|{BODY_WEIGHT}")] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(alias="_offset", ge=0)] = 0,
    _: Any = _read,
) -> Response:
    """A searchset Bundle of the user's stored readings, each with verdict extensions."""
    service = service_of(request)
    who = subject or patient
    try:
        if not who:
            raise Refusal(
                [_issue("a subject or patient parameter is required", code="required")], 400
            )
        tests = [_date_test(d) for d in date_ or []]
    except Refusal as refusal:
        return _fhir(outcome_json(refusal.issues), refusal.status)
    user = who.split("/", 1)[1] if who.startswith("Patient/") else who
    wanted_code = code is None or code.split("|")[-1] == BODY_WEIGHT
    rows = await service.committer.read(lambda: service.processor.store.history(user))
    matched = [
        row
        for row in rows
        if wanted_code
        and row.result.verdict is not Verdict.INVALID
        and all(_matches(to_micros(row.measurement.timestamp), t) for t in tests)
    ]
    page = matched[offset : offset + count]
    base = str(request.url.remove_query_params(["_offset"]))
    links = [{"relation": "self", "url": str(request.url)}]
    if offset + count < len(matched):
        links.append(
            {
                "relation": "next",
                "url": f"{base}{'&' if '?' in base else '?'}_offset={offset + count}",
            }
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matched),
        "link": links,
        "entry": [
            {
                "fullUrl": f"Observation/{fhir_id(row.measurement.reading_id)}",
                "resource": observation_json(row.measurement, row.result),
                "search": {"mode": "match"},
            }
            for row in page
        ],
    }
    return _fhir(bundle)
