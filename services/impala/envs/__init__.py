"""Small Gymnasium environments that isolate one learning ability each (diagnostics, not benchmarks).

Importing this package registers them, so ``--env impala.envs:impala/ContextualBandit-v0`` works
wherever a Gymnasium id is accepted (Gymnasium imports the module named before the colon).
"""

from __future__ import annotations

import gymnasium as gym

from impala.envs.diagnostic import ContextualBandit, OneStepMemory

__all__ = ["ContextualBandit", "OneStepMemory"]

for _name, _entry in (
    ("impala/ContextualBandit-v0", "impala.envs.diagnostic:ContextualBandit"),
    ("impala/OneStepMemory-v0", "impala.envs.diagnostic:OneStepMemory"),
):
    if _name not in gym.registry:
        gym.register(_name, entry_point=_entry)
