"""Periodic evaluation of the learner's policy in a child process (ADR 0020).

Every ``eval_every_updates`` updates the loop hands a CPU copy of the weights to ``Evaluator.submit``;
a child process plays ``episodes`` episodes of the run's Gymnasium env with greedy actions, then as
many with sampled ones (same seeds each time, apart from the training envs'), keeps ``best.pt`` by the
sampled mean (``impala.learner.keep_best``) and sends back an ``EvalReport``. The loop collects
reports with ``poll`` between steps, so learning never waits for an episode.

Why a process and not a thread: an episode is a Python loop of env steps and batch-one forwards that
holds the GIL most of the time; on a thread it would stall the training step's Python between its
torch kernels. The child runs at a lower CPU priority (``nice``), so on a machine the learner shares
with its actors evaluation takes what learning leaves. It starts at the first evaluation (short runs
never pay its start-up), and one evaluation runs at a time: an evaluation due while the previous one
still runs is skipped and counted.

Messages over one pipe, parent -> child: ``("eval", EvalRequest)``, ``("stop",)``; child -> parent:
``("report", EvalReport)``, ``("error", traceback)``. The child exits on ``stop`` and when the parent's
end closes.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from impala.core import logs
from impala.core.envs import make_env
from impala.core.evaluation import run_episodes
from impala.core.models import ModelSpec, Policy, build_model
from impala.learner.keep_best import KeepBest

log = logging.getLogger(__name__)

_NICE = 10  # evaluation yields the CPU to learning and acting
_STOP_S = 5.0


@dataclass(frozen=True)
class EvalConfig:
    """What the child needs: the env, how many episodes, and what goes into ``best.pt``."""

    env_id: str
    episodes: int
    seed: int
    spec: ModelSpec
    checkpoint_dir: Path
    config: dict[str, Any]  # the run's public settings, stored in best.pt
    log_level: str = "INFO"
    log_format: str = "json"


@dataclass(frozen=True)
class EvalRequest:
    """Weights to evaluate and the counters they belong to."""

    weights: dict[str, torch.Tensor]
    policy_version: int
    learner_steps: int
    env_steps: int


@dataclass(frozen=True)
class EvalReport:
    """Mean returns and episode lengths of one evaluation, and whether ``best.pt`` now holds its weights."""

    policy_version: int
    learner_steps: int
    env_steps: int
    greedy_return: float
    sampled_return: float
    greedy_length: float
    sampled_length: float
    best: bool
    best_return: float
    seconds: float


class EvalError(RuntimeError):
    """The evaluation child failed; the message holds its traceback."""


class Evaluator:
    """The parent's end: start the child on first use, submit weights, poll reports, stop."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None  # multiprocessing's SpawnProcess (untyped)
        self._conn: Connection | None = None
        self.busy = False

    def submit(self, request: EvalRequest) -> bool:
        """Start evaluating ``request``; False (nothing sent) while the previous evaluation runs."""
        if self.busy:
            return False
        if self._conn is None:
            self._start()
        assert self._conn is not None
        self._conn.send(("eval", request))
        self.busy = True
        return True

    def poll(self) -> EvalReport | None:
        """The finished evaluation's report, or None; ``EvalError`` when the child failed or died (the
        next ``submit`` starts a fresh one)."""
        if self._conn is None or not self._conn.poll():
            return None
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            message = ("error", "the evaluation process exited")
        self.busy = False
        if message[0] == "report":
            report: EvalReport = message[1]
            return report
        self.stop()
        raise EvalError(str(message[1]))

    def _start(self) -> None:
        parent, child = self._context.Pipe(duplex=True)
        self._process = self._context.Process(target=serve, args=(child, self.config), name="learner-eval", daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        log.info("evaluation process started", extra={"pid": self._process.pid, "env": self.config.env_id})

    def stop(self, timeout_s: float = _STOP_S) -> None:
        """Ask the child to exit (it finishes no running evaluation); kill it after ``timeout_s``."""
        if self._conn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop",))
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()
        self._conn, self._process, self.busy = None, None, False


def evaluate(config: EvalConfig, request: EvalRequest, model: Policy, keeper: KeepBest) -> EvalReport:
    """One evaluation in this process: greedy then sampled episodes, then keep-best by the sampled mean."""
    started = time.monotonic()
    model.load_state_dict(request.weights)
    env = make_env(config.env_id)
    try:
        greedy = run_episodes(model, env, config.episodes, greedy=True, seed=config.seed)
        sampled = run_episodes(model, env, config.episodes, greedy=False, seed=config.seed)
    finally:
        env.close()
    payload = {
        "model": request.weights,
        "model_spec": config.spec.to_dict(),
        "config": config.config,
        "policy_version": request.policy_version,
        "learner_steps": request.learner_steps,
        "env_steps": request.env_steps,
        "eval": {"greedy": greedy.returns, "sampled": sampled.returns, "episodes": config.episodes},
    }
    best = keeper.offer(sampled.mean, payload)
    return EvalReport(
        policy_version=request.policy_version,
        learner_steps=request.learner_steps,
        env_steps=request.env_steps,
        greedy_return=greedy.mean,
        sampled_return=sampled.mean,
        greedy_length=greedy.mean_length,
        sampled_length=sampled.mean_length,
        best=best,
        best_return=keeper.score if keeper.score is not None else sampled.mean,
        seconds=time.monotonic() - started,
    )


def serve(conn: Connection, config: EvalConfig) -> None:
    """The child: evaluate each request until ``stop`` or until the parent is gone."""
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    torch.set_num_threads(1)
    logs.configure(config.log_level, config.log_format, [])
    model = build_model(config.spec)
    model.eval()
    keeper = KeepBest(config.checkpoint_dir, "eval_sampled")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message[0] == "stop":
            return
        try:
            conn.send(("report", evaluate(config, message[1], model, keeper)))
        except Exception:
            conn.send(("error", traceback.format_exc()))
            return
