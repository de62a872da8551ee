"""The defaults learn (ADR 0016): a default that cannot learn a two-action contextual bandit fails CI.

Real learning runs of the in-process trainer (the same ``learn_step`` as the learner service), asserting
on the returns actually achieved. CartPole's run lives in ``test_inprocess.py``.
"""

from __future__ import annotations

import torch

from impala.core.inprocess import train_inprocess
from impala.core.learn import LearnConfig, make_learner_state
from impala.core.losses import baseline_loss
from impala.core.models import spec_for_env
from impala.envs.diagnostic import EPISODE_STEPS

BANDIT = "impala.envs:impala/ContextualBandit-v0"


def test_defaults_learn_the_contextual_bandit() -> None:
    """≥ 0.95 reward per step over the last 100 episodes (chance is 0.5), with no override at all."""
    target = 0.95 * EPISODE_STEPS
    result = train_inprocess(BANDIT, seed=0, max_env_steps=150_000, target_return=target)
    per_step = result.mean_return_100 / EPISODE_STEPS
    assert result.solved, f"{per_step:.3f} reward per step after {result.env_steps} env steps"
    assert per_step >= 0.95 and result.episodes >= 100


def test_value_regression_does_not_reach_the_policy_torso() -> None:
    """The mechanism of ADR 0016: with a shared tanh torso the baseline loss saturated the features the
    policy reads. Vector models give the critic its own torso, and an LSTM's memory only to read."""
    for use_lstm in (False, True):
        spec = spec_for_env(BANDIT, use_lstm=use_lstm)
        model = make_learner_state(spec, LearnConfig()).model
        obs = torch.randn(5, 3, *spec.observation_shape)
        out = model(obs, torch.zeros(5, 3, dtype=torch.bool))
        baseline_loss(out.baseline, torch.full((5, 3), 30.0), torch.ones(5, 3, dtype=torch.bool)).backward()
        shared = [p for name, p in model.named_parameters() if name.startswith(("torso.", "core.", "policy."))]
        assert shared and all(p.grad is None or not p.grad.any() for p in shared)
        assert model.critic is not None and any(p.grad is not None and p.grad.any() for p in model.critic.parameters())
