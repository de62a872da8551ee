"""Errors as RFC 9457 problem details (``application/problem+json``): every error a client of the
control API can see has a ``type`` naming what went wrong, a ``title``, the ``status`` and a ``detail``
that says what to do about it. docs/control-api.md lists them all."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:impala:problem:"


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="URI naming the kind of problem, e.g. urn:impala:problem:already-paused.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What happened in this case and what to do about it.")
    instance: str | None = Field(None, description="Path of the request that failed.")
    errors: list[dict[str, Any]] | None = Field(None, description="Validation errors (loc, msg, type), for 422.")


class ProblemError(Exception):
    """Raise from a route or dependency to answer with a problem document."""

    def __init__(
        self, status: int, kind: str, title: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.headers = headers


def problem_response(
    request: Request,
    status: int,
    kind: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """A ``JSONResponse`` holding a problem document."""
    body = Problem(
        type=TYPE_PREFIX + kind, title=title, status=status, detail=detail, instance=request.url.path, errors=errors
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem documents for ``statuses``."""
    return {
        status: {"model": Problem, "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for status in statuses
    }


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(request, exc.status, exc.kind, exc.title, exc.detail, headers=exc.headers)


_STARLETTE = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
}


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own errors: unparsable body (400), unknown path (404), wrong method (405).
    assert isinstance(exc, StarletteHTTPException)
    kind, title = _STARLETTE.get(exc.status_code, ("http-error", "HTTP error"))
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, kind, title, str(exc.detail), headers=headers)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Leave out pydantic's "input" and "ctx": echoing request data back is never needed to fix it.
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return problem_response(request, 422, "validation", "Invalid request", summary, errors=errors)


async def _on_redis(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unreachable", extra={"path": request.url.path, "error": type(exc).__name__})
    detail = "Redis is unreachable, so the run's state is unknown; retry when Redis is back."
    return problem_response(
        request, 503, "redis-unavailable", "Redis unavailable", detail, headers={"Retry-After": "5"}
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log (Starlette re-raises to the server), never into the response.
    return problem_response(request, 500, "internal", "Internal error", "An unexpected error; see the server log.")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem document."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(RedisConnectionError, _on_redis)
    app.add_exception_handler(RedisTimeoutError, _on_redis)
    app.add_exception_handler(Exception, _on_unexpected)
