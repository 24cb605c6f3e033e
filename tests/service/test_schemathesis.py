"""Property-based tests of the live server against its own OpenAPI schema (schemathesis).

Every operation gets generated inputs, valid and invalid; each answer must be no 5xx (503 is
not expected either: the store is healthy), a status the schema documents, the documented
content type, headers and body shape, and an invalid input must be refused. Seeded and
derandomized, so a failure reproduces.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One live server for the whole module (the real command, on a free port)."""
    from .conftest import start_server  # type: ignore[import-not-found]

    live = start_server(tmp_path_factory.mktemp("schemathesis"))
    yield live
    live.terminate()


def _operations(url: str) -> list[object]:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(served, mode) -> None:
    """No server error and no schema violation on any generated input, for every operation.

    (schemathesis' own pytest integration does not run on this pytest, so the operations are
    driven with its Python API: one Hypothesis test per operation and generation mode.)
    """
    operations = _operations(served.url)
    assert len(operations) >= 11
    untestable: list[object] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(headers=served.auth(), checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE, operation
            untestable.append(operation)
    assert len(untestable) <= 3, untestable
