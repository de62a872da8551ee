"""learn_step: finite losses and moving parameters; padding is invisible to the gradient; truncation
bootstraps equal a continued chain (ADR 0003); collate; config names match the learner settings."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from impala.core import vtrace
from impala.core.batch import collate
from impala.core.learn import LearnConfig, episode_starts, learn_step, make_learner_state, vtrace_inputs
from impala.core.models import ModelSpec
from impala.core.rollouts import RolloutRecord
from impala.learner.settings import LearnerSettings
from tests.support import categorical_log_prob

A = 3


def record(T: int, length: int, seed: int, *, state_size: int = 0) -> RolloutRecord:
    """A rollout of ``length`` valid steps padded to T; episodes end inside it, the last step is truncated.

    The padding holds random values rather than zeros, to show that nothing on it reaches the learner."""
    rng = np.random.default_rng(seed)
    valid = np.arange(T) < length
    terminated = np.zeros(T, dtype=bool)
    truncated = np.zeros(T, dtype=bool)
    terminated[1] = True
    truncated[length - 1] = True
    obs = rng.normal(size=(T + 1, 4)).astype(np.float32)
    return RolloutRecord(
        observation=obs,
        action=(action := np.where(valid, rng.integers(0, A, T), 0)),
        behaviour_logits=(logits := rng.normal(size=(T, A)).astype(np.float32)),
        behaviour_log_prob=categorical_log_prob(logits, action),
        reward=(rng.normal(size=T) * 2).astype(np.float32),
        terminated=terminated,
        truncated=truncated,
        bootstrap_value=np.where(truncated, 0.7, 0.0).astype(np.float32),
        mask=valid,
        policy_versions=np.zeros(T, dtype=np.int64),
        length=length,
        initial_core_state=tuple(rng.normal(size=state_size).astype(np.float32) for _ in range(2 if state_size else 0)),
        episode_returns=[float(seed)],
        episode_lengths=[2],
    )


def unpadded(rec: RolloutRecord) -> RolloutRecord:
    L = rec.length
    return RolloutRecord(
        observation=rec.observation[: L + 1],
        **{
            name: getattr(rec, name)[:L]
            for name in ("action", "behaviour_logits", "behaviour_log_prob", "reward", "terminated", "truncated")
        },
        bootstrap_value=rec.bootstrap_value[:L],
        mask=rec.mask[:L],
        policy_versions=rec.policy_versions[:L],
        length=L,
        initial_core_state=rec.initial_core_state,
    )


def spec(use_lstm: bool) -> ModelSpec:
    return ModelSpec((4,), "float32", A, "mlp", hidden_size=8, use_lstm=use_lstm)


CONFIG = LearnConfig(unroll_length=6, batch_size=3, learning_rate=1e-2, total_steps=1000, entropy_cost=0.01)


def test_learn_step_gives_finite_losses_changes_parameters_and_decays_lr() -> None:
    torch.manual_seed(0)
    state = make_learner_state(spec(False), CONFIG)
    before = [p.detach().clone() for p in state.model.parameters()]
    batch = collate([record(6, 6, s) for s in range(3)], "cpu")
    stats = learn_step(state, batch, CONFIG)
    for key in ("total_loss", "pg_loss", "baseline_loss", "entropy_loss", "grad_norm"):
        assert np.isfinite(stats[key]), key
    assert stats["total_loss"] == pytest.approx(stats["pg_loss"] + stats["baseline_loss"] + stats["entropy_loss"])
    assert stats["learning_rate"] == pytest.approx(1e-2)
    assert stats["episode_return_mean"] == pytest.approx(1.0)
    assert all(not torch.equal(b, p) for b, p in zip(before, state.model.parameters(), strict=True))
    assert (state.env_steps, state.learner_steps) == (18, 1)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 - 18 / 1000))


@pytest.mark.parametrize("lambda_", [1.0, 0.5, 0.0])
def test_vtrace_lambda_reaches_the_value_targets(lambda_: float) -> None:
    """The baseline loss of a step is ½ Σ (v_s − V(x_s))² with v_s the V-trace targets of the config's λ."""
    torch.manual_seed(0)
    config = LearnConfig(**{**CONFIG.__dict__, "vtrace_lambda": lambda_, "loss_reduction": "sum"})
    state = make_learner_state(spec(False), config)
    batch = collate([record(6, 6, s) for s in range(3)], "cpu")
    with torch.no_grad():
        out = state.model(batch.observation, episode_starts(batch), batch.initial_core_state)
        log_prob = torch.log_softmax(out.logits[:-1], -1).gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)
        rewards, discounts = vtrace_inputs(batch, config)
        values = out.baseline[:-1]
        targets = vtrace.from_importance_weights(
            log_prob - batch.behaviour_log_prob, discounts, rewards, values, out.baseline[-1], lambda_=lambda_
        )
        want = config.baseline_cost * 0.5 * ((targets.vs - values) ** 2 * batch.mask).sum()
    assert learn_step(state, batch, config)["baseline_loss"] == pytest.approx(want.item(), rel=1e-5)


