"""One IMPALA learning step as a function: forward over T+1 steps, V-trace, three losses, one optimizer step.

``learn_step`` has no I/O: the learner loop (Redis, weights, checkpoints, signals) and the in-process
trainer both call it. Termination and truncation enter through the per-step discounts and the reward
(docs/adr/0003-truncation-bootstrap.md):

    discount_t = γ · (1 − terminated_t) · (1 − truncated_t)
    reward'_t  = clip(r_t) + γ · truncated_t · (1 − terminated_t) · bootstrap_value_t   (bootstrap not clipped)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import torch
from torch import Tensor

from impala.core import distributions, vtrace
from impala.core.batch import Batch
from impala.core.losses import baseline_loss, entropy_loss, policy_gradient_loss
from impala.core.models import ModelSpec, Policy, build_model
from impala.core.presets import resolve


@dataclass(frozen=True)
class LearnConfig:
    """Hyperparameters; names and defaults equal the fields of ``impala.learner.settings.LearnerSettings``.

    Defaults learn small control tasks without tuning (ADR 0016): Adam, losses averaged over the valid
    steps, entropy 0.01, grad-norm clip 0.5. ``impala.core.presets.resolve`` fills a run's config from
    them and the env's preset (torchbeast's RMSprop configuration for ``ALE/*``).
    """

    unroll_length: int = 10  # T
    batch_size: int = 8  # B
    learning_rate: float = 1e-3
    total_steps: int = 50_000_000  # env steps over which the learning rate decays linearly to 0
    discounting: float = 0.99  # γ
    vtrace_lambda: float = 1.0  # λ of the V-trace traces (c_t = λ·min(c̄, ρ_t)); 1 is the paper's V-trace
    baseline_cost: float = 0.5
    entropy_cost: float = 0.01
    reward_clipping: str = "abs_one"  # "abs_one" | "none"
    grad_norm_clipping: float = 0.5
    rmsprop_alpha: float = 0.99
    rmsprop_epsilon: float = 0.01
    rmsprop_momentum: float = 0.0
    optimizer: str = "adam"  # "adam" | "rmsprop"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-5
    loss_reduction: str = "mean"  # "mean" | "sum" over the valid steps of the batch
    normalize_advantages: bool = False

    def __post_init__(self) -> None:
        if self.reward_clipping not in ("abs_one", "none"):
            raise ValueError(f"reward_clipping must be 'abs_one' or 'none', got {self.reward_clipping!r}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")
        if not 0.0 <= self.vtrace_lambda <= 1.0:
            raise ValueError(f"vtrace_lambda must be in [0, 1], got {self.vtrace_lambda}")
        if self.loss_reduction not in ("sum", "mean"):
            raise ValueError(f"loss_reduction must be 'sum' or 'mean', got {self.loss_reduction!r}")

    @classmethod
    def for_env(cls, env_id: str, overrides: Mapping[str, Any] | None = None) -> LearnConfig:
        """The resolved config of ``env_id`` (``impala.core.presets.resolve``) with ``overrides`` on top."""
        return cls(**resolve(env_id, overrides or {}, asdict(cls())))

    @classmethod
    def from_settings(cls, settings: Any) -> LearnConfig:
        """Copy the same-named fields of a settings object (e.g. ``LearnerSettings``)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


class LinearDecay(torch.optim.lr_scheduler.LRScheduler):
    """lr = base_lr · max(0, 1 − env_steps / total_steps); set ``env_steps`` before ``step()``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.total_steps = total_steps
        self.env_steps = 0
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        fraction = max(0.0, 1.0 - self.env_steps / self.total_steps)
        return [float(base) * fraction for base in self.base_lrs]


@dataclass
class LearnerState:
    """Everything a learner checkpoints: model, optimizer, scheduler and counters."""

    model: Policy
    optimizer: torch.optim.Optimizer
    scheduler: LinearDecay
    env_steps: int = 0  # valid env steps learned from (padding excluded)
    learner_steps: int = 0  # optimizer steps taken

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "env_steps": self.env_steps,
            "learner_steps": self.learner_steps,
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.env_steps = int(payload["env_steps"])
        self.learner_steps = int(payload["learner_steps"])


def make_learner_state(spec: ModelSpec, config: LearnConfig, device: torch.device | str = "cpu") -> LearnerState:
    """A fresh model on ``device`` with its optimizer (``config.optimizer``) and linear learning-rate decay."""
    model = build_model(spec).to(device)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(
            model.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
        )
    else:
        optimizer = torch.optim.RMSprop(
            model.parameters(),
            lr=config.learning_rate,
            alpha=config.rmsprop_alpha,
            eps=config.rmsprop_epsilon,
            momentum=config.rmsprop_momentum,
        )
    return LearnerState(model, optimizer, LinearDecay(optimizer, config.total_steps))


class GradientReducer(Protocol):
    """Turns this rank's gradients into those of the global batch's loss, in place (one all-reduce over
    the learner ranks: ``impala.learner.distributed``). ``learn_step`` calls it between ``backward()``
    and the grad-norm clip.

    Args:
        parameters: the model's parameters; their ``.grad`` are replaced.
        valid_steps: valid env steps of this rank's batch.
        mean: True when the loss is a mean over ``valid_steps`` (the global gradient is then the
            valid-step-weighted mean of the ranks'), False when it is a sum (the gradients add up).

    Returns:
        The valid env steps of the global batch (the counters and the learning-rate schedule count them).
    """

    def __call__(self, parameters: Sequence[Tensor], valid_steps: int, *, mean: bool) -> int: ...


def episode_starts(batch: Batch) -> Tensor:
    """done [T+1, B]: obs[t] starts an episode iff transition t−1 ended one; done[0] = False because the
    pool stores an already-reset ``initial_core_state``."""
    ended = batch.terminated | batch.truncated
    return torch.cat([torch.zeros_like(ended[:1]), ended], dim=0)


def vtrace_inputs(batch: Batch, config: LearnConfig) -> tuple[Tensor, Tensor]:
    """(rewards', discounts) [T, B] with truncation bootstraps folded into the reward (module docstring)."""
    gamma = config.discounting
    reward = batch.reward.clamp(-1.0, 1.0) if config.reward_clipping == "abs_one" else batch.reward
    # A step that is both terminated and truncated is terminal: nothing to bootstrap.
    truncated = (batch.truncated & ~batch.terminated).to(reward.dtype)
    rewards = reward + gamma * truncated * batch.bootstrap_value
    discounts = gamma * (~(batch.terminated | batch.truncated)).to(reward.dtype)
    return rewards, discounts


def learn_step(
    state: LearnerState, batch: Batch, config: LearnConfig, *, reduce_gradients: GradientReducer | None = None
) -> dict[str, float]:
    """One optimizer step on ``batch``; returns losses, grad norm, learning rate and episode stats.

    With ``reduce_gradients`` (N learner ranks) the step is that of the union of the ranks' batches.
    """
    model = state.model
    model.train()
    out = model(batch.observation, episode_starts(batch), batch.initial_core_state)
    logits, values, space = out.logits[:-1], out.baseline[:-1], model.spec.actions
    rewards, discounts = vtrace_inputs(batch, config)
    # log π(a) of the recorded actions (zeros on padding are valid actions: masked out below).
    target_log_prob = distributions.log_prob(space, logits, batch.action)
    # bootstrap_value = V(obs[T]); irrelevant wherever the chain was cut (discount 0) before T.
    targets = vtrace.from_importance_weights(
        target_log_prob.detach() - batch.behaviour_log_prob,
        discounts,
        rewards,
        values,
        out.baseline[-1],
        lambda_=config.vtrace_lambda,
    )
    advantages = targets.pg_advantages
    if config.normalize_advantages:
        advantages = _normalized(advantages, batch.mask)
    # "mean" divides every sum by the batch's valid steps: padding still weighs nothing.
    scale = 1.0 / batch.mask.sum().clamp(min=1) if config.loss_reduction == "mean" else 1.0
    pg = scale * policy_gradient_loss(target_log_prob, advantages, batch.mask)
    baseline = scale * config.baseline_cost * baseline_loss(values, targets.vs, batch.mask)
    entropy = scale * config.entropy_cost * entropy_loss(distributions.entropy(space, logits), batch.mask)
    total = pg + baseline + entropy

    state.optimizer.zero_grad(set_to_none=True)
    total.backward()  # type: ignore[no-untyped-call]
    steps = batch.num_steps
    if reduce_gradients is not None:
        steps = reduce_gradients(list(model.parameters()), steps, mean=config.loss_reduction == "mean")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_norm_clipping)
    learning_rate = state.optimizer.param_groups[0]["lr"]
    state.optimizer.step()
    state.env_steps += steps
    state.learner_steps += 1
    state.scheduler.env_steps = state.env_steps
    state.scheduler.step()

    # One device→host transfer for all scalars.
    values_list = torch.stack([total, pg, baseline, entropy, grad_norm]).detach().cpu().tolist()
    stats = dict(zip(("total_loss", "pg_loss", "baseline_loss", "entropy_loss", "grad_norm"), values_list, strict=True))
    stats.update(learning_rate=float(learning_rate), env_steps=float(state.env_steps))
    if batch.episode_returns:
        stats["episode_return_mean"] = sum(batch.episode_returns) / len(batch.episode_returns)
    return stats


def _normalized(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` shifted and scaled to mean 0, std 1 over the valid steps (padding left as is)."""
    valid = x[mask]
    if valid.numel() < 2:
        return x
    return (x - valid.mean()) / (valid.std() + 1e-8)
