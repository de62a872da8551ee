"""Progress on the terminal: a live ``rich`` table when stdout is a terminal, else a plain line every
few seconds (CI logs, pipes)."""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from impala.local.status import Snapshot


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


class Display:
    """Shows snapshots; ``note`` prints an event line (restarts, stop reason) above the table."""

    def __init__(self, console: Console, title: str, live: bool, plain_interval_s: float = 5.0) -> None:
        self.console = console
        self.title = title
        self.plain_interval_s = plain_interval_s
        self._last_plain = -math.inf
        self._live = Live(console=console, refresh_per_second=4, transient=False) if live else None

    def __enter__(self) -> Display:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def show(self, snap: Snapshot, restarts: int, target: float | None) -> None:
        if self._live is not None:
            self._live.update(self._table(snap, restarts, target))
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_interval_s:
            self._last_plain = now
            self.console.print(self.line(snap, restarts), highlight=False)

    @staticmethod
    def line(snap: Snapshot, restarts: int) -> str:
        """The plain one-line summary."""
        return (
            f"t={snap.time_s:7.1f}s env_steps={snap.env_steps} steps/s={snap.env_steps_per_second:.0f} "
            f"learner_step={snap.learner_step} return={_fmt(snap.episode_return_mean, '.1f')} "
            f"episodes={snap.episodes} lag={_fmt(snap.policy_lag_mean, '.2f')} buffer={snap.buffer_depth} "
            f"clients={snap.clients} restarts={restarts}"
        )

    def _table(self, snap: Snapshot, restarts: int, target: float | None) -> Table:
        table = Table(title=self.title, show_header=False, min_width=48)
        table.add_column(style="bold")
        table.add_column(justify="right")
        goal = f" / {target:g}" if target is not None else ""
        rows = [
            ("wall time", f"{snap.time_s:.0f} s"),
            ("env steps", f"{snap.env_steps:,}"),
            ("env steps/s", f"{snap.env_steps_per_second:,.0f}"),
            ("learner steps", f"{snap.learner_step:,}"),
            ("mean return (last 100)", f"{_fmt(snap.episode_return_mean, '.1f')}{goal}"),
            ("episodes", f"{snap.episodes:,}"),
            ("policy lag (versions)", _fmt(snap.policy_lag_mean, ".2f")),
            ("buffer depth (rollouts)", f"{snap.buffer_depth:,}"),
            ("clients connected", f"{snap.clients}"),
            ("service restarts", f"{restarts}"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        return table
