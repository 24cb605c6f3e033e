"""Bearer API keys on every ``/v1`` and ``/fhir`` route: 401 without a valid key, 403 without
the scope.

``Authorization: Bearer ws_<id>_<secret>``; the key is checked by
:meth:`weightstream.service.keys.KeyStore.verify` (stored hash, constant-time comparison).
The routes declare :func:`require` as a dependency, so the OpenAPI schema shows the bearer
scheme on each of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from weightstream.service.keys import KeyStore, Scope

__all__ = ["require", "bearer"]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `weightstream keys create`, as `Bearer ws_..._...`.",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(scope: Scope) -> Callable[..., Awaitable[frozenset[Scope]]]:
    """A dependency that admits a request whose key has ``scope``."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> frozenset[Scope]:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "a bearer API key is required", _CHALLENGE
            )
        keys: KeyStore = request.app.state.keys
        scopes = keys.verify(credentials.credentials)
        if scopes is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "the API key is not valid", _CHALLENGE
            )
        if scope not in scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"the API key lacks the {scope.value!r} scope"
            )
        return scopes

    check.__name__ = f"require_{scope.value}"
    return check
