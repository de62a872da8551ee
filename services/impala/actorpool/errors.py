"""Errors that end one client stream with a specific gRPC status."""

from __future__ import annotations

import grpc


class StreamError(Exception):
    """Ends the stream with ``code`` and ``message``; ``reason`` is the metric label. ``resume``: the
    last Step read was recorded and not answered, so the client resumes from it (core.stream_end)."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, *, resume: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.resume = resume


def invalid(reason: str, message: str) -> StreamError:
    return StreamError(grpc.StatusCode.INVALID_ARGUMENT, reason, message)


def precondition(reason: str, message: str) -> StreamError:
    return StreamError(grpc.StatusCode.FAILED_PRECONDITION, reason, message)
