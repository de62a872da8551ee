"""Metrics of the control API, declared once on an injected registry, and the ASGI middleware that
counts requests by route template (never by raw path, so label cardinality stays bounded)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from impala.core.metrics import zero_labels

COMMANDS = ("pause", "resume", "checkpoint", "scale")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class ControlMetrics:
    """``impala_control_*`` metrics."""

    requests: Counter
    commands: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ControlMetrics:
        metrics = cls._declare(registry)
        zero_labels(metrics.commands, COMMANDS)
        return metrics

    def zero_routes(self, spec: Mapping[str, Any]) -> None:
        """Export at 0 every (route, method, code) the API's OpenAPI ``spec`` declares: each route's
        success code and its problem responses (401, 404, ...)."""
        for path, operations in spec.get("paths", {}).items():
            for method, operation in operations.items():
                codes = (code for code in operation.get("responses", {}) if code.isdigit())
                zero_labels(self.requests, ((path, method.upper(), code) for code in codes))

    @classmethod
    def _declare(cls, registry: CollectorRegistry) -> ControlMetrics:
        return cls(
            requests=Counter(
                "impala_control_requests",
                "HTTP requests answered, by route template, method and status code.",
                ["route", "method", "code"],
                registry=registry,
            ),
            commands=Counter(
                "impala_control_commands",
                "Commands accepted (pause, resume, checkpoint, scale).",
                ["command"],
                registry=registry,
            ),
        )


class CountRequests:
    """Pure ASGI middleware: increments ``requests`` once per HTTP response."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees when an exception escapes before a response starts

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            # The router stores the matched route in the (shared) scope; unmatched paths share one label.
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.counter.labels(route, method, str(status)).inc()
