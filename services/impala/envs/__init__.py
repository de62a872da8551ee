"""Small Gymnasium environments that isolate one learning ability each (diagnostics, not benchmarks).

Importing this package registers them, so ``--env impala.envs:impala/ContextualBandit-v0`` works
wherever a Gymnasium id is accepted (Gymnasium imports the module named before the colon).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from impala.envs.diagnostic import ContextualBandit, OneStepMemory
from impala.envs.minatar import MAX_EPISODE_STEPS, MinAtarFrames
from impala.envs.partial import CartPoleNoVelocity

__all__ = ["CartPoleNoVelocity", "ContextualBandit", "MinAtarFrames", "OneStepMemory"]

_REGISTERED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("impala/ContextualBandit-v0", "impala.envs.diagnostic:ContextualBandit", {}),
    ("impala/OneStepMemory-v0", "impala.envs.diagnostic:OneStepMemory", {}),
    # CartPole-v1's limit and threshold, so `impala local` takes its target (475) from the spec.
    (
        "impala/CartPoleNoVelocity-v0",
        "impala.envs.partial:CartPoleNoVelocity",
        {"max_episode_steps": 500, "reward_threshold": 475.0},
    ),
    *(
        (
            f"impala/MinAtar-{name}-v1",
            "impala.envs.minatar:MinAtarFrames",
            {"kwargs": {"game": game}, "max_episode_steps": MAX_EPISODE_STEPS},
        )
        for name, game in (("Breakout", "breakout"), ("SpaceInvaders", "space_invaders"))
    ),
)
for _name, _entry, _extra in _REGISTERED:
    if _name not in gym.registry:
        gym.register(_name, entry_point=_entry, **_extra)
