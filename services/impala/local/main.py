"""``impala local``'s run: resolve the options, run one session, turn its end into the exit code.

Exit codes: 0 target reached (or, with ``--no-target``, any orderly end), 1 budget spent before the
target or the stack could not start, 2 bad options, 130 interrupted before the target.
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from impala.local.session import Session
from impala.local.stack import LocalOptions, OptionsError, resolve


def exit_code(reason: str, reached: bool, use_target: bool) -> int:
    """0 when the target was reached, or for any orderly end without a target; see the module doc."""
    if reached or (not use_target and reason != "failed"):
        return 0
    return 130 if reason == "interrupted" else 1


def run_local(options: LocalOptions) -> int:
    """Run the stack until the target, a budget or a signal; returns the process exit code."""
    errors = Console(stderr=True, soft_wrap=True)
    try:
        resolved = resolve(options)
    except OptionsError as err:
        errors.print(f"[red]impala local: {err}[/red]", highlight=False)
        return 2
    if options.resume is None and (resolved.run_dir / "config.json").exists():
        errors.print(
            f"[red]impala local: {resolved.run_dir} already holds a run; --resume {resolved.run_dir} continues it[/red]",
            highlight=False,
        )
        return 2
    if resolved.target is None and options.use_target:
        Console(soft_wrap=True).print(
            f"impala local: {resolved.env or resolved.options.env_spec} declares no reward threshold, so this run "
            "has no target return "
            "(pass --target-return R for one); it trains until --max-env-steps, --max-seconds or Ctrl-C",
            highlight=False,
        )
    reason, reached = Session(replace(options, env=resolved.env), resolved).run()
    return exit_code(reason, reached, resolved.target is not None)
