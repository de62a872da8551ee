"""Learner ranks on torch.distributed (gloo): one update on 2 ranks with B/2 rollouts each equals the
update of 1 rank with all B; counters, the schedule and episodes count the global batch; the world comes
from the torchrun variables."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch

from impala.core.redis_server import free_port
from impala.learner.distributed import World, WorldError
from impala.learner.main import consumer_name
from impala.learner.settings import LearnerSettings
from tests.learner import ranks


def run_ranks(tmp_path: Path, use_lstm: bool, reduction: str, size: int = 2) -> list[dict[str, object]]:
    context = multiprocessing.get_context("spawn")
    port = free_port("127.0.0.1")
    procs = [
        context.Process(target=ranks.rank_main, args=(rank, size, port, tmp_path, use_lstm, reduction))
        for rank in range(size)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(180)
    for rank, proc in enumerate(procs):
        log = tmp_path / f"rank{rank}.log"
        said = log.read_text()[-4000:] if log.exists() else "(no log)"
        assert proc.exitcode == 0, f"rank {rank} exited with {proc.exitcode}; its stderr:\n{said}"
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(size)]


@pytest.fixture(
    scope="module", params=[(False, "mean"), (True, "mean"), (False, "sum")], ids=["mlp-mean", "lstm-mean", "mlp-sum"]
)
def two_ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[bool, str, list]:  # type: ignore[type-arg]
    """One spawned world of two gloo ranks per model and loss reduction, shared by this module's tests."""
    use_lstm, reduction = request.param
    return use_lstm, reduction, run_ranks(tmp_path_factory.mktemp("ranks"), use_lstm, reduction)


@pytest.mark.slow
def test_two_gloo_ranks_with_half_batches_equal_one_rank_with_the_whole(two_ranks: tuple[bool, str, list]) -> None:  # type: ignore[type-arg]
    use_lstm, reduction, (rank0, rank1) = two_ranks
    alone = ranks.learn(use_lstm, reduction)
    for got in (rank0, rank1):
        for p_alone, p_ranks in zip(alone["params"], got["params"], strict=True):  # type: ignore[call-overload]
            torch.testing.assert_close(p_ranks, p_alone, rtol=1e-5, atol=1e-6)
        assert alone["optimizer"]  # type: ignore[truthy-bool]
        for s_alone, s_ranks in zip(alone["optimizer"], got["optimizer"], strict=True):  # type: ignore[call-overload]
            torch.testing.assert_close(s_ranks, s_alone, rtol=1e-4, atol=1e-8)
        # Counters and the learning-rate schedule run on global env steps.
        assert got["env_steps"] == alone["env_steps"] == sum(sum(lengths) for lengths in ranks.LENGTHS)
        assert got["lr"] == pytest.approx(alone["lr"])
    # Both ranks took bit-identical steps (the all-reduce hands every rank the same sum).
    for a, b in zip(rank0["params"], rank1["params"], strict=True):  # type: ignore[call-overload]
        assert torch.equal(a, b)
    first_steps, episodes, returns = rank0["turns"][0]  # type: ignore[index]
    assert first_steps == sum(ranks.LENGTHS[0]) and episodes == 4
    assert returns == [0.0, 1.0, 2.0, 3.0]  # every rank's episodes, gathered


@pytest.mark.slow
def test_a_mean_reduced_loss_is_averaged_by_valid_steps(two_ranks: tuple[bool, str, list]) -> None:  # type: ignore[type-arg]
    *_, (rank0, rank1) = two_ranks
    torch.manual_seed(1)
    data = torch.randn(10, 3)
    weight = torch.ones(3, requires_grad=True)
    (data @ weight).pow(2).mean().backward()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(rank0["mean_grad"], weight.grad)
    torch.testing.assert_close(rank1["mean_grad"], weight.grad)


@pytest.mark.slow
def test_a_rank_leaves_no_process_group_threads_behind(two_ranks: tuple[bool, str, list]) -> None:  # type: ignore[type-arg]
    """After ``RankGroup.close`` no gloo or store thread runs on (an exit would abort on them)."""
    run_dir = Path(two_ranks[2][0]["out"])  # type: ignore[index]
    for rank in (0, 1):
        threads = (run_dir / f"rank{rank}.threads").read_text().split()
        assert not [name for name in threads if name.startswith(("gloo", "pt_gloo", "pt_tcpstore"))], threads


def test_world_comes_from_the_torchrun_variables() -> None:
    assert World.from_environ({}) == World()
    assert not World.from_environ({"WORLD_SIZE": "1", "RANK": "0"}).distributed
    world = World.from_environ(
        {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "learner-0.learner", "MASTER_PORT": "29500"}
    )
    assert world == World(3, 4, 1, "learner-0.learner", 29500)
    assert world.distributed and not world.primary


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "needs RANK"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "RANK must be in"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "a", "MASTER_PORT": "70000"}, "MASTER_PORT"),
    ],
)
def test_an_impossible_world_is_refused_by_name(environ: dict[str, str], message: str) -> None:
    with pytest.raises(WorldError, match=message):
        World.from_environ(environ)


def test_each_rank_reads_under_its_own_consumer_name() -> None:
    settings = LearnerSettings(consumer="")
    assert consumer_name(settings, World(1, 2)) == f"{consumer_name(settings)}-r1"
    assert consumer_name(LearnerSettings(consumer="pod"), World(0, 2)) == "pod-r0"
    assert consumer_name(LearnerSettings(consumer="pod"), World()) == "pod"  # alone: the name of before
