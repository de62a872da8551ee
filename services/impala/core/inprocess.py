"""The in-process trainer: a Gymnasium vector env, a model and ``learn_step``, with no network and no Redis.

It is the correctness reference for the distributed system (same ``RolloutRecord`` → ``collate`` →
``learn_step`` path, same truncation semantics as the ActorPool) and the in-memory learner baseline
that benchmarks compare the Redis path against. Acting and learning share one model, so the policy
lag is zero when ``batch_size == num_envs``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from impala.core.batch import Batch, collate
from impala.core.envs import make_env
from impala.core.learn import LearnConfig, LearnerState, learn_step, make_learner_state
from impala.core.models import Policy, spec_for_env
from impala.core.presets import preset, resolve
from impala.core.rollouts import RolloutRecord
from impala.core.settings import ModelSettings

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    episode_returns: list[float] = field(default_factory=list)  # in completion order
    env_steps: int = 0
    learner_steps: int = 0
    seconds: float = 0.0
    solved: bool = False  # mean of the last 100 returns reached target_return
    mean_return_100: float = float("nan")

    @property
    def episodes(self) -> int:
        return len(self.episode_returns)


def train_inprocess(
    env_id: str,
    *,
    seed: int = 0,
    num_envs: int | None = None,
    max_env_steps: int = 1_000_000,
    target_return: float | None = None,
    hidden_size: int | None = None,
    use_lstm: bool | None = None,
    model: str | None = None,
    device: str = "cpu",
    torch_threads: int | None = 1,
    **overrides: Any,
) -> TrainResult:
    """Train on ``env_id`` until the last 100 episodes average ``target_return`` or ``max_env_steps`` pass.

    ``None`` arguments and ``LearnConfig`` fields not in ``overrides`` come from the one resolver
    (``impala.core.presets.resolve``: the env's preset, else the defaults), as in every other entry point.
    ``torch_threads`` is set for the run and restored after: small models run fastest on one thread, and
    on a busy 2-core machine two contending intra-op threads made a short run 17x slower (2.8 s vs 49 s).
    """
    given = {**overrides, "model": model, "hidden_size": hidden_size, "use_lstm": use_lstm}
    given = {name: value for name, value in given.items() if value is not None}
    model_defaults = {name: ModelSettings.model_fields[name].default for name in ("model", "hidden_size", "use_lstm")}
    effective = resolve(env_id, given, {**asdict(LearnConfig()), **model_defaults})
    config = LearnConfig(**{f.name: effective[f.name] for f in fields(LearnConfig)})
    num_envs = num_envs or preset(env_id).num_envs
    with _torch_threads(torch_threads):
        torch.manual_seed(seed)
        spec = spec_for_env(env_id, effective["model"], effective["hidden_size"], effective["use_lstm"])
        state = make_learner_state(spec, config, device)
        envs = gym.vector.SyncVectorEnv(
            [lambda: make_env(env_id) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
        try:
            actor = VectorActor(state.model, envs, config.unroll_length, seed, device)
            result = _loop(actor, state, config, device, max_env_steps, target_return)
        finally:
            envs.close()
    log.info("in-process training finished", extra={"env": env_id, **_summary(result)})
    return result


def _loop(
    actor: VectorActor,
    state: LearnerState,
    config: LearnConfig,
    device: str,
    max_env_steps: int,
    target_return: float | None,
) -> TrainResult:
    """Act T steps in every env, learn from every B rollouts, stop when solved or out of steps."""
    result, recent = TrainResult(), deque[float](maxlen=100)
    pending: list[RolloutRecord] = []
    batch: Batch | None = None
    start = time.perf_counter()
    while result.env_steps < max_env_steps and not result.solved:
        records = actor.unroll(version=state.learner_steps)
        result.env_steps += config.unroll_length * len(records)
        for rec in records:
            result.episode_returns.extend(rec.episode_returns)
            recent.extend(rec.episode_returns)
        pending.extend(records)
        while len(pending) >= config.batch_size:
            batch = collate(pending[: config.batch_size], device, out=batch)
            del pending[: config.batch_size]
            learn_step(state, batch, config)
        if len(recent) == recent.maxlen:
            result.mean_return_100 = sum(recent) / len(recent)
            result.solved = target_return is not None and result.mean_return_100 >= target_return
    result.learner_steps, result.seconds = state.learner_steps, time.perf_counter() - start
    return result


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _summary(result: TrainResult) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in fields(result) if f.name != "episode_returns"}


class VectorActor:
    """Steps the vector env with the model and cuts the stream into rollouts of T steps per env slot."""

    def __init__(self, model: Policy, envs: gym.vector.VectorEnv[Any, Any, Any], T: int, seed: int, device: str):
        self.model, self.envs, self.T, self.E = model, envs, T, envs.num_envs
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        obs, _ = envs.reset(seed=seed)
        self.obs = np.asarray(obs)
        self.done = np.zeros(self.E, dtype=bool)
        self.core_state = model.initial_state(self.E, self.device)
        self.ep_return = np.zeros(self.E)
        self.ep_length = np.zeros(self.E, dtype=np.int64)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def unroll(self, version: int) -> list[RolloutRecord]:
        T, E, space = self.T, self.E, self.model.spec.actions
        obs = np.zeros((T + 1, *self.obs.shape), dtype=self.obs.dtype)
        logits = np.zeros((T, E, space.param_size), dtype=np.float32)
        log_prob = np.zeros((T, E), dtype=np.float32)
        action = np.zeros((T, E, *space.shape_per_env), dtype=space.dtype)
        reward = np.zeros((T, E), dtype=np.float32)
        terminated, truncated = np.zeros((T, E), dtype=bool), np.zeros((T, E), dtype=bool)
        bootstrap = np.zeros((T, E), dtype=np.float32)
        # The state the policy acts with at obs[0]: zero where obs[0] starts an episode, as the pool stores
        # it, because the learner unrolls from it with done[0] = False (``impala.core.learn.episode_starts``).
        initial_state = tuple(np.where(self.done.reshape(-1, 1), 0.0, s.cpu().numpy()) for s in self.core_state)
        episodes: list[list[tuple[float, int]]] = [[] for _ in range(E)]
        for t in range(T):
            out = self.model.act(
                self._tensor(self.obs), self._tensor(self.done), self.core_state, generator=self.generator
            )
            obs[t], action[t] = self.obs, out.action.cpu().numpy()
            logits[t], log_prob[t] = out.logits.cpu().numpy(), out.log_prob.cpu().numpy()
            next_obs, r, term, trunc, info = self.envs.step(space.clip(action[t]))
            reward[t], terminated[t], truncated[t] = r, term, trunc
            bootstrap[t] = self._bootstrap(trunc & ~term, info, out.core_state)
            self._count(r, term | trunc, episodes)
            self.obs, self.done, self.core_state = np.asarray(next_obs), term | trunc, out.core_state
        obs[T] = self.obs
        return [
            RolloutRecord(
                observation=obs[:, i],
                action=action[:, i],
                behaviour_logits=logits[:, i],
                behaviour_log_prob=log_prob[:, i],
                reward=reward[:, i],
                terminated=terminated[:, i],
                truncated=truncated[:, i],
                bootstrap_value=bootstrap[:, i],
                mask=np.ones(T, dtype=bool),
                policy_versions=np.full(T, version, dtype=np.int64),
                length=T,
                initial_core_state=tuple(s[i].astype(np.float32) for s in initial_state),
                episode_returns=[ret for ret, _ in episodes[i]],
                episode_lengths=[n for _, n in episodes[i]],
                env_index=i,
            )
            for i in range(E)
        ]

    def _bootstrap(self, cut: np.ndarray, info: dict[str, Any], core_state: tuple[torch.Tensor, ...]) -> np.ndarray:
        """V(final observation) for envs whose episode was truncated (not terminated) by this step."""
        values = np.zeros(self.E, dtype=np.float32)
        if cut.any():
            final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)])
            rows = torch.from_numpy(np.flatnonzero(cut)).to(self.device)
            state = tuple(s.index_select(0, rows) for s in core_state)
            no_reset = torch.zeros(len(final), dtype=torch.bool, device=self.device)
            values[cut] = self.model.act(self._tensor(final), no_reset, state).baseline.cpu().numpy()
        return values

    def _count(self, r: np.ndarray, ended: np.ndarray, episodes: list[list[tuple[float, int]]]) -> None:
        self.ep_return += r
        self.ep_length += 1
        for i in np.flatnonzero(ended):
            episodes[i].append((float(self.ep_return[i]), int(self.ep_length[i])))
        self.ep_return[ended], self.ep_length[ended] = 0.0, 0
