"""Weight publishing off the training thread, latest wins.

The training loop hands over a CPU snapshot of the parameters and goes on learning; this thread
encodes and publishes it. When the weight service is slow or down, newer snapshots replace the one
waiting (pools only want the newest), failures are retried with backoff and logged one line each,
and learning never waits on the network.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from impala.core.backoff import Backoff

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]


class PermanentPublishError(Exception):
    """The weight service refused this version for good (not newer than its current one, wrong model).

    ``current_version`` is the version the service serves, when it said so (0 otherwise).
    """

    def __init__(self, message: str, current_version: int = 0) -> None:
        super().__init__(message)
        self.current_version = current_version


@dataclass(frozen=True)
class Snapshot:
    version: int
    state: StateDict


def cpu_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state dict, safe to read while training continues."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


class BackgroundPublisher:
    """Publishes the newest offered snapshot on a daemon thread.

    Args:
        publish: sends one encoded version; raises ``PermanentPublishError`` when retrying cannot help,
            any other exception for a transient failure.
        encode: turns a state dict into the wire payload.
        backoff: delays between retries of transient failures.
    """

    def __init__(
        self,
        publish: Callable[[int, bytes], None],
        encode: Callable[[StateDict], bytes],
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self._publish, self._encode = publish, encode
        self._backoff = backoff or Backoff(base_s=0.1, cap_s=5.0)
        self._pending: Snapshot | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self.published_version = 0
        # Highest version the service is known to serve: the loop numbers new versions above it.
        self.service_version = 0
        self._thread = threading.Thread(target=self._run, name="weight-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, version: int, state: StateDict) -> None:
        """Queue ``state`` as ``version``, replacing any snapshot not yet sent."""
        with self._cond:
            self._pending = Snapshot(version, state)
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until nothing is pending or in flight; False when ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout_s)

    def stop(self, interrupt: Callable[[], None] | None = None, timeout_s: float = 5.0) -> None:
        """Stop publishing; ``interrupt`` (the client's ``close``) cuts a publish that is retrying short."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if interrupt is not None:
            interrupt()
        self._thread.join(timeout_s)

    def _take(self) -> Snapshot | None:
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._stop)
            if self._stop:
                return None
            snapshot, self._pending = self._pending, None
            self._busy = True
            return snapshot

    def _run(self) -> None:
        while (snapshot := self._take()) is not None:
            retry = self._send(snapshot)
            with self._cond:
                if retry and self._pending is None:
                    self._pending = snapshot  # nothing newer arrived: try this one again
                self._busy = False
                self._cond.notify_all()
            if retry:
                self._wait_backoff()

    def _send(self, snapshot: Snapshot) -> bool:
        """Publish once; True when a retry may succeed."""
        try:
            self._publish(snapshot.version, self._encode(snapshot.state))
        except PermanentPublishError as err:
            self.service_version = max(self.service_version, err.current_version)
            log.warning(
                "weight version refused",
                extra={"version": snapshot.version, "service_version": err.current_version, "error": str(err)},
            )
            return False
        except Exception as err:  # any transport failure: the service may come back
            if self._stop:
                return False  # interrupted by stop()
            log.warning(
                "weight publish failed; will retry",
                extra={"version": snapshot.version, "error": str(err), "attempt": self._backoff.failures + 1},
            )
            return True
        if self._backoff.failures:
            log.info("weight publishing recovered", extra={"version": snapshot.version})
        self._backoff.reset()
        self.published_version = snapshot.version
        self.service_version = max(self.service_version, snapshot.version)
        return False

    def _wait_backoff(self) -> None:
        delay = self._backoff.next_delay()
        with self._cond:
            # A newer snapshot does not cut the wait short: a down service would be hammered.
            self._cond.wait_for(lambda: self._stop, delay)
