"""``impala control``: serve the control API with uvicorn until SIGTERM/SIGINT, then stop gracefully
(in-flight requests get ``SHUTDOWN_GRACE_S`` to finish) and return 0."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from impala.control.app import create_app
from impala.control.settings import ControlSettings
from impala.core import logs, metrics
from impala.core.settings import secret_values

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10


@contextlib.contextmanager
def _absorb_stop_signals() -> Iterator[None]:
    """uvicorn handles SIGTERM/SIGINT itself, then re-raises them once it has stopped; a no-op handler
    lets that re-raise return to us so a graceful stop exits 0 instead of dying by the signal."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(settings: ControlSettings) -> int:
    """Run the control API on ``settings.host:settings.port``; 0 after a graceful stop, 1 if it cannot start."""
    logs.configure(settings.log_level, settings.log_format, secret_values(settings))
    if not settings.bearer_token():
        log.warning("no control token: every route is open (insecure=true)")
    registry = metrics.service_registry()
    app = create_app(settings, registry=registry)
    metrics.serve(registry, settings.metrics_port)  # /metrics on a plain port too, when asked (0 = off)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep impala's structured (and secret-masking) logging
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    server = uvicorn.Server(config)
    with _absorb_stop_signals():
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits 3 when it cannot bind or the lifespan fails
            log.error("control API could not start", extra={"exit_code": exc.code})
            return 1
    log.info("control API stopped")
    return 0 if server.started else 1
