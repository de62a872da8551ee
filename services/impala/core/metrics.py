"""Prometheus helpers. Each service declares its metrics once, in its own ``metrics.py``, on a
registry passed in (tests inject a fresh ``CollectorRegistry``). Names: ``impala_<service>_<what>_<unit>``.

A service process builds its registry with ``service_registry()``: process and platform collectors
(CPU, memory, open fds, start time: restarts show as a new ``process_start_time_seconds``) and no
``*_created`` series. Counters with a known set of label values export every value at 0 from the start
(``zero_labels``): a series born at 1 reads 0 in ``rate()``/``increase()``, so the first event would
never show (ADR 0023).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


def service_registry() -> CollectorRegistry:
    """The registry of a service process: process and platform collectors, no ``*_created`` series."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide; unused anywhere
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def zero_labels(counter: Counter, values: Iterable[str | Sequence[str]]) -> None:
    """Create the child of every known label value (a string, or a tuple for several labels) at 0."""
    for value in values:
        counter.labels(*((value,) if isinstance(value, str) else value))


class LatestValue(Collector):
    """A gauge with no sample until its first ``set``: "never happened" reads as absent, not as 0
    (a timestamp of 0 would read as an age of 56 years)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.value: float | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        self.value = value

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        # Unset: HELP and TYPE without a sample, as a labelled metric without children is exposed.
        value = self.value
        family = GaugeMetricFamily(self.name, self.documentation)
        if value is not None:
            family.add_metric([], value)
        return [family]
