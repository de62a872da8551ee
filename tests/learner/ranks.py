"""Code that runs inside learner-rank processes of the distributed tests (spawned, so importable)."""

from __future__ import annotations

import faulthandler
import os
from dataclasses import replace
from pathlib import Path

import torch

from impala.core.batch import collate
from impala.core.learn import LearnConfig, learn_step, make_learner_state
from impala.learner.distributed import Held, RankGroup, World
from tests.core.test_learn import record, spec

CONFIG = LearnConfig(unroll_length=6, batch_size=4, learning_rate=1e-2, total_steps=200, entropy_cost=0.01)
# Losses averaged over the valid steps with Adam (the defaults), or summed with RMSprop (torchbeast's).
CONFIGS = {"mean": CONFIG, "sum": replace(CONFIG, loss_reduction="sum", optimizer="rmsprop", learning_rate=1e-3)}
STEPS = 3
# Valid steps of the four rollouts of each update: the ranks' shares differ (11 vs 6 in the first).
LENGTHS = ((6, 5, 2, 4), (3, 6, 6, 1), (6, 6, 6, 6))


def records(step: int) -> list:  # type: ignore[type-arg]
    return [record(CONFIG.unroll_length, length, seed=10 * step + b) for b, length in enumerate(LENGTHS[step])]


def learn(
    use_lstm: bool, reduction: str, rank: int = 0, size: int = 1, group: RankGroup | None = None
) -> dict[str, object]:
    """STEPS updates of a fresh seeded model on rank ``rank``'s share of each batch."""
    config = CONFIGS[reduction]
    torch.manual_seed(0)
    state = make_learner_state(spec(use_lstm), config)
    share = CONFIG.batch_size // size
    turns = []
    for step in range(STEPS):
        batch = collate(records(step)[rank * share : (rank + 1) * share], "cpu")
        reducer = None
        if group is not None:
            turn = group.agree(stop=False, paused=False, version=0, held=Held(batch.num_steps, batch.episode_returns))
            turns.append((turn.steps, turn.episodes, sorted(turn.returns)))
            reducer = group.reducer(turn)
        learn_step(state, batch, config, reduce_gradients=reducer)
    return {
        "params": [p.detach().clone() for p in state.model.parameters()],
        "optimizer": [
            value.clone()
            for per_param in state.optimizer.state_dict()["state"].values()
            for value in per_param.values()
            if isinstance(value, torch.Tensor) and value.numel() > 1
        ],
        "env_steps": state.env_steps,
        "lr": state.optimizer.param_groups[0]["lr"],
        "turns": turns,
    }


def mean_reduced_gradient(group: RankGroup, rank: int, size: int) -> torch.Tensor:
    """The all-reduced gradient of a loss that is a mean over this rank's valid steps (uneven shares)."""
    torch.manual_seed(1)
    data = torch.randn(10, 3)
    weight = torch.ones(3, requires_grad=True)
    mine = data[:7] if rank == 0 else data[7:]
    turn = group.agree(stop=False, paused=False, version=0, held=Held(len(mine), ()))
    (mine @ weight).pow(2).mean().backward()  # type: ignore[no-untyped-call]
    group.reducer(turn)([weight], len(mine), mean=True)
    assert weight.grad is not None
    return weight.grad


def rank_main(rank: int, size: int, port: int, out: Path, use_lstm: bool, reduction: str) -> None:
    # This rank's stderr (and a Python traceback on SIGABRT/SIGSEGV) goes to a file the test shows on failure.
    log = (out / f"rank{rank}.log").open("w")
    os.dup2(log.fileno(), 2)
    faulthandler.enable(log)
    world = World(rank, size, 0, "127.0.0.1", port)
    group = RankGroup.join(world, backend="gloo", device=torch.device("cpu"), timeout_s=60, rendezvous_timeout_s=60)
    try:
        result = learn(use_lstm, reduction, rank, size, group)
        result["mean_grad"] = mean_reduced_gradient(group, rank, size)
        result["out"] = str(out)
        torch.save(result, out / f"rank{rank}.pt")
    finally:
        group.close()
    # Native threads still running after close would be torn down by the interpreter's exit (an abort).
    threads = [(Path("/proc/self/task") / task / "comm").read_text().strip() for task in os.listdir("/proc/self/task")]
    (out / f"rank{rank}.threads").write_text("\n".join(threads))
