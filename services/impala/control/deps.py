"""FastAPI dependencies of the control API: the app's context, the Redis store and the bearer token."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from impala.control.metrics import ControlMetrics
from impala.control.problems import ProblemError
from impala.control.scaler import Scaler
from impala.control.settings import ControlSettings
from impala.control.store import RunStore


@dataclass
class ControlContext:
    """Everything the routes share; ``store`` is set by the lifespan once the Redis client exists."""

    settings: ControlSettings
    registry: CollectorRegistry
    metrics: ControlMetrics
    scaler: Scaler
    token: str
    store: RunStore | None = None


def get_context(request: Request) -> ControlContext:
    return cast(ControlContext, request.app.state.ctx)


ContextDep = Annotated[ControlContext, Depends(get_context)]


def get_store(ctx: ContextDep) -> RunStore:
    if ctx.store is None:  # only possible if a request races the lifespan start-up
        raise ProblemError(503, "starting", "Starting", "The control API is still starting; retry in a moment.")
    return ctx.store


StoreDep = Annotated[RunStore, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False, description="The control token: `Authorization: Bearer <token>`.")
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def check_token(ctx: ControlContext, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Raise 401 unless the request carries the configured token (constant-time comparison)."""
    if not ctx.token:  # insecure mode, refused by the settings unless asked for explicitly
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), ctx.token.encode()):
        raise ProblemError(
            401,
            "unauthorized",
            "Unauthorized",
            "Missing or wrong bearer token: send `Authorization: Bearer <control token>`.",
            headers={"WWW-Authenticate": 'Bearer realm="impala-control"'},
        )


def require_token(ctx: ContextDep, credentials: CredentialsDep) -> None:
    """Dependency of every route except the health checks."""
    check_token(ctx, credentials)
