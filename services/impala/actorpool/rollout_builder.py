"""Builds the rollouts of one client stream: E env slots advancing in lockstep, vectorized over E.

Alignment (time-major, one column per env slot): ``obs[t]`` is what the policy saw before
``action[t]``; ``reward[t]``, ``terminated[t]`` and ``truncated[t]`` belong to the transition
``t -> t+1``; ``obs[T]`` bootstraps and is also ``obs[0]`` of the next rollout (the T+1 overlap).
When the stream ends after L < T transitions, the rollout ships with ``mask = t < L``, its padding
zeroed, and the last transition marked truncated with ``bootstrap_value = V(obs[L])`` (closing a
stream is a truncation, docs/adr/0003-truncation-bootstrap.md).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from impala.core.env_spec import ActionSpace
from impala.core.rollouts import RolloutRecord, to_proto

Array = npt.NDArray[np.generic]


class StreamRollouts:
    """Rollout buffers of one stream; not thread-safe (one stream handler owns it)."""

    def __init__(
        self,
        *,
        unroll_length: int,
        num_envs: int,
        observation_shape: tuple[int, ...],
        observation_dtype: np.dtype[np.generic],
        action_space: ActionSpace,
        state_shapes: tuple[tuple[int, ...], ...],
        producer_id: str,
        session_id: str,
    ) -> None:
        T, E = unroll_length, num_envs
        self.T, self.E = T, E
        # Not zeroed: every row is written before it ships (``act`` writes obs[t] for t <= L, ``close``
        # zeroes the rest), and for pixels this buffer is tens of MB that zeroing would fault in at once.
        self.obs: Array = np.empty((T + 1, E, *observation_shape), dtype=observation_dtype)
        self.action: Array = np.zeros((T, E, *action_space.shape_per_env), dtype=action_space.dtype)
        self.logits = np.zeros((T, E, action_space.param_size), dtype=np.float32)
        self.log_prob = np.zeros((T, E), dtype=np.float32)
        self.reward = np.zeros((T, E), dtype=np.float32)
        self.terminated = np.zeros((T, E), dtype=np.bool_)
        self.truncated = np.zeros((T, E), dtype=np.bool_)
        self.bootstrap = np.zeros((T, E), dtype=np.float32)
        self.versions = np.zeros((T, E), dtype=np.int64)
        self.initial_state: tuple[Array, ...] = tuple(np.zeros((E, *s), dtype=np.float32) for s in state_shapes)
        self.ep_return = np.zeros(E, dtype=np.float64)
        self.ep_length = np.zeros(E, dtype=np.int64)
        self.episodes: list[list[tuple[float, int]]] = [[] for _ in range(E)]
        self.t = 0  # transitions completed in the current rollout
        self.producer_id, self.session_id = producer_id, session_id

    def act(
        self, obs: Array, action: Array, logits: Array, log_prob: Array, version: int, state_in: tuple[Array, ...]
    ) -> None:
        """Record the observation the policy just acted on (``obs[t]``), its action and log μ(action)."""
        t = self.t
        if t == 0:
            for buf, value in zip(self.initial_state, state_in, strict=True):
                buf[...] = value
        self.obs[t] = obs
        self.action[t] = action
        self.logits[t] = logits
        self.log_prob[t] = log_prob
        self.versions[t] = version

    def transition(
        self,
        reward: npt.NDArray[np.float32],
        terminated: npt.NDArray[np.bool_],
        truncated: npt.NDArray[np.bool_],
        bootstrap: npt.NDArray[np.float32],
        next_obs: Array,
    ) -> list[bytes]:
        """Complete transition ``t -> t+1``; returns the serialized rollouts when T steps are full."""
        t = self.t
        self.reward[t] = reward
        self.terminated[t] = terminated
        self.truncated[t] = truncated
        self.bootstrap[t] = np.where(truncated, bootstrap, 0.0)
        self._count_episodes(reward, terminated | truncated)
        return self._advance(next_obs)

    def transition_without_ends(self, reward: npt.NDArray[np.float32], next_obs: Array) -> list[bytes]:
        """``transition`` for a step in which no episode ended (no flags, nothing to bootstrap)."""
        t = self.t
        self.reward[t] = reward
        self.terminated[t] = False
        self.truncated[t] = False
        self.bootstrap[t] = 0.0
        self._add_step(reward)
        return self._advance(next_obs)

    def _advance(self, next_obs: Array) -> list[bytes]:
        self.t += 1
        if self.t < self.T:
            return []
        self.obs[self.T] = next_obs
        payloads = self._ship(self.T)
        self.t = 0
        return payloads

    def close(self, last_values: npt.NDArray[np.float32]) -> list[bytes]:
        """The stream ended: truncate every slot at its last observation and ship what is there.

        Every episode the stream was in counts as ended here, once. When the last Step completed a
        rollout (L = 0: its chain already bootstraps from V(obs[T]), the last observation, as a truncation
        does) the slots in an episode ship an empty rollout (length 0, all padding) that carries it.
        """
        L = self.t
        slots: list[int] | None = None  # all
        if L == 0:
            slots = np.flatnonzero(self.ep_length > 0).tolist()
            if not slots:
                return []
            for i in slots:
                self.episodes[i].append((float(self.ep_return[i]), int(self.ep_length[i])))
        else:
            last = L - 1
            open_slots = ~(self.terminated[last] | self.truncated[last])
            self.truncated[last] |= open_slots
            self.bootstrap[last] = np.where(open_slots, last_values, self.bootstrap[last])
            for j in np.flatnonzero(open_slots & (self.ep_length > 0)):  # the disconnect ended these episodes
                self.episodes[j].append((float(self.ep_return[j]), int(self.ep_length[j])))
        self.obs[L + 1 if L else 0 :] = 0
        for buf in (
            self.action,
            self.logits,
            self.log_prob,
            self.reward,
            self.terminated,
            self.truncated,
            self.bootstrap,
            self.versions,
        ):
            buf[L:] = 0
        return self._ship(L, slots)

    def _add_step(self, reward: npt.NDArray[np.float32]) -> None:
        self.ep_return += reward
        self.ep_length += 1

    def _count_episodes(self, reward: npt.NDArray[np.float32], ended: npt.NDArray[np.bool_]) -> None:
        self._add_step(reward)
        if not ended.any():  # most steps: no index arrays to build
            return
        for i in np.flatnonzero(ended):
            self.episodes[i].append((float(self.ep_return[i]), int(self.ep_length[i])))
        self.ep_return[ended] = 0.0
        self.ep_length[ended] = 0

    def _ship(self, length: int, slots: list[int] | None = None) -> list[bytes]:
        """Serialize the rollouts of ``slots`` (default: all), each carrying its slot's ended episodes."""
        mask = np.arange(self.T) < length
        payloads = []
        for i in range(self.E) if slots is None else slots:
            record = RolloutRecord(
                observation=self.obs[:, i],
                action=self.action[:, i],
                behaviour_logits=self.logits[:, i],
                behaviour_log_prob=self.log_prob[:, i],
                reward=self.reward[:, i],
                terminated=self.terminated[:, i],
                truncated=self.truncated[:, i],
                bootstrap_value=self.bootstrap[:, i],
                mask=mask,
                policy_versions=self.versions[:, i],
                length=length,
                initial_core_state=tuple(s[i] for s in self.initial_state),
                episode_returns=[r for r, _ in self.episodes[i]],
                episode_lengths=[n for _, n in self.episodes[i]],
                producer_id=self.producer_id,
                session_id=self.session_id,
                env_index=i,
            )
            payloads.append(to_proto(record).SerializeToString())
            self.episodes[i] = []
        return payloads
