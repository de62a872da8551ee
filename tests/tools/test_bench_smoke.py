"""Every benchmark of ``impala bench`` runs on the real services with a tiny measuring time and returns
its figures, finite and positive, under the expected names. Speed is never asserted (style item 19)."""

from __future__ import annotations

import importlib
import math

import pytest

from impala.tools.bench import buffer, e2e, ingress, learner
from impala.tools.bench.report import BENCHES, Figure

# Figure names (their start: sizes and counts follow) each benchmark must return, in order.
EXPECTED = {
    "ingress": ["ingress cartpole 1 env/msg × 2 streams", "ingress atari 16 env/msg × 2 streams"],
    "buffer": ["buffer cartpole", "buffer atari"],
    "learner": ["learner cartpole T=", "learner cartpole T=", "learner atari T=80 B=8", "learner atari T=80 B=8"],
    "weights": [
        f"weights 6.4 MB → {n} subscriber{'s' if n > 1 else ''}, {what}"
        for n in (1, 4, 16)
        for what in ("fan-out", "publish end to end", "fan-out, gRPC chunks")
    ],
    "e2e": [
        "e2e CartPole-v1 impala local",
        "e2e CartPole-v1 client round trip",
        "e2e CartPole-v1 start-up",
        "e2e CartPole-v1 CPU per env step",
    ],
}


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch) -> None:
    """One round per figure and no CartPole solving: the smoke test checks the plumbing, not the numbers."""
    monkeypatch.setattr(ingress, "CONFIGS", [("cartpole", 1, 2), ("atari", 16, 2)])
    monkeypatch.setattr(buffer, "ROUNDS", 1)
    monkeypatch.setattr(learner, "ROUNDS", 1)
    monkeypatch.setenv(e2e.SEEDS_VARIABLE, "0")


def test_every_registered_benchmark_is_covered() -> None:
    assert set(EXPECTED) == set(BENCHES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_benchmark_returns_finite_figures(name: str) -> None:
    module, function = BENCHES[name].split(":")
    figures = getattr(importlib.import_module(module), function)(0.2)

    assert len(figures) == len(EXPECTED[name])
    for figure, expected in zip(figures, EXPECTED[name], strict=True):
        assert isinstance(figure, Figure)
        assert figure.name.startswith(expected), figure.name
        assert figure.unit and figure.baseline_name
        assert math.isfinite(figure.value) and figure.value > 0, figure
        assert math.isfinite(figure.baseline_value) and figure.baseline_value > 0, figure
        assert math.isfinite(figure.ratio)


@pytest.mark.slow
def test_learner_ranks_benchmark_runs_real_worlds_of_each_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from impala.tools.bench import learner_ranks

    monkeypatch.setattr(learner_ranks, "FILL_ROLLOUTS_PER_S", 2000)
    figures = learner_ranks.bench_learner_ranks(0.5, (1, 2))
    assert [f.name.rsplit(", ", 1)[1] for f in figures] == ["1 rank", "2 ranks"]
    for figure in figures:
        assert figure.unit == "samples/s" and figure.baseline_name == "1 rank"
        assert math.isfinite(figure.value) and figure.value > 0, figure
    assert figures[0].ratio == 1.0


def test_ranks_option_takes_world_sizes() -> None:
    import typer

    from impala.tools.cli import parse_ranks

    assert parse_ranks("1,2") == (1, 2) and parse_ranks("") == ()
    for bad in ("1,two", "0,2"):
        with pytest.raises(typer.BadParameter, match="--ranks"):
            parse_ranks(bad)
