"""One session of the local stack: start every service, supervise, record progress, stop in order.

Start order: redis → weights, control, learner, pools (ready = port open / learner heartbeat) → env
clients → ``endpoints.json``. Stop order: env clients, pools (they ship partial rollouts), learner
(final checkpoint), weights, control, redis.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType

import redis
from pydantic_settings import BaseSettings
from rich.console import Console

from impala.core.logs import SecretMask, TextFormatter, register_secret
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer, RedisServerError, free_port
from impala.local import readiness
from impala.local.display import Display
from impala.local.plan import (
    HOST,
    Plan,
    Topology,
    build_plan,
    child_environment,
    effective_config_line,
    service_argv,
)
from impala.local.prometheus import LocalPrometheus, metrics_urls
from impala.local.recorder import MetricsCsv, TensorBoardLog, plot_learning_curve
from impala.local.rundir import run_name, write_config, write_private, write_private_json
from impala.local.stack import LocalOptions, Resolved
from impala.local.status import Snapshot, read_snapshot, target_reached
from impala.local.supervisor import RestartEvent, Supervisor, spawn

log = logging.getLogger(__name__)

TICK_S = 1.0
PLOT_EVERY_S = 30.0
# Seconds each kind of service gets between SIGTERM and SIGKILL (the learner writes its final checkpoint).
STOP_TIMEOUT_S = {"env": 10.0, "actorpool": 15.0, "learner": 60.0, "weights": 10.0, "control": 15.0, "redis": 10.0}


class Session:
    """Runs the stack for ``resolved``; ``run()`` returns (stop reason, target reached)."""

    def __init__(self, options: LocalOptions, resolved: Resolved) -> None:
        self.options = options
        self.resolved = resolved
        self.run_dir = resolved.run_dir
        self.logs = self.run_dir / "logs"
        self.console = Console(soft_wrap=True)
        self.supervisor = Supervisor()
        self.stop_event = threading.Event()
        self.reason = ""
        self.started = time.monotonic()
        self.title = f"impala local · {resolved.env or resolved.options.env_spec} · {self.run_dir.name}"
        self.plan: Plan | None = None
        self._pids: dict[str, int] = {}
        self._display: Display | None = None
        self.prometheus: LocalPrometheus | None = None

    def run(self) -> tuple[str, bool]:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        handler = _log_to_file(self.logs / "local.log")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        csv = MetricsCsv(self.run_dir / "metrics.csv")
        board = TensorBoardLog(self.run_dir / "tensorboard") if self.options.tensorboard else None
        last, reached = Snapshot(time_s=csv.time_offset_s), False
        try:
            plan = self._start()
            if plan is not None:
                keys, client = RunKeys(plan.run), redis.Redis.from_url(plan.redis_url, socket_timeout=2.0)
                try:
                    last, reached = self._watch(client, keys, csv, board)
                finally:
                    client.close()
        finally:
            # metrics.csv ends with the reading that stopped the run; what the learner does while it
            # stops (its last steps, the final checkpoint) is in logs/learner.log.
            names = list(self.supervisor.children)
            # Prometheus first: it would record the orderly stop as services going down.
            stages = [[n for n in names if n.startswith(prefix)] for prefix in ("prometheus", "env-", "actorpool-")]
            learners = [n for n in names if n.split("-")[0] == "learner"]
            self.supervisor.stop([*stages, learners, ["weights"], ["control"], ["redis"]])
            left = self.supervisor.leftovers()
            if left:
                log.error("processes left behind", extra={"process_groups": left})
                self.note(f"[red]process groups still alive after stop: {left}[/red]")
            csv.close()
            if board is not None:
                board.close()
            plot_learning_curve(csv.path, self.run_dir / "learning_curve.png", self.title, self.resolved.target)
            for sig, old in previous.items():
                signal.signal(sig, old)
            self._summary(last)
            logging.getLogger("impala").removeHandler(handler)
        return self.reason, reached

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.reason = self.reason or "interrupted"
        self.stop_event.set()

    def note(self, message: str) -> None:
        """An event line (above the live table when there is one)."""
        if self._display is not None:
            self._display.note(message)
        else:
            self.console.print(message, highlight=False)

    def _start(self) -> Plan | None:
        """Start everything; None (with ``reason`` set) when stopped or failed before the stack was up."""
        token_dir = (self.run_dir / "secrets").resolve()
        token_dir.mkdir(mode=0o700, exist_ok=True)
        token_files = (token_dir / "ingress.token", token_dir / "control.token", token_dir / "weights.token")
        for path in token_files:
            token = secrets.token_urlsafe(24)
            register_secret(token)  # our own log lines never show them
            write_private(path, token + "\n")
        server = RedisServer(workdir=self.run_dir / "redis", port=free_port(HOST), log_file=self.logs / "redis.log")
        try:
            self.supervisor.start("redis", lambda: _start_redis(server), STOP_TIMEOUT_S["redis"])
        except RedisServerError as err:
            self.reason = "failed"
            self.note(f"[red]cannot start redis-server: {err}[/red]")
            return None
        top = Topology(
            self.resolved.env,
            self.options.clients,
            self.resolved.envs_per_client,
            self.options.pools,
            self.options.seed,
            self.options.learners,
            env_spec=self.resolved.options.env_spec,
        )
        plan = build_plan(
            top,
            run=run_name(self.run_dir),
            redis_url=server.url,
            checkpoint_dir=(self.run_dir / "checkpoints").resolve(),
            token_files=token_files,
            overrides=self.options.overrides,
            saved=self.resolved.saved,
        )
        self.note(effective_config_line(plan.learner))
        services = plan.services()
        write_config(self.run_dir / "config.json", self.resolved.summary(), services)
        for name, settings in services.items():
            if not name.startswith("env-"):
                self._spawn(name, settings, plan.rank_environment(name) if name in plan.learner_names else {})
        waiting = readiness.wait_until_up(plan, self.stop_event, self.options.startup_timeout_s, self._supervise)
        if waiting:
            self.reason = self.reason or "failed"
            if self.reason == "failed":
                self.note(f"[red]not up after {self.options.startup_timeout_s:.0f} s: {', '.join(waiting)}[/red]")
                self.note(f"see the logs in {self.logs}")
            return None
        for name, settings in services.items():
            if name.startswith("env-"):
                self._spawn(name, settings)
        if self.options.prometheus:
            self._start_prometheus(plan, token_files[1])
        self._write_endpoints(plan)
        self._announce(plan)
        self.plan = plan
        return plan

    def _spawn(self, name: str, settings: BaseSettings, environment: dict[str, str] | None = None) -> None:
        kind = name.split("-")[0]
        command = "env" if kind == "env" else kind
        # Every service shares the machine's few cores with the others; torch's intra-op threads would
        # only contend with them (the batches here are tiny), so each process computes on one thread.
        extra = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(environment or {})}
        argv, env, log_path = service_argv(command, settings), child_environment(extra), self.logs / f"{name}.log"
        self.supervisor.start(name, lambda: spawn(argv, env, log_path), STOP_TIMEOUT_S[kind])

    def _start_prometheus(self, plan: Plan, control_token: Path) -> None:
        """Prometheus scraping every service, then the chart's rules once each target was scraped."""
        interval = self.options.prometheus_interval_s
        prom = LocalPrometheus(self.run_dir / "prometheus", plan.run, metrics_urls(plan), control_token, interval)
        argv, log_path = prom.argv(), self.logs / "prometheus.log"
        self.supervisor.start("prometheus", lambda: spawn(argv, child_environment(), log_path), 10.0)
        if not prom.arm(timeout_s=30.0 + 3 * interval):
            self.note(f"[yellow]prometheus did not load the alert rules; see {log_path}[/yellow]")
        self.prometheus = prom

    def _supervise(self) -> None:
        """Restart what died, tell the user, and keep ``endpoints.json``'s PIDs current."""
        for event in self.supervisor.poll():
            self.note(_describe(event))
        if self.plan is not None and self.supervisor.pids() != self._pids:
            self._write_endpoints(self.plan)

    def _write_endpoints(self, plan: Plan) -> None:
        self._pids = self.supervisor.pids()
        doc = {
            "run": plan.run,
            "ingress": plan.ingress,
            "ingress_token_file": str(plan.pools[0].token_file),
            "control_url": plan.control_url,
            "control_token_file": str(plan.control.token_file),
            "redis_url": plan.redis_url,
            "metrics": metrics_urls(plan),
            "pids": self._pids,
        }
        if self.prometheus is not None:
            doc["prometheus"] = self.prometheus.url
        write_private_json(self.run_dir / "endpoints.json", doc)

    def _announce(self, plan: Plan) -> None:
        self.note(
            f"impala local: run [bold]{plan.run}[/bold] in {self.run_dir}\n"
            f"  ingress  {', '.join(plan.ingress)}  token in {plan.pools[0].token_file}\n"
            f"  dial in: impala env --address {plan.ingress[0]} --token-file {plan.pools[0].token_file}"
            f" --env {self.resolved.env or '<your env>'}\n"
            f"  control  {plan.control_url}  (token in {plan.control.token_file})"
            + (
                f"\n  prometheus  {self.prometheus.url}  (alerts: {self.prometheus.url}/alerts)"
                if self.prometheus
                else ""
            )
        )

    def _record(
        self, client: redis.Redis, keys: RunKeys, csv: MetricsCsv, board: TensorBoardLog | None, last: Snapshot
    ) -> Snapshot:
        """Read, write one row (csv, TensorBoard); on a Redis error the last reading stands in."""
        with contextlib.suppress(redis.RedisError):  # redis is restarting; the supervisor brings it back
            last = read_snapshot(client, keys, csv.time_offset_s + time.monotonic() - self.started)
        csv.write(last)
        if board is not None:
            board.write(last)
        return last

    def _stop_reason(self, snap: Snapshot) -> str:
        if self.reason:
            return self.reason
        if target_reached(snap, self.resolved.target):
            return "target"
        if self.options.max_seconds and time.monotonic() - self.started >= self.options.max_seconds:
            return "max_seconds"
        if self.options.max_env_steps and snap.env_steps >= self.options.max_env_steps:
            return "max_env_steps"
        return ""

    def _watch(
        self, client: redis.Redis, keys: RunKeys, csv: MetricsCsv, board: TensorBoardLog | None
    ) -> tuple[Snapshot, bool]:
        """One row per second until a stop condition; returns the last snapshot and whether the target was hit."""
        live = self.options.live and self.console.is_terminal
        last, next_tick, next_plot = Snapshot(time_s=csv.time_offset_s), time.monotonic(), time.monotonic()
        with Display(self.console, self.title, live) as display:
            self._display = display
            try:
                while True:
                    self._supervise()
                    last = self._record(client, keys, csv, board, last)
                    display.show(last, sum(self.supervisor.restarts().values()), self.resolved.target)
                    self.reason = self._stop_reason(last)
                    if self.reason:
                        display.note(f"stopping ({self.reason}); final checkpoint, then the services stop in order")
                        return last, self.reason == "target"
                    if time.monotonic() >= next_plot:
                        plot_learning_curve(
                            csv.path, self.run_dir / "learning_curve.png", self.title, self.resolved.target
                        )
                        next_plot = time.monotonic() + PLOT_EVERY_S
                    next_tick += TICK_S
                    self.stop_event.wait(max(0.0, next_tick - time.monotonic()))
            finally:
                self._display = None

    def _summary(self, last: Snapshot) -> None:
        restarts = {k: v for k, v in self.supervisor.restarts().items() if v}
        self.note(
            f"{self.reason or 'stopped'}: {Display.line(last, sum(restarts.values()))}\n"
            f"run directory {self.run_dir} (metrics.csv, learning_curve.png, checkpoints/, logs/)"
            + (f"\nrestarts: {restarts}" if restarts else "")
        )


def _start_redis(server: RedisServer) -> subprocess.Popen[bytes]:
    """(Re)start the embedded redis-server on its fixed port; returns once it answers PING."""
    process = server.start().process
    assert process is not None
    return process


def _log_to_file(path: Path) -> logging.Handler:
    """Our own log (starts, restarts, stops) goes to a file, never to the terminal under the live display."""
    handler = logging.FileHandler(path)
    handler.setFormatter(TextFormatter())
    handler.addFilter(SecretMask())
    root = logging.getLogger("impala")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _describe(event: RestartEvent) -> str:
    if event.restarted:
        return f"{event.name} restarted (restart #{event.restarts})"
    return f"{event.name} exited with {event.exit_code}; restarting in {event.restart_in_s:.1f} s"
