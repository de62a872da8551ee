"""What a run leaves for researchers: ``metrics.csv`` (one row per second), ``learning_curve.png``
and, on request, TensorBoard event files."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from impala.local.status import Snapshot


class MetricsCsv:
    """Appends one row per snapshot and flushes it, so a crashed run still has its curve.

    On resume the file is appended to and ``time_offset_s`` (the last row's time) lets the new
    session's clock continue where the old one stopped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.time_offset_s = 0.0
        existing = read_metrics(path) if path.is_file() else []
        if existing:
            self.time_offset_s = float(existing[-1]["time_s"])
        self._file: TextIO = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=Snapshot.columns())
        if not existing:
            self._writer.writeheader()
            self._file.flush()

    def write(self, snapshot: Snapshot) -> None:
        self._writer.writerow({k: _cell(v) for k, v in snapshot.row().items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _cell(value: float | int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as floats (empty cells become NaN)."""
    with path.open(newline="") as handle:
        return [{k: float(v) if v else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_learning_curve(csv_path: Path, png_path: Path, title: str, target: float | None = None) -> bool:
    """Mean return against env steps and against wall time; False when there is nothing to plot yet."""
    return plot_learning_curves({"": csv_path}, png_path, title, target)


def plot_learning_curves(
    csv_paths: Mapping[str, Path], png_path: Path, title: str, target: float | None = None
) -> bool:
    """One line per ``metrics.csv`` (labelled by its key; one unlabelled run has no legend entry) of the
    mean return against env steps and against wall time; False when there is nothing to plot yet."""
    curves = {
        label: rows
        for label, path in csv_paths.items()
        if (rows := [r for r in read_metrics(path) if not math.isnan(r["episode_return_mean"])])
    }
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, (by_steps, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, rows in curves.items():
        returns = [r["episode_return_mean"] for r in rows]
        by_steps.plot([r["env_steps"] for r in rows], returns, label=label or None)
        by_time.plot([r["time_s"] for r in rows], returns)
    by_steps.set_xlabel("env steps")
    by_steps.set_ylabel("mean return (last 100 episodes)")
    by_time.set_xlabel("wall-clock seconds")
    for axis in (by_steps, by_time):
        axis.grid(alpha=0.3)
        if target is not None:
            axis.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    if target is not None or any(curves):
        by_steps.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)  # a reader never sees half a PNG
    return True


class TensorBoardLog:
    """Scalars under ``run/<column>`` against env steps. Needs the optional ``tensorboard`` package."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer: Any = SummaryWriter(log_dir=str(log_dir))

    def write(self, snapshot: Snapshot) -> None:
        for name, value in snapshot.row().items():
            if name not in ("env_steps", "time_s") and not (isinstance(value, float) and math.isnan(value)):
                self._writer.add_scalar(f"run/{name}", value, global_step=snapshot.env_steps, walltime=None)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def tensorboard_problem() -> str | None:
    """Why TensorBoard logging cannot work here, or None when it can."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        return f"--tensorboard needs the tensorboard package ({err}); install the extra: pip install 'impala-rl[tensorboard]'"
    return None
