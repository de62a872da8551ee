"""Environment client SDK and ``impala env``: simulators that dial into an ActorPool.

An environment author writes a ``Simulator`` (or a Gymnasium env factory) and calls ``serve``::

    import numpy as np
    from impala.client import ClientSettings, SimulatorBatch, serve

    class Corridor:  # walk right to cell 10; observation float32[1], actions 0 (left) and 1 (right)
        num_actions = 2

        def reset(self):
            self.pos = 0
            return np.array([self.pos], np.float32)

        def step(self, action):
            self.pos += 1 if action == 1 else -1
            return np.array([self.pos], np.float32), float(self.pos == 10), self.pos == 10, self.pos == -10

    serve(SimulatorBatch(Corridor, num_envs=8), ClientSettings(address="pool:50051", token="s3cret"))

``step`` returns ``(observation, reward, terminated, truncated)``. For a Gymnasium env use
``GymnasiumBatch("CartPole-v1", num_envs=16)`` or ``GymnasiumBatch(lambda: MyEnv(), num_envs=16)``.
``serve`` runs until SIGINT/SIGTERM (it finishes the current exchange and closes the stream) or
``ClientSettings.max_steps``, reconnects with backoff when the pool goes away, and raises ``ClientError``
when the pool refuses the client. ``EnvClient.run`` is the asyncio form. The wire contract is
docs/protocol.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from impala.client.backends import EnvpoolBatch, GymnasiumBatch, make_batch
    from impala.client.client import ClientError, ClientStats, EnvClient, UnreachableError
    from impala.client.main import serve
    from impala.client.settings import ClientSettings
    from impala.client.simulator import BatchStep, EnvBatch, Simulator, SimulatorBatch
    from impala.client.wire import ProtocolError

# Imported on first use (PEP 562): `impala.client.settings` is loaded by every `impala` command, and
# the torch-free images (control, weights) must not pay for gymnasium.
_HOMES = {
    "EnvpoolBatch": "backends",
    "GymnasiumBatch": "backends",
    "make_batch": "backends",
    "ClientSettings": "settings",
    "ClientError": "client",
    "ClientStats": "client",
    "EnvClient": "client",
    "UnreachableError": "client",
    "serve": "main",
    "BatchStep": "simulator",
    "EnvBatch": "simulator",
    "Simulator": "simulator",
    "SimulatorBatch": "simulator",
    "ProtocolError": "wire",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"impala.client.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'impala.client' has no attribute {name!r}")


__all__ = [
    "BatchStep",
    "ClientError",
    "ClientSettings",
    "ClientStats",
    "EnvBatch",
    "EnvClient",
    "EnvpoolBatch",
    "GymnasiumBatch",
    "ProtocolError",
    "Simulator",
    "SimulatorBatch",
    "UnreachableError",
    "make_batch",
    "serve",
]
