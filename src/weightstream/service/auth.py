"""Bearer API keys on every ``/v1`` and ``/fhir`` route: 401 without a valid key, 403 without
the scope.

``Authorization: Bearer ws_<id>_<secret>``; the key is checked by
:meth:`weightstream.service.keys.KeyStore.verify` (stored hash, constant-time comparison).
The routes declare :func:`require` as a dependency, so the OpenAPI schema shows the bearer
scheme on each of them. :func:`authorize` is the same check on a request's own header, for the
one route that does not go through FastAPI's dependency solving (``POST /v1/measurements``,
see :mod:`weightstream.service.routes_v1`), and :func:`admit` the check itself, on a token
(:mod:`weightstream.service.ingress` reads the header from the raw request).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from weightstream.service.keys import KeyStore, Scope

__all__ = ["require", "bearer", "authorize", "admit"]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `weightstream keys create`, as `Bearer ws_..._...`.",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def admit(keys: KeyStore, credentials: str | None, scope: Scope) -> frozenset[Scope]:
    """The scopes of the key ``credentials`` (a bearer token) if it has ``scope``; else the
    401 or 403 to answer."""
    if not credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a bearer API key is required", _CHALLENGE
        )
    scopes = keys.verify(credentials)
    if scopes is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the API key is not valid", _CHALLENGE)
    if scope not in scopes:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"the API key lacks the {scope.value!r} scope"
        )
    return scopes


def authorize(request: Request, scope: Scope) -> frozenset[Scope]:
    """:func:`require`'s check, reading the ``Authorization`` header itself (as
    :data:`bearer` reads it: ``Bearer`` and a token, else no key)."""
    found, token = get_authorization_scheme_param(request.headers.get("authorization"))
    bearer_token = token if found.lower() == "bearer" else None
    return admit(request.app.state.keys, bearer_token, scope)


def require(scope: Scope) -> Callable[..., Awaitable[frozenset[Scope]]]:
    """A dependency that admits a request whose key has ``scope``."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> frozenset[Scope]:
        token = None
        if credentials is not None and credentials.scheme.lower() == "bearer":
            token = credentials.credentials
        return admit(request.app.state.keys, token, scope)

    check.__name__ = f"require_{scope.value}"
    return check
