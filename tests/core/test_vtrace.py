"""V-trace against the paper: a slow double-sum reference, a hand-computed golden case, splitting at an
episode boundary, and n-step returns on-policy. Provenance: the reference follows the ground truth of
deepmind/scalable_agent ``vtrace_test.py`` (as kept in torchbeast ``tests/vtrace_test.py``), extended
with c̄ and λ."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from impala.core import vtrace

Clip = float | None


def reference(
    log_rhos: np.ndarray,
    discounts: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    bootstrap_value: np.ndarray,
    rho_bar: Clip,
    c_bar: Clip,
    pg_rho_bar: Clip,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Paper eq. 1 as written: v_s = V(x_s) + Σ_{t≥s} (Π_{i=s}^{t-1} γ_i c_i) ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t))."""
    rhos = np.exp(log_rhos)
    clipped = rhos if rho_bar is None else np.minimum(rho_bar, rhos)
    cs = lambda_ * (rhos if c_bar is None else np.minimum(c_bar, rhos))
    values_tp1 = np.concatenate([values[1:], bootstrap_value[None]])
    T = len(values)
    vs = np.zeros_like(values)
    for s in range(T):
        vs[s] = values[s]
        for t in range(s, T):
            weight = np.prod(discounts[s:t] * cs[s:t], axis=0)  # empty product = 1
            vs[s] += weight * clipped[t] * (rewards[t] + discounts[t] * values_tp1[t] - values[t])
    vs_tp1 = np.concatenate([vs[1:], bootstrap_value[None]])
    pg_rhos = rhos if pg_rho_bar is None else np.minimum(pg_rho_bar, rhos)
    return vs, pg_rhos * (rewards + discounts * vs_tp1 - values)


def random_inputs(T: int, B: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "log_rhos": rng.uniform(-2.5, 2.5, (T, B)),  # ρ from ~0.08 to ~12: both sides of every threshold
        "discounts": rng.choice([0.0, 0.9, 0.99], (T, B), p=[0.15, 0.45, 0.4]),
        "rewards": rng.normal(size=(T, B)),
        "values": rng.normal(size=(T, B)),
        "bootstrap_value": rng.normal(size=B),
    }


def run(
    inputs: dict[str, np.ndarray], dtype: torch.dtype = torch.float64, device: str = "cpu", **kwargs: Any
) -> vtrace.VTraceReturns:
    tensors: dict[str, Any] = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in inputs.items()}
    return vtrace.from_importance_weights(**tensors, **kwargs)


CLIPS = [(1.0, 1.0, 1.0), (0.5, 0.8, 0.7), (3.7, 1.0, 2.2), (None, None, None)]


@pytest.mark.parametrize(("T", "B"), [(1, 1), (5, 3), (12, 2)])
@pytest.mark.parametrize(("rho_bar", "c_bar", "pg_rho_bar"), CLIPS)
@pytest.mark.parametrize("lambda_", [1.0, 0.6])
def test_matches_double_sum_reference(
    T: int, B: int, rho_bar: Clip, c_bar: Clip, pg_rho_bar: Clip, lambda_: float
) -> None:
    inputs = random_inputs(T, B, seed=T * 10 + B)
    kwargs: dict[str, Any] = {
        "clip_rho_threshold": rho_bar,
        "clip_c_threshold": c_bar,
        "clip_pg_rho_threshold": pg_rho_bar,
    }
    got = run(inputs, **kwargs, lambda_=lambda_)
    want_vs, want_pg = reference(**inputs, rho_bar=rho_bar, c_bar=c_bar, pg_rho_bar=pg_rho_bar, lambda_=lambda_)
    np.testing.assert_allclose(got.vs.numpy(), want_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got.pg_advantages.numpy(), want_pg, rtol=1e-10, atol=1e-10)


def test_float32_agrees_with_float64_reference() -> None:
    inputs = random_inputs(20, 4)
    got = run(inputs, torch.float32)
    want_vs, want_pg = reference(**inputs, rho_bar=1.0, c_bar=1.0, pg_rho_bar=1.0, lambda_=1.0)
    assert got.vs.dtype == torch.float32
    np.testing.assert_allclose(got.vs.numpy(), want_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.pg_advantages.numpy(), want_pg, rtol=1e-5, atol=1e-5)


GOLDEN = {
    "log_rhos": np.log([[2.0], [0.5]]),  # ρ = 2 (clipped to 1), 0.5
    "discounts": np.array([[0.9], [0.9]]),
    "rewards": np.array([[1.0], [2.0]]),
    "values": np.array([[0.5], [1.0]]),
    "bootstrap_value": np.array([3.0]),
}


@pytest.mark.parametrize(
    ("lambda_", "vs", "pg"),
    [
        # δ0 = 1·(1 + 0.9·1 − 0.5) = 1.4; δ1 = 0.5·(2 + 0.9·3 − 1) = 1.85; v1 = 1 + 1.85 = 2.85;
        # v0 = 0.5 + 1.4 + 0.9·c0·1.85 with c0 = λ·1; pg0 = 1·(1 + 0.9·2.85 − 0.5) = 3.065; pg1 = δ1.
        (1.0, [3.565, 2.85], [3.065, 1.85]),
        (0.5, [2.7325, 2.85], [3.065, 1.85]),
    ],
)
def test_golden_case_computed_by_hand(lambda_: float, vs: list[float], pg: list[float]) -> None:
    got = run(GOLDEN, lambda_=lambda_)
    np.testing.assert_allclose(got.vs.numpy()[:, 0], vs, rtol=1e-12)
    np.testing.assert_allclose(got.pg_advantages.numpy()[:, 0], pg, rtol=1e-12)


