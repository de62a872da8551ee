"""Policy networks: a torso (MLP, IMPALA shallow CNN or deep ResNet), an optional LSTM core, and
a policy head (categorical, independent categoricals or diagonal Gaussian, ``impala.core.distributions``)
and a baseline head. Time-major: ``forward`` takes ``[T, B, *obs]``, ``act`` takes ``[B, *obs]``.

``done[t]`` is True when ``obs[t]`` is the first observation of a new episode; the LSTM state is zeroed
before that step, so one unroll may span several episodes. uint8 observations are scaled by 1/255 here,
so pixels travel as bytes over the wire and through Redis; other dtypes are cast to float32.
Architectures follow Espeholt et al. 2018 (arXiv:1802.01561), fig. 3.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from impala.core import distributions
from impala.core.env_spec import ActionSpace, EnvSpec, resolve, spec_of_env
from impala.core.settings import ModelSettings

State = tuple[Tensor, ...]
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes a model's architecture; pools and learners build the same model from it."""

    observation_shape: tuple[int, ...]
    observation_dtype: str  # a dtype name of impala.core.env_spec.OBSERVATION_DTYPES
    num_actions: int  # n of a discrete action space; 0 for the others
    kind: str  # "mlp" | "shallow" | "resnet"
    hidden_size: int = 64
    use_lstm: bool = False
    action_space: ActionSpace | None = None  # None: Discrete(num_actions)

    @property
    def actions(self) -> ActionSpace:
        """The action space (``Discrete(num_actions)`` unless another one is set)."""
        return self.action_space if self.action_space is not None else ActionSpace.discrete(self.num_actions)

    @property
    def env_spec(self) -> EnvSpec:
        return EnvSpec(self.observation_shape, self.observation_dtype, self.actions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (checkpoints and exported policies store it)."""
        out = asdict(self)
        out["action_space"] = None if self.action_space is None else self.action_space.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        action = data.get("action_space")
        return cls(
            **{
                **data,
                "observation_shape": tuple(data["observation_shape"]),
                "action_space": None if action is None else ActionSpace.from_dict(action),
            }
        )


class PolicyOutput(NamedTuple):
    logits: Tensor  # [T, B, P], the action distribution's parameters (logits for categorical heads)
    baseline: Tensor  # [T, B]
    core_state: State  # each [B, *state_shape]


class ActOutput(NamedTuple):
    action: Tensor  # [B, *action_shape]: int64 (discrete, multi-discrete) or float32 (box, unclipped)
    logits: Tensor  # [B, P]
    baseline: Tensor  # [B]
    core_state: State
    log_prob: Tensor  # [B], log π(action)


def spec_for(env: EnvSpec, model: str = "auto", hidden_size: int = 64, use_lstm: bool = False) -> ModelSpec:
    """The ModelSpec for an env spec: ``auto`` picks the shallow CNN for ``[C, H, W]`` observations."""
    shape = env.observation_shape
    kind = model if model != "auto" else ("shallow" if len(shape) == 3 else "mlp")
    action = env.action
    num_actions = action.num_actions
    # Discrete specs keep action_space None: the same fingerprint and checkpoints as before spaces existed.
    explicit = None if action.type == "discrete" else action
    return ModelSpec(shape, env.observation_dtype, num_actions, kind, hidden_size, use_lstm, explicit)


def spec_from_settings(settings: ModelSettings) -> ModelSpec:
    """The model of a pool or learner: from ``env_spec``, ``env``, or both (which must agree)."""
    env = resolve(settings.env_id(), settings.env_spec)
    return spec_for(env, settings.model, settings.hidden_size, settings.use_lstm)


def spec_for_env(env_id: str, model: str = "auto", hidden_size: int = 64, use_lstm: bool = False) -> ModelSpec:
    """The ModelSpec for an env id; builds the env (with ``make_env`` preprocessing) only to read its spaces."""
    return spec_for(spec_of_env(env_id), model, hidden_size, use_lstm)


def build_model(spec: ModelSpec) -> Policy:
    """A freshly initialised Policy for ``spec``."""
    return Policy(spec)


def fingerprint(model: Policy) -> str:
    """Stable hex digest of the spec and every parameter's name, shape and dtype (not the values)."""
    layout = [(name, list(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    text = json.dumps({"spec": model.spec.to_dict(), "tensors": layout}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class Policy(nn.Module):
    """Torso → (LSTM) → policy logits; baseline from the same features (images) or its own torso (vectors).

    Vector observations get a separate critic (as CleanRL's PPO for classic control): a second MLP torso
    whose features, with the LSTM output detached when there is one, feed the baseline head. A shared
    tanh torso lets the value regression saturate the features the policy reads (ADR 0016: on a
    contextual bandit the policy gradient reaching the torso fell 10,000-fold within 200 updates and
    the policy stayed at chance). Image models keep the shared torso of the IMPALA paper.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.torso, features = _torso(spec)
        self.core = nn.LSTM(features, spec.hidden_size) if spec.use_lstm else None
        core_features = spec.hidden_size if spec.use_lstm else features
        self.critic: nn.Module | None = None
        baseline_features = core_features
        if spec.kind == "mlp":
            self.critic, critic_features = _torso(spec)
            baseline_features = critic_features + (spec.hidden_size if spec.use_lstm else 0)
        self.action_space = space = spec.actions
        gaussian = space.type == "box"
        # The Gaussian's head outputs the mean; its log-std is a learned state-independent vector.
        self.policy = nn.Linear(core_features, space.param_size // 2 if gaussian else space.param_size)
        self.log_std = nn.Parameter(torch.zeros(space.param_size // 2)) if gaussian else None
        self.baseline = nn.Linear(baseline_features, 1)
        # Near-uniform initial policy: small logits keep early exploration high (as in CleanRL's PPO).
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero recurrent state, ``()`` without LSTM, else ``(h, c)`` each ``[B, hidden_size]``."""
        if self.core is None:
            return ()
        return tuple(torch.zeros(batch_size, self.spec.hidden_size, device=device) for _ in range(2))

    def forward(self, obs: Tensor, done: Tensor, core_state: State = ()) -> PolicyOutput:
        """``obs`` ``[T, B, *obs]``, ``done`` bool ``[T, B]`` → logits ``[T, B, A]``, baseline ``[T, B]``.

        An empty ``core_state`` means the zero state (``initial_state``)."""
        T, B = obs.shape[:2]
        flat = obs.flatten(0, 1)
        flat = flat.float() / 255.0 if flat.dtype == torch.uint8 else flat.float()
        x = self.torso(flat).view(T, B, -1)
        if self.core is not None:
            x, core_state = self._unroll(x, done, core_state or self.initial_state(B, x.device))
        logits = self.policy(x)
        if self.log_std is not None:
            # Bounded so that neither exp(log_std) nor its inverse overflows: std in [e^-5, e^2].
            log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(logits)
            logits = torch.cat([logits, log_std], -1)
        critic_x = x
        if self.critic is not None:
            critic_x = self.critic(flat).view(T, B, -1)
            if self.core is not None:  # the critic reads the memory but does not train it
                critic_x = torch.cat([critic_x, x.detach()], dim=-1)
        return PolicyOutput(logits, self.baseline(critic_x).squeeze(-1), core_state)

    def _unroll(self, x: Tensor, done: Tensor, core_state: State) -> tuple[Tensor, State]:
        assert self.core is not None
        h, c = (s.unsqueeze(0) for s in core_state)  # nn.LSTM wants [layers, B, H]
        outputs = []
        for x_t, done_t in zip(x.unbind(0), done.unbind(0), strict=True):
            # Zero the state where obs[t] starts a new episode, so no memory leaks across episodes.
            keep = (~done_t).to(x.dtype).view(1, -1, 1)
            out, (h, c) = self.core(x_t.unsqueeze(0), (h * keep, c * keep))
            outputs.append(out)
        return torch.cat(outputs), (h.squeeze(0), c.squeeze(0))

    @torch.no_grad()
    def act(
        self,
        obs: Tensor,
        done: Tensor,
        core_state: State = (),
        *,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> ActOutput:
        """One step for a batch: ``obs`` ``[B, *obs]``, ``done`` ``[B]`` → sampled (or greedy) actions.
        Box actions are the unclipped sample (``ActionSpace.clip`` bounds them for the env)."""
        out = self.forward(obs.unsqueeze(0), done.unsqueeze(0), core_state)
        logits, baseline, space = out.logits[0], out.baseline[0], self.action_space
        shape = (logits.shape[0], distributions.noise_size(space))
        if greedy:
            noise = torch.zeros(shape, device=logits.device)
        elif distributions.noise_is_normal(space):
            noise = torch.randn(shape, generator=generator, device=logits.device)
        else:
            uniform = torch.rand(shape, generator=generator, device=logits.device)
            noise = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))  # standard Gumbel
        action = distributions.sample(space, logits, noise)
        log_prob = distributions.log_prob(space, logits.float(), action)
        return ActOutput(action, logits, baseline, out.core_state, log_prob)


# The shallow IMPALA CNN (8×8/4 then 4×4/2) needs frames of at least 20×20; smaller ones (MinAtar's
# 10×10) get a small-image torso instead (ADR 0025).
SHALLOW_MIN_SIDE = 20


def _torso(spec: ModelSpec) -> tuple[nn.Module, int]:
    """The feature extractor for ``spec.kind`` and its output width."""
    if spec.kind == "mlp":
        size, d_in = spec.hidden_size, math.prod(spec.observation_shape)
        layers = [nn.Flatten(), nn.Linear(d_in, size), nn.Tanh(), nn.Linear(size, size), nn.Tanh()]
        return nn.Sequential(*layers), size
    if len(spec.observation_shape) != 3:
        raise ValueError(f"model {spec.kind!r} needs [C, H, W] observations, got {list(spec.observation_shape)}")
    channels, height, width = spec.observation_shape
    if spec.kind == "shallow" and min(height, width) < SHALLOW_MIN_SIDE:
        # MinAtar's network (Young & Tian 2019): one 3×3 stride-1 conv keeps every cell of a small frame.
        conv: nn.Module = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())
    elif spec.kind == "shallow":
        conv = nn.Sequential(
            nn.Conv2d(channels, 16, 8, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(), nn.Flatten()
        )
    elif spec.kind == "resnet":
        conv = nn.Sequential(
            _ResNetSection(channels, 16), _ResNetSection(16, 32), _ResNetSection(32, 32), nn.ReLU(), nn.Flatten()
        )
    else:
        raise ValueError(f"unknown model kind {spec.kind!r} (mlp, shallow, resnet)")
    with torch.no_grad():
        flat = int(conv(torch.zeros(1, channels, height, width)).shape[1])
    return nn.Sequential(conv, nn.Linear(flat, 256), nn.ReLU()), 256


class _ResNetSection(nn.Module):
    """Conv 3×3 → max-pool 3×3/2 → two residual blocks (the IMPALA deep network's building block)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1)
            )
            for _ in range(2)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.conv(x))
        for block in self.blocks:
            x = x + block(x)
        return x
