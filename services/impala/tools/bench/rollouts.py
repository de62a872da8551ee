"""Synthetic rollouts for the buffer and learner benchmarks: the wire bytes a pool would write, for a
CartPole-size (MLP, float32 [4]) and an Atari-size (shallow CNN, uint8 [4, 84, 84]) model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from impala.core.learn import LearnConfig
from impala.core.models import ModelSpec
from impala.core.rollouts import RolloutRecord, to_proto


@dataclass(frozen=True)
class Shape:
    """One benchmark size: the model, T and B (batch size of the learner reading these rollouts)."""

    name: str
    spec: ModelSpec
    unroll_length: int
    batch_size: int


# Atari: torchbeast's defaults (T=80, B=8). CartPole: T=80 is the size of design §8's Redis ceiling and
# B the preset's; the learner benchmark takes T from the CartPole preset too, as `impala local` does.
CARTPOLE = Shape("cartpole", ModelSpec((4,), "float32", 2, "mlp"), 80, LearnConfig.for_env("CartPole-v1").batch_size)
ATARI = Shape("atari", ModelSpec((4, 84, 84), "uint8", 6, "shallow"), 80, 8)


def record(shape: Shape, seed: int = 0, version: int = 1) -> RolloutRecord:
    """A full (unpadded) rollout with random observations, actions and rewards."""
    rng = np.random.default_rng(seed)
    T, spec = shape.unroll_length, shape.spec
    obs_shape = (T + 1, *spec.observation_shape)
    if spec.observation_dtype == "uint8":
        observation: np.ndarray = rng.integers(0, 256, obs_shape, dtype=np.uint8)
    else:
        observation = rng.standard_normal(obs_shape, dtype=np.float32)
    terminated = np.zeros(T, dtype=bool)
    terminated[T // 2] = True  # one episode boundary inside, as in real unrolls
    return RolloutRecord(
        observation=observation,
        action=rng.integers(0, spec.num_actions, T, dtype=np.int64),
        behaviour_logits=rng.standard_normal((T, spec.num_actions), dtype=np.float32),
        behaviour_log_prob=-rng.exponential(size=T).astype(np.float32),
        reward=rng.standard_normal(T, dtype=np.float32),
        terminated=terminated,
        truncated=np.zeros(T, dtype=bool),
        bootstrap_value=np.zeros(T, dtype=np.float32),
        mask=np.ones(T, dtype=bool),
        policy_versions=np.full(T, version, dtype=np.int64),
        length=T,
        episode_returns=[float(T // 2)],
        episode_lengths=[T // 2],
    )


def payload(shape: Shape, seed: int = 0) -> bytes:
    """The serialized ``impala.rollout.v1.Rollout`` of ``record(shape, seed)``."""
    return to_proto(record(shape, seed)).SerializeToString()


def size_label(size: int) -> str:
    """``3.9 KB`` / ``2.3 MB``."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} KB"
