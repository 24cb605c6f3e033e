"""The live service: readings over HTTP and FHIR R4, decided by the processor the CLI uses.

``weightstream serve`` runs :func:`create_app` on uvicorn. The service is a thin layer:

* :mod:`.readings`: JSON readings held to the CSV rules, results with the results file's fields;
* :mod:`.commit`: the group commit (one writer, one store thread, one ``Batch`` per group);
* :mod:`.routes_v1`: ``/v1`` routes; :mod:`.fhir`: FHIR R4 Observations and Bundles;
* :mod:`.keys` and :mod:`.auth`: hashed bearer API keys with ``read`` / ``write`` scopes;
* :mod:`.app`: the factory, the edge (body cap, errors, metrics), health and readiness;
* :mod:`.settings`: the service's limits and timing;
* :mod:`.workers`: ``serve --workers N``, N processes on one socket and one store.
"""

from weightstream.service.app import create_app
from weightstream.service.keys import KeyStore, Scope, open_keys
from weightstream.service.settings import ServiceSettings

__all__ = ["create_app", "KeyStore", "Scope", "ServiceSettings", "open_keys"]
