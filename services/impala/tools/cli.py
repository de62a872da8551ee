"""``impala eval``, ``impala export`` and ``impala bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BENCHES = ("all", "ingress", "buffer", "learner", "weights", "e2e")


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def evaluate(
        checkpoint: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Checkpoint file.")],
        env: Annotated[str | None, typer.Option(help="Gymnasium environment id (default: the checkpoint's).")] = None,
        env_spec: Annotated[
            Path | None,
            typer.Option(
                envvar="IMPALA_ENV_SPEC",
                dir_okay=False,
                help="Env spec file; refused unless it matches the checkpoint's spaces (which eval reads).",
            ),
        ] = None,
        episodes: Annotated[int, typer.Option(min=1, help="Episodes to run.")] = 10,
        greedy: Annotated[bool, typer.Option(help="Take the most likely action instead of sampling.")] = False,
        seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 0,
        video_dir: Annotated[Path | None, typer.Option(help="Record videos here (env must render rgb_array).")] = None,
    ) -> None:
        """Run a checkpoint's policy for N episodes and print mean ± std return."""
        from impala.tools.evaluate import evaluate_checkpoint

        raise typer.Exit(
            evaluate_checkpoint(
                checkpoint, env, episodes, env_spec=env_spec, greedy=greedy, seed=seed, video_dir=video_dir
            )
        )

    @app.command("export")
    def export(
        checkpoint: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Checkpoint file.")],
        out: Annotated[Path, typer.Option(help="TorchScript file to write.")] = Path("policy.pt"),
    ) -> None:
        """Write a TorchScript policy that runs without impala installed."""
        from impala.tools.export import export_checkpoint

        raise typer.Exit(export_checkpoint(checkpoint, out))

    @app.command("bench")
    def bench(
        which: Annotated[str, typer.Argument(help=f"One of {', '.join(BENCHES)}.")] = "all",
        seconds: Annotated[float, typer.Option(min=0.1, help="Measuring time per figure.")] = 3.0,
        out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("bench/results/latest.json"),
    ) -> None:
        """Benchmarks, each next to a bare baseline measured in the same run, printed as ratios."""
        if which not in BENCHES:
            raise typer.BadParameter(f"unknown benchmark {which!r}; choose from {', '.join(BENCHES)}")
        from impala.tools.bench import run_benchmarks

        raise typer.Exit(run_benchmarks(which, seconds=seconds, out=out))
