"""Loss values and gradients against NumPy; masked steps change neither."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala.core import distributions
from impala.core.env_spec import ActionSpace
from impala.core.losses import baseline_loss, entropy_loss, policy_gradient_loss

T, B, A = 5, 3, 4


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return np.asarray(e / e.sum(-1, keepdims=True))


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((T, B), dtype=bool)
    mask[3:, 1] = False  # a partial rollout in column 1
    mask[1:, 2] = False
    return {
        "logits": rng.normal(size=(T, B, A)),
        "actions": rng.integers(0, A, (T, B)),
        "advantages": rng.normal(size=(T, B)),
        "values": rng.normal(size=(T, B)),
        "targets": rng.normal(size=(T, B)),
        "mask": mask,
    }


def log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return distributions.log_prob(ActionSpace.discrete(A), logits, actions)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return distributions.entropy(ActionSpace.discrete(A), logits)


def leaf(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def grad(x: torch.Tensor) -> np.ndarray:
    assert x.grad is not None
    return x.grad.numpy()


def test_policy_gradient_loss_and_gradient_match_numpy(data: dict[str, np.ndarray]) -> None:
    logits, advantages = leaf(data["logits"]), leaf(data["advantages"])
    loss = policy_gradient_loss(log_prob(logits, torch.tensor(data["actions"])), advantages, torch.tensor(data["mask"]))
    loss.backward()  # type: ignore[no-untyped-call]
    p, m, adv = softmax(data["logits"]), data["mask"], data["advantages"]
    onehot = np.eye(A)[data["actions"]]
    log_pa = np.log((p * onehot).sum(-1))
    np.testing.assert_allclose(loss.item(), (-log_pa * adv * m).sum(), rtol=1e-12)
    # d(−log p_a)/dz = p − onehot(a)
    np.testing.assert_allclose(grad(logits), (m * adv)[..., None] * (p - onehot), rtol=1e-10, atol=1e-12)
    assert advantages.grad is None  # advantages are constants


def test_baseline_loss_and_gradient_match_numpy(data: dict[str, np.ndarray]) -> None:
    values, targets = leaf(data["values"]), leaf(data["targets"])
    loss = baseline_loss(values, targets, torch.tensor(data["mask"]))
    loss.backward()  # type: ignore[no-untyped-call]
    diff, m = data["targets"] - data["values"], data["mask"]
    np.testing.assert_allclose(loss.item(), 0.5 * (diff**2 * m).sum(), rtol=1e-12)
    np.testing.assert_allclose(grad(values), -diff * m, rtol=1e-12)
    assert targets.grad is None


def test_entropy_loss_and_gradient_match_numpy(data: dict[str, np.ndarray]) -> None:
    logits = leaf(data["logits"])
    loss = entropy_loss(entropy(logits), torch.tensor(data["mask"]))
    loss.backward()  # type: ignore[no-untyped-call]
    p, m = softmax(data["logits"]), data["mask"]
    neg_entropy = (p * np.log(p)).sum(-1)
    np.testing.assert_allclose(loss.item(), (neg_entropy * m).sum(), rtol=1e-12)
    # d/dz_j Σ_a p_a log p_a = p_j (log p_j − Σ_a p_a log p_a)
    want = p * (np.log(p) - neg_entropy[..., None]) * m[..., None]
    np.testing.assert_allclose(grad(logits), want, rtol=1e-10, atol=1e-12)


def test_masked_steps_change_neither_value_nor_gradient(data: dict[str, np.ndarray]) -> None:
    """Garbage (huge, even infinite) values on padded steps leave every loss and every valid gradient alone."""
    mask = torch.tensor(data["mask"])
    garbage = {k: v.copy() for k, v in data.items()}
    pad = ~data["mask"]
    garbage["logits"][pad] = 1e4 * np.sign(np.random.default_rng(1).normal(size=(int(pad.sum()), A)))
    garbage["advantages"][pad] = np.inf
    garbage["values"][pad] = -1e6
    garbage["targets"][pad] = np.inf
    garbage["actions"][pad] = A - 1

    def losses_and_grads(d: dict[str, np.ndarray]) -> tuple[list[float], list[np.ndarray]]:
        logits, values = leaf(d["logits"]), leaf(d["values"])
        actions, advantages, targets = (
            torch.tensor(d["actions"]),
            torch.tensor(d["advantages"]),
            torch.tensor(d["targets"]),
        )
        terms = [
            policy_gradient_loss(log_prob(logits, actions), advantages, mask),
            baseline_loss(values, targets, mask),
            entropy_loss(entropy(logits), mask),
        ]
        torch.stack(terms).sum().backward()  # type: ignore[no-untyped-call]
        assert logits.grad is not None and values.grad is not None
        return [t.item() for t in terms], [logits.grad.numpy(), values.grad.numpy()]

    clean_losses, clean_grads = losses_and_grads(data)
    dirty_losses, dirty_grads = losses_and_grads(garbage)
    np.testing.assert_allclose(dirty_losses, clean_losses, rtol=1e-12)
    for clean, dirty in zip(clean_grads, dirty_grads, strict=True):
        np.testing.assert_allclose(dirty, clean, rtol=1e-12)
        assert np.all(dirty[pad] == 0.0)