@pytest.mark.parametrize("lambda_", [1.0, 0.8])
def test_splitting_at_an_episode_boundary_equals_the_whole(lambda_: float) -> None:
    T, B, k = 10, 3, 4  # the episode ends with transition k (discount 0), the next starts at k+1
    inputs = random_inputs(T, B, seed=7)
    inputs["discounts"] = np.full((T, B), 0.95)
    inputs["discounts"][k] = 0.0
    whole = run(inputs, lambda_=lambda_, clip_rho_threshold=1.5)
    first = {name: array[: k + 1] for name, array in inputs.items() if name != "bootstrap_value"}
    second = {name: array[k + 1 :] for name, array in inputs.items() if name != "bootstrap_value"}
    # Whatever bootstraps the first part is cut by the zero discount: use garbage to prove it.
    head = run({**first, "bootstrap_value": np.full(B, 1e6)}, lambda_=lambda_, clip_rho_threshold=1.5)
    tail = run({**second, "bootstrap_value": inputs["bootstrap_value"]}, lambda_=lambda_, clip_rho_threshold=1.5)
    np.testing.assert_allclose(torch.cat([head.vs, tail.vs]).numpy(), whole.vs.numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        torch.cat([head.pg_advantages, tail.pg_advantages]).numpy(), whole.pg_advantages.numpy(), rtol=1e-12
    )


@pytest.mark.parametrize("clip", [1.0, None])
def test_on_policy_without_clipping_gives_n_step_returns(clip: Clip) -> None:
    T, B = 7, 4
    inputs = random_inputs(T, B, seed=3)
    inputs["log_rhos"] = np.zeros((T, B))  # π = μ
    got = run(inputs, clip_rho_threshold=clip, clip_c_threshold=clip, clip_pg_rho_threshold=clip)
    gamma, r = inputs["discounts"], inputs["rewards"]
    for s in range(T):
        # v_s = Σ_{t=s}^{T-1} (Π_{i=s}^{t-1} γ_i) r_t + (Π_{i=s}^{T-1} γ_i) V(x_T)
        want = sum(np.prod(gamma[s:t], axis=0) * r[t] for t in range(s, T))
        want = want + np.prod(gamma[s:], axis=0) * inputs["bootstrap_value"]
        np.testing.assert_allclose(got.vs.numpy()[s], want, rtol=1e-10, atol=1e-12)


def test_from_logits_equals_importance_weights_of_the_two_policies() -> None:
    T, B, A = 6, 2, 4
    rng = np.random.default_rng(5)
    behaviour, target = rng.normal(size=(T, B, A)), rng.normal(size=(T, B, A))
    actions = rng.integers(0, A, (T, B))
    inputs = random_inputs(T, B)
    del inputs["log_rhos"]

    def log_softmax(x: np.ndarray) -> np.ndarray:
        return np.asarray(x - np.log(np.exp(x).sum(-1, keepdims=True)))

    pick = np.take_along_axis
    log_pi = pick(log_softmax(target), actions[..., None], -1)[..., 0]
    log_mu = pick(log_softmax(behaviour), actions[..., None], -1)[..., 0]
    as_tensors: dict[str, Any] = {k: torch.tensor(v) for k, v in inputs.items()}
    got = vtrace.from_logits(torch.tensor(behaviour), torch.tensor(target), torch.tensor(actions), **as_tensors)
    want = run({**inputs, "log_rhos": log_pi - log_mu})
    np.testing.assert_allclose(got.target_action_log_probs.numpy(), log_pi, rtol=1e-12)
    np.testing.assert_allclose(got.behaviour_action_log_probs.numpy(), log_mu, rtol=1e-12)
    np.testing.assert_allclose(got.log_rhos.numpy(), log_pi - log_mu, rtol=1e-12)
    np.testing.assert_allclose(got.vs.numpy(), want.vs.numpy(), rtol=1e-12)
    np.testing.assert_allclose(got.pg_advantages.numpy(), want.pg_advantages.numpy(), rtol=1e-12)


def test_outputs_carry_no_gradient_and_bad_shapes_are_refused() -> None:
    inputs: dict[str, Any] = {k: torch.tensor(v, requires_grad=True) for k, v in random_inputs(4, 2).items()}
    out = vtrace.from_importance_weights(**inputs)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad
    with pytest.raises(ValueError, match="bootstrap_value must drop the time axis"):
        vtrace.from_importance_weights(**{**inputs, "bootstrap_value": inputs["values"]})
    assert math.isfinite(float(out.vs.sum()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    inputs = random_inputs(30, 8)
    cpu = run(inputs, torch.float32)
    cuda = run(inputs, torch.float32, "cuda")
    assert cuda.vs.device.type == "cuda"
    torch.testing.assert_close(cuda.vs.cpu(), cpu.vs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cuda.pg_advantages.cpu(), cpu.pg_advantages, rtol=1e-5, atol=1e-5)
