"""BackgroundPublisher: latest wins while a publish is in flight, transient failures are retried,
refusals are not (and tell the loop which version the service serves)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import torch

from impala.core.backoff import Backoff
from impala.learner.publishing import BackgroundPublisher, PermanentPublishError


def encode(state: Mapping[str, torch.Tensor]) -> bytes:
    return str(int(state["w"].item())).encode()


def weights(value: int) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(value)}


class Service:
    """Records what arrives; ``gate`` holds each publish until the test lets it through."""

    def __init__(self, failures: int = 0, refuse_below: int = 0) -> None:
        self.received: list[tuple[int, bytes]] = []
        self.gate = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.failures, self.refuse_below, self.attempts = failures, refuse_below, 0

    def publish(self, version: int, payload: bytes) -> None:
        self.attempts += 1
        self.entered.release()
        self.gate.acquire()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("service down")
        if version <= self.refuse_below:
            raise PermanentPublishError("stale version", current_version=self.refuse_below)
        self.received.append((version, payload))


def publisher(service: Service) -> BackgroundPublisher:
    return BackgroundPublisher(service.publish, encode, backoff=Backoff(base_s=0.001, cap_s=0.002))


def test_only_the_newest_snapshot_follows_the_one_in_flight() -> None:
    service = Service()
    pub = publisher(service)
    pub.start()
    try:
        pub.offer(1, weights(1))
        assert service.entered.acquire(timeout=10)  # version 1 is in flight
        for version in (2, 3, 4):
            pub.offer(version, weights(version))
        for _ in range(2):
            service.gate.release()
        assert pub.flush(10)
        assert service.received == [(1, b"1"), (4, b"4")]
        assert (pub.published_version, pub.service_version) == (4, 4)
    finally:
        pub.stop()


def test_transient_failures_are_retried_and_refusals_are_not() -> None:
    service = Service(failures=2, refuse_below=7)
    pub = publisher(service)
    pub.start()
    try:
        for _ in range(4):
            service.gate.release()
        pub.offer(5, weights(5))  # fails twice (service down), then is refused: the service serves 7
        assert pub.flush(10)
        assert (service.attempts, service.received, pub.service_version) == (3, [], 7)
        pub.offer(8, weights(8))
        assert pub.flush(10)
        assert (service.attempts, service.received, pub.published_version) == (4, [(8, b"8")], 8)
    finally:
        pub.stop()