def test_vtrace_lambda_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match="vtrace_lambda"):
        LearnConfig(vtrace_lambda=1.5)


@pytest.mark.parametrize("use_lstm", [False, True])
def test_partial_rollout_padded_gives_the_gradients_of_the_unpadded_batch(use_lstm: bool) -> None:
    T, L = 8, 5
    size = 8 if use_lstm else 0
    partial = [record(T, L, seed, state_size=size) for seed in range(3)]
    grads = []
    for records in (partial, [unpadded(r) for r in partial]):
        torch.manual_seed(1)
        state = make_learner_state(spec(use_lstm), CONFIG)
        stats = learn_step(state, collate(records, "cpu"), CONFIG)
        grads.append(([p.grad.clone() for p in state.model.parameters() if p.grad is not None], stats))
    (padded_grads, padded_stats), (plain_grads, plain_stats) = grads
    assert len(padded_grads) == len(plain_grads) > 0
    for got, want in zip(padded_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert padded_stats["total_loss"] == pytest.approx(plain_stats["total_loss"], rel=1e-5)
    assert padded_stats["env_steps"] == plain_stats["env_steps"] == 3 * L


def test_truncation_bootstrap_folded_into_the_reward_equals_continuing_the_chain() -> None:
    """ADR 0003: cutting at a truncation with reward' = r + γ·V_actor(final) gives the targets of an
    uncut chain that bootstraps from V_actor(final) at that step."""
    T, k, gamma, final_value = 7, 3, 0.9, 2.5
    rng = np.random.default_rng(4)
    rec = record(T, T, 0)
    rec.terminated[:] = False
    rec.truncated[:] = False
    rec.truncated[k] = True  # episode cut by the time limit after transition k
    rec.bootstrap_value[:] = 0.0
    rec.bootstrap_value[k] = final_value
    batch = collate([rec], "cpu")
    config = LearnConfig(discounting=gamma, reward_clipping="none")
    rewards, discounts = vtrace_inputs(batch, config)
    values, v_T = torch.tensor(rng.normal(size=(T, 1))), torch.tensor([0.3])
    log_rhos = torch.tensor(rng.normal(size=(T, 1)) * 0.3)
    whole = vtrace.from_importance_weights(log_rhos, discounts.double(), rewards.double(), values, v_T)
    # Reference: the truncated episode alone, ending at k and bootstrapping from V(final) with discount γ ...
    r = batch.reward.double()
    head = vtrace.from_importance_weights(
        log_rhos[: k + 1], torch.full((k + 1, 1), gamma), r[: k + 1], values[: k + 1], torch.tensor([final_value])
    )
    # ... and the next episode, which starts at k+1.
    tail = vtrace.from_importance_weights(
        log_rhos[k + 1 :], torch.full((T - k - 1, 1), gamma), r[k + 1 :], values[k + 1 :], v_T
    )
    torch.testing.assert_close(whole.vs, torch.cat([head.vs, tail.vs]))
    torch.testing.assert_close(whole.pg_advantages, torch.cat([head.pg_advantages, tail.pg_advantages]))
    assert rewards[k, 0].item() == pytest.approx(rec.reward[k] + gamma * final_value)  # bootstrap not clipped


def test_reward_clipping_leaves_the_bootstrap_alone_and_terminal_wins() -> None:
    rec = record(4, 4, 0)
    rec.reward[:] = [5.0, -5.0, 0.5, 9.0]
    rec.terminated[:] = [False, True, False, False]
    rec.truncated[:] = [False, True, False, True]  # step 1 is terminal and truncated at once: terminal wins
    rec.bootstrap_value[:] = [0.0, 3.0, 0.0, 3.0]
    rewards, discounts = vtrace_inputs(collate([rec], "cpu"), LearnConfig(discounting=0.5))
    np.testing.assert_allclose(rewards[:, 0].numpy(), [1.0, -1.0, 0.5, 1.0 + 0.5 * 3.0])
    np.testing.assert_allclose(discounts[:, 0].numpy(), [0.5, 0.0, 0.5, 0.0])


def test_episode_starts_follow_the_previous_transition() -> None:
    rec = record(5, 5, 0)
    rec.terminated[:] = [False, True, False, False, False]
    rec.truncated[:] = [False, False, False, True, False]
    done = episode_starts(collate([rec], "cpu"))[:, 0].tolist()
    assert done == [False, False, True, False, True, False]


def test_collate_is_time_major_and_reuses_buffers() -> None:
    records = [record(6, 6, s, state_size=2) for s in range(3)]
    batch = collate(records, "cpu")
    assert batch.observation.shape == (7, 3, 4) and batch.behaviour_logits.shape == (6, 3, A)
    assert batch.initial_core_state[0].shape == (3, 2)
    np.testing.assert_array_equal(batch.reward[:, 2].numpy(), records[2].reward)
    again = collate(records[::-1], "cpu", out=batch)
    assert again is batch
    np.testing.assert_array_equal(batch.reward[:, 0].numpy(), records[2].reward)
    assert batch.episode_returns == [2.0, 1.0, 0.0]
    assert collate(records[:2], "cpu", out=batch) is not batch  # B changed: fresh buffers


def test_config_fields_are_learner_settings_fields_with_the_same_defaults() -> None:
    settings = LearnerSettings()
    for f in fields(LearnConfig):
        assert getattr(settings, f.name) == f.default, f.name
    assert LearnConfig.from_settings(settings) == LearnConfig()
    with pytest.raises(ValueError, match="reward_clipping"):
        LearnConfig(reward_clipping="soft")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_collate_and_learn_step_on_cuda_match_cpu() -> None:
    records = [record(6, 4, s, state_size=8) for s in range(3)]
    cpu_batch, gpu_batch = collate(records, "cpu"), collate(records, "cuda")
    assert gpu_batch.observation.is_cuda and gpu_batch._host is not None and gpu_batch._host.reward.is_pinned()
    for name in ("observation", "action", "behaviour_logits", "reward", "truncated", "bootstrap_value", "mask"):
        torch.testing.assert_close(getattr(gpu_batch, name).cpu(), getattr(cpu_batch, name))
    grads = []
    for device, batch in (("cpu", cpu_batch), ("cuda", gpu_batch)):
        torch.manual_seed(2)
        state = make_learner_state(spec(True), CONFIG, device)
        stats = learn_step(state, batch, CONFIG)
        assert np.isfinite(stats["total_loss"])
        grads.append([p.grad.cpu() for p in state.model.parameters() if p.grad is not None])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert collate(records[::-1], "cuda", out=gpu_batch) is gpu_batch  # reused after the event completes
    np.testing.assert_array_equal(gpu_batch.reward[:, 0].cpu().numpy(), records[2].reward)


def test_learner_state_round_trips_through_its_state_dict() -> None:
    torch.manual_seed(0)
    state = make_learner_state(spec(False), CONFIG)
    for _ in range(2):
        learn_step(state, collate([record(6, 6, s) for s in range(3)], "cpu"), CONFIG)
    restored = make_learner_state(spec(False), CONFIG)
    restored.load_state_dict(state.state_dict())
    assert (restored.env_steps, restored.learner_steps) == (36, 2)
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(state.optimizer.param_groups[0]["lr"])
    for a, b in zip(restored.model.parameters(), state.model.parameters(), strict=True):
        assert torch.equal(a, b)
    batch = collate([record(6, 6, 9)], "cpu")
    assert learn_step(restored, batch, CONFIG) == learn_step(state, batch, CONFIG)
