"""Prometheus metrics of the weight service, declared once on an injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from impala.core.metrics import LATENCY_BUCKETS, zero_labels

# Label values, exported at 0 from the start (a counter born at 1 hides its first event from rate()).
REJECTED_REASONS = ("malformed", "too_large", "checksum", "stale", "fingerprint")
BULK_REFUSED_REASONS = (
    "unauthenticated",
    "gone",
    "malformed",
    "timeout",
    "busy",
    "send_timeout",
    "disconnected",
    "accept",
)


@dataclass(frozen=True)
class WeightsMetrics:
    version: Gauge
    bytes: Gauge
    publish: Counter
    publish_seconds: Histogram
    subscribers: Gauge
    sent: Counter
    rejected: Counter
    bulk_refused: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WeightsMetrics:
        metrics = cls._declare(registry)
        zero_labels(metrics.rejected, REJECTED_REASONS)
        zero_labels(metrics.bulk_refused, BULK_REFUSED_REASONS)
        return metrics

    @classmethod
    def _declare(cls, registry: CollectorRegistry) -> WeightsMetrics:
        return cls(
            version=Gauge("impala_weights_version", "Policy version served now.", registry=registry),
            bytes=Gauge("impala_weights_bytes", "Size of the version served now.", registry=registry),
            publish=Counter("impala_weights_publish_total", "Versions accepted from publishers.", registry=registry),
            publish_seconds=Histogram(
                "impala_weights_publish_seconds",
                "From a version's first chunk received to the version served.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            subscribers=Gauge("impala_weights_subscribers", "Open Subscribe streams.", registry=registry),
            sent=Counter(
                "impala_weights_sent_total",
                "Versions written to subscribers (one per subscriber), as chunks or over the bulk data plane.",
                registry=registry,
            ),
            rejected=Counter(
                "impala_weights_rejected_total",
                "Publish or Subscribe calls refused, by reason.",
                ["reason"],
                registry=registry,
            ),
            bulk_refused=Counter(
                "impala_weights_bulk_refused_total",
                "Bulk data-plane fetches refused or broken off, by reason.",
                ["reason"],
                registry=registry,
            ),
        )
