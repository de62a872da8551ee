"""Model shapes for [T, B, ...] and [B, ...], uint8 scaling, LSTM reset at episode starts, fingerprints."""

from __future__ import annotations

import pytest
import torch

from impala.core.models import ModelSpec, build_model, fingerprint, spec_for_env

T, B, A = 3, 2, 5
VECTOR = ModelSpec((4,), "float32", A, "mlp", hidden_size=16)
PIXELS = (4, 84, 84)


def observations(spec: ModelSpec, *lead: int) -> torch.Tensor:
    if spec.observation_dtype == "uint8":
        return torch.randint(0, 256, (*lead, *spec.observation_shape), dtype=torch.uint8)
    return torch.randn(*lead, *spec.observation_shape)


@pytest.mark.parametrize("kind", ["mlp", "shallow", "resnet"])
@pytest.mark.parametrize("use_lstm", [False, True])
def test_shapes_for_unrolls_and_single_steps(kind: str, use_lstm: bool) -> None:
    # The ResNet is the slow one on CPU: a smaller frame checks the same code path.
    spec = VECTOR if kind == "mlp" else ModelSpec(PIXELS if kind == "shallow" else (4, 48, 48), "uint8", A, kind)
    spec = ModelSpec(spec.observation_shape, spec.observation_dtype, A, kind, 16, use_lstm)
    model = build_model(spec)
    state = model.initial_state(B)
    assert [tuple(s.shape) for s in state] == ([(B, 16), (B, 16)] if use_lstm else [])
    out = model(observations(spec, T, B), torch.zeros(T, B, dtype=torch.bool), state)
    assert out.logits.shape == (T, B, A) and out.baseline.shape == (T, B)
    assert [tuple(s.shape) for s in out.core_state] == [tuple(s.shape) for s in state]
    step = model.act(observations(spec, B), torch.zeros(B, dtype=torch.bool), state)
    assert step.action.shape == (B,) and step.action.dtype == torch.int64
    assert step.logits.shape == (B, A) and step.baseline.shape == (B,)
    assert ((step.action >= 0) & (step.action < A)).all()


def test_uint8_observations_are_scaled_inside_the_model() -> None:
    model = build_model(ModelSpec((4, 36, 36), "uint8", A, "shallow"))
    pixels = torch.randint(0, 256, (T, B, 4, 36, 36), dtype=torch.uint8)
    done = torch.zeros(T, B, dtype=torch.bool)
    torch.testing.assert_close(model(pixels, done).logits, model(pixels.float() / 255.0, done).logits)


def test_lstm_state_is_zeroed_where_an_episode_starts() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec((4,), "float32", A, "mlp", hidden_size=8, use_lstm=True))
    obs, k = torch.randn(6, B, 4), 3
    done = torch.zeros(6, B, dtype=torch.bool)
    done[k, 0] = True  # column 0: a new episode starts at step k
    state = tuple(torch.randn(B, 8) for _ in range(2))  # a non-zero carried-in state
    whole = model(obs, done, state)
    fresh = model(obs[k:, :1], torch.zeros(6 - k, 1, dtype=torch.bool), model.initial_state(1))
    torch.testing.assert_close(whole.logits[k:, 0], fresh.logits[:, 0])
    torch.testing.assert_close(whole.baseline[k:, 0], fresh.baseline[:, 0])
    # Column 1 did not restart: its outputs after k still depend on the carried-in state.
    no_memory = model(obs[:, 1:], torch.zeros(6, 1, dtype=torch.bool), model.initial_state(1))
    assert not torch.allclose(whole.logits[k:, 1], no_memory.logits[k:, 0])
    # act() follows the same rule for a single step.
    reset = model.act(obs[0], torch.ones(B, dtype=torch.bool), state)
    zero = model.act(obs[0], torch.zeros(B, dtype=torch.bool), model.initial_state(B))
    torch.testing.assert_close(reset.logits, zero.logits)


def test_greedy_and_seeded_sampling() -> None:
    model = build_model(VECTOR)
    obs, done = torch.randn(64, 4), torch.zeros(64, dtype=torch.bool)
    greedy = model.act(obs, done, greedy=True)
    assert torch.equal(greedy.action, greedy.logits.argmax(-1))
    first = model.act(obs, done, generator=torch.Generator().manual_seed(3)).action
    again = model.act(obs, done, generator=torch.Generator().manual_seed(3)).action
    assert torch.equal(first, again)


def test_fingerprint_depends_on_architecture_not_values() -> None:
    torch.manual_seed(0)
    one, two = build_model(VECTOR), build_model(VECTOR)
    assert not torch.equal(one.policy.weight, two.policy.weight)
    assert fingerprint(one) == fingerprint(two)
    assert len(fingerprint(one)) == 64 and int(fingerprint(one), 16) >= 0
    others = [ModelSpec((4,), "float32", A, "mlp", 32), ModelSpec((4,), "float32", A, "mlp", 16, True)]
    assert len({fingerprint(one), *(fingerprint(build_model(s)) for s in others)}) == 3


def test_spec_for_env_reads_the_spaces() -> None:
    assert spec_for_env("CartPole-v1") == ModelSpec((4,), "float32", 2, "mlp", 64, False)
    assert spec_for_env("CartPole-v1", hidden_size=32, use_lstm=True).use_lstm
    with pytest.raises(ValueError, match="needs \\[C, H, W\\] observations"):
        build_model(spec_for_env("CartPole-v1", model="shallow"))
