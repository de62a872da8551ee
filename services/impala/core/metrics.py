"""Prometheus helpers. Each service declares its metrics once, in its own ``metrics.py``, on a
registry passed in (tests inject a fresh ``CollectorRegistry``). Names: ``impala_<service>_<what>_<unit>``.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)

# Latency buckets in seconds from 50 µs to 10 s.
LATENCY_BUCKETS = (
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def serve(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` for ``registry`` on a background thread; returns the bound port (0 = off)."""
    if port == 0:
        return 0
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_port)
    log.info("metrics endpoint up", extra={"port": bound})
    return bound
