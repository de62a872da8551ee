"""``impala eval``, ``impala export`` and ``impala bench``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer

Bench = Literal["all", "ingress", "buffer", "learner", "weights", "e2e", "suite"]


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def evaluate(
        checkpoint: Annotated[Path, typer.Option(help="Checkpoint file (runs/<name>/checkpoints/ckpt-*.pt).")],
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
        checkpoint: Annotated[Path, typer.Option(help="Checkpoint file (runs/<name>/checkpoints/ckpt-*.pt).")],
        out: Annotated[Path, typer.Option(help="TorchScript file to write (its directory must exist).")] = Path(
            "policy.pt"
        ),
    ) -> None:
        """Write a TorchScript policy that runs without impala installed."""
        from impala.tools.export import export_checkpoint

        raise typer.Exit(export_checkpoint(checkpoint, out))

    @app.command("bench")
    def bench(
        which: Annotated[Bench, typer.Argument(case_sensitive=False, help="Which benchmark.")] = "all",
        seconds: Annotated[float, typer.Option(min=0.1, help="Measuring time per figure.")] = 3.0,
        out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("bench/results/latest.json"),
        ranks: Annotated[
            str,
            typer.Option(
                help="learner only: learner samples/s of torch.distributed worlds of these sizes, e.g. 1,2 "
                "(each next to the first), instead of the single-learner figures (default: none)."
            ),
        ] = "",
        env: Annotated[
            str | None, typer.Option(help="suite only: the Gymnasium env id to learn (impala local --env).")
        ] = None,
        seeds: Annotated[int, typer.Option(min=1, help="suite only: seeds 0..N-1, one impala local each.")] = 3,
        max_env_steps: Annotated[
            int | None,
            typer.Option(min=1, help="suite only: env-step budget per seed (default: the published number's budget)."),
        ] = None,
        suite_dir: Annotated[
            Path | None,
            typer.Option(help="suite only: where the runs and results.md go (default runs/suite/<env>-<time>)."),
        ] = None,
        local_args: Annotated[
            str, typer.Option(help="suite only: more impala local flags, e.g. '--use-lstm' (default: none).")
        ] = "",
    ) -> None:
        """Benchmarks, each next to a bare baseline measured in the same run, printed as ratios; ``suite``
        (not part of ``all``): learning results through the whole stack, one impala local per seed."""
        if which == "suite":
            if env is None:
                raise typer.BadParameter("impala bench suite needs --env ID")
            from impala.tools.bench.suite import run_suite

            raise typer.Exit(run_suite(env, seeds, max_env_steps, suite_dir, shlex.split(local_args)))
        if env is not None:
            raise typer.BadParameter("--env goes with the results suite: impala bench suite --env ID")
        sizes = parse_ranks(ranks)
        if sizes and which != "learner":
            raise typer.BadParameter("--ranks goes with the learner benchmark: impala bench learner --ranks 1,2")
        from impala.tools.bench import run_benchmarks

        raise typer.Exit(run_benchmarks(which, seconds=seconds, out=out, ranks=sizes))


def parse_ranks(text: str) -> tuple[int, ...]:
    """``"1,2"`` -> (1, 2); a clear error for anything else."""
    if not text.strip():
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--ranks takes world sizes separated by commas, e.g. 1,2; got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise typer.BadParameter(f"--ranks: every world size must be >= 1, got {text!r}")
    return sizes
