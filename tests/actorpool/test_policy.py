"""The pool acts with the model's TorchScript trace, sampling inside it (Gumbel-max): the same logits,
values and state as ``Policy.act``, actions that are the argmax of the logits plus the pool's Gumbel
noise and are distributed as softmax(logits), episode starts resetting the core state, and weight swaps
reaching the trace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala.actorpool.policy import PolicyHolder
from impala.core.models import ModelSpec, build_model

SPECS = {
    "mlp": ModelSpec(observation_shape=(4,), observation_dtype="float32", num_actions=3, kind="mlp"),
    "lstm": ModelSpec(observation_shape=(4,), observation_dtype="float32", num_actions=3, kind="mlp", use_lstm=True),
    "shallow": ModelSpec(observation_shape=(4, 84, 84), observation_dtype="uint8", num_actions=6, kind="shallow"),
}


def observations(spec: ModelSpec, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((rows, *spec.observation_shape)) * 255).astype(spec.observation_dtype)


@pytest.mark.parametrize("kind", list(SPECS))
@pytest.mark.parametrize("rows", [1, 7])
def test_traced_acting_matches_the_eager_model(kind: str, rows: int) -> None:
    spec = SPECS[kind]
    torch.manual_seed(0)
    model = build_model(spec)
    holder = PolicyHolder(model, seed=5)
    obs = observations(spec, rows, seed=1)
    done = np.zeros(rows, dtype=np.bool_)
    done[0] = True  # an episode starts in row 0: its state must be reset
    state = tuple(np.random.default_rng(2).random((rows, *shape)).astype(np.float32) for shape in holder.state_shapes)

    result, swapped = holder.act(obs, done, state)

    with torch.no_grad():
        eager = model.act(
            torch.from_numpy(obs),
            torch.from_numpy(done),
            tuple(torch.from_numpy(s) for s in state),
        )
    gumbel = np.random.default_rng(5).gumbel(size=(rows, spec.num_actions)).astype(np.float32)
    assert not swapped
    np.testing.assert_allclose(result.logits, eager.logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.baseline, eager.baseline.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.action, (eager.logits.numpy() + gumbel).argmax(-1))
    assert len(result.state) == len(eager.core_state) == (2 if spec.use_lstm else 0)
    for ours, theirs in zip(result.state, eager.core_state, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_offered_weights_reach_the_traced_forward_pass() -> None:
    spec = SPECS["mlp"]
    torch.manual_seed(0)
    holder = PolicyHolder(build_model(spec), version=1)
    obs, done = observations(spec, 3, seed=1), np.zeros(3, dtype=np.bool_)
    before, _ = holder.act(obs, done, ())
    torch.manual_seed(1)
    newer = build_model(spec)
    holder.offer(2, {k: v.clone() for k, v in newer.state_dict().items()})

    after, swapped = holder.act(obs, done, ())

    assert swapped and after.version == 2 and before.version == 1
    with torch.no_grad():
        expected = newer.act(torch.from_numpy(obs), torch.from_numpy(done))
    np.testing.assert_allclose(after.logits, expected.logits.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(after.logits, before.logits)


def test_sampled_actions_follow_the_softmax_of_the_logits() -> None:
    spec = SPECS["mlp"]
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():  # logits far from uniform, so a wrong sampler shows
        model.policy.weight.zero_()
        model.policy.bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
    holder = PolicyHolder(model, seed=11)
    rows = 40_000
    obs = np.zeros((rows, *spec.observation_shape), dtype=np.float32)  # one state: one distribution

    result, _ = holder.act(obs, np.zeros(rows, dtype=np.bool_), ())

    probabilities = torch.softmax(torch.from_numpy(result.logits[0]), -1).numpy()
    frequencies = np.bincount(result.action, minlength=spec.num_actions) / rows
    # 40k draws: the standard error of each frequency is below 0.0025; 4 of them is the tolerance.
    np.testing.assert_allclose(frequencies, probabilities, atol=0.01)
    assert probabilities.max() > 0.7
