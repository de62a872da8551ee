"""The settings of every service of a local stack, and how each is started.

Each service gets a validated settings object built here (so a bad value fails before anything
starts, and ``config.json`` records exactly what ran); the child receives every field as a command
line flag, and tokens as ``--token-file`` paths (files of mode 0600), so no secret shows in ``ps``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.buffer.capacity import rank_buffer_floor
from impala.client.settings import ClientSettings
from impala.control.settings import ControlSettings
from impala.core.presets import preset
from impala.core.redis_server import free_port
from impala.core.settings import fields_in_scope, with_presets
from impala.learner.settings import LearnerSettings
from impala.weights.settings import WeightsSettings

HOST = "127.0.0.1"
BUFFER_BATCHES = 2  # batches the buffer holds beyond what the learner reads ahead (prefetch)

# Every service's settings class (the env client's included).
SERVICE_SETTINGS = (LearnerSettings, ActorPoolSettings, WeightsSettings, ControlSettings, ClientSettings)
# Fields that belong to one session of the stack (fresh on every start, never carried over on resume):
# the deployment-scoped wiring the plan sets, and what impala local's own options decide per session.
SESSION_FIELDS = fields_in_scope(*SERVICE_SETTINGS, scopes=("deployment",)) | {
    "run", "seed", "client_name", "log_level", "log_format", "num_envs"
}  # fmt: skip


# Fields that must agree across services (scope run or wire): the plan copies the learner's into pools
# and clients; the run's name is the session's.
_DERIVED = fields_in_scope(LearnerSettings, scopes=("run", "wire")) - {"run"}


@dataclass(frozen=True)
class Topology:
    """How many of each service, and what they run."""

    env: str  # "" for a spec-only run
    clients: int
    envs_per_client: int
    pools: int
    seed: int
    learners: int = 1  # learner ranks (torch.distributed, gloo) of one run
    env_spec: Path | None = None


@dataclass(frozen=True)
class Plan:
    """Every service's settings for one session; ``services()`` lists them in start order."""

    run: str
    redis_url: str
    weights: WeightsSettings
    control: ControlSettings
    learners: tuple[LearnerSettings, ...]  # one per rank; they differ only in their metrics port
    pools: tuple[ActorPoolSettings, ...]
    clients: tuple[ClientSettings, ...]
    master_port: int = 0  # rendezvous of the learner ranks (0 when there is one learner)

    @property
    def learner(self) -> LearnerSettings:
        """Rank 0: the learner that publishes, checkpoints and reports."""
        return self.learners[0]

    @property
    def learner_names(self) -> list[str]:
        """``learner`` alone; ``learner-0`` … ``learner-{N-1}`` for N ranks."""
        return ["learner"] if len(self.learners) == 1 else [f"learner-{r}" for r in range(len(self.learners))]

    def rank_environment(self, name: str) -> dict[str, str]:
        """The torchrun variables of learner rank ``name`` (none for a lone learner)."""
        if len(self.learners) == 1:
            return {}
        rank = self.learner_names.index(name)
        return {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(len(self.learners)),
            "MASTER_ADDR": HOST,
            "MASTER_PORT": str(self.master_port),
        }

    def services(self) -> dict[str, BaseSettings]:
        named: dict[str, BaseSettings] = {"weights": self.weights, "control": self.control}
        named.update(zip(self.learner_names, self.learners, strict=True))
        named.update({f"actorpool-{i}": pool for i, pool in enumerate(self.pools)})
        named.update({f"env-{i}": client for i, client in enumerate(self.clients)})
        return named

    @property
    def ingress(self) -> list[str]:
        return [f"{HOST}:{pool.port}" for pool in self.pools]

    @property
    def control_url(self) -> str:
        return f"http://{HOST}:{self.control.port}"


def build_plan(
    top: Topology,
    *,
    run: str,
    redis_url: str,
    checkpoint_dir: Path,
    token_files: tuple[Path, Path, Path],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    saved: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """Settings for every service on fresh loopback ports.

    Args:
        top: counts and env.
        run: Redis run name.
        redis_url: the embedded redis-server.
        checkpoint_dir: the learner's checkpoint directory (``runs/<name>/checkpoints``).
        token_files: files holding the (ingress, control, weights) tokens.
        overrides: per-service fields the user set (``"learner"``, ``"actorpool"``, ``"env"``); the env's
            preset fills the rest through the one resolver (``impala.core.settings.with_presets``).
        saved: on resume, the services section of the run's ``config.json``; its non-session fields win.
    """
    ingress_token, control_token, weights_token = token_files
    common: dict[str, Any] = {"run": run, "redis_url": redis_url, "log_format": "text"}
    weights_port = free_port(HOST)
    weights = WeightsSettings(
        **common, host=HOST, port=weights_port, metrics_port=free_port(HOST), token_file=weights_token, insecure=False
    )
    control = ControlSettings(
        **common, host=HOST, port=free_port(HOST), metrics_port=0, token_file=control_token, insecure=False
    )
    overrides = overrides or {}
    learners = tuple(
        with_presets(
            LearnerSettings(
                **_layers(
                    overrides.get("learner"), _saved(saved, "learner", "learner-0"), frozenset({"env", "env_spec"})
                ),
                **common,
                **_spaces(top),
                seed=top.seed,
                weights_address=f"{HOST}:{weights_port}",
                weights_token_file=weights_token,
                checkpoint_dir=checkpoint_dir,
                metrics_port=free_port(HOST),
            ),
            environ={},
        )
        for _ in range(top.learners)
    )
    learner = learners[0]
    # On one machine actors outrun the learner: a buffer of a few batches bounds the policy lag to a few
    # versions (backpressure slows the actors) instead of filling the default capacity with stale rollouts.
    # It holds the learner's prefetch plus BUFFER_BATCHES more batches.
    # A learner-bound run still holds every entry read: the decode process reads up to prefetch + 4 batches
    # ahead, which ImpalaBufferSaturated tells apart from a starved learner by the learner's progress.
    capacity = (learner.prefetch + BUFFER_BATCHES) * learner.batch_size
    pool_fields = {"buffer_capacity": capacity, **(overrides.get("actorpool") or {})}
    model: dict[str, Any] = {
        **_spaces(top),
        "model": learner.model,
        "hidden_size": learner.hidden_size,
        "use_lstm": learner.use_lstm,
    }
    pools = tuple(
        ActorPoolSettings(
            **_layers(pool_fields, _saved(saved, f"actorpool-{i}", "actorpool-0")),
            **common,
            **model,
            unroll_length=learner.unroll_length,
            host=HOST,
            port=free_port(HOST),
            metrics_port=free_port(HOST),
            pool_id=f"actorpool-{i}",
            token_file=ingress_token,
            insecure=False,
            weights_address=f"{HOST}:{weights_port}",
            weights_token_file=weights_token,
            seed=top.seed + 1000 * (i + 1),
        )
        for i in range(top.pools)
    )
    clients = tuple(
        ClientSettings(
            **_layers(overrides.get("env"), _saved(saved, f"env-{i}", "env-0")),
            log_format="text",
            address=f"{HOST}:{pools[i % len(pools)].port}",
            env=top.env,
            num_envs=top.envs_per_client,
            token_file=ingress_token,
            client_name=f"env-{i}",
            seed=top.seed + i * top.envs_per_client,
        )
        for i in range(top.clients)
    )
    if top.learners > 1:
        need = rank_buffer_floor(learner.batch_size, top.learners, learner.prefetch)
        pools = tuple(p.model_copy(update={"buffer_capacity": max(p.buffer_capacity, need)}) for p in pools)
    master_port = free_port(HOST) if top.learners > 1 else 0
    return Plan(run, redis_url, weights, control, learners, pools, clients, master_port)


def _spaces(top: Topology) -> dict[str, Any]:
    """The model settings that fix the spaces: ``env``, ``env_spec``, or both (a spec-only run leaves
    ``env`` unset, so it is not checked against the spec)."""
    out: dict[str, Any] = {"env": top.env} if top.env else {}
    return out if top.env_spec is None else {**out, "env_spec": top.env_spec}


def _layers(
    given: Mapping[str, Any] | None, saved: Mapping[str, Any], derived: frozenset[str] = _DERIVED
) -> dict[str, Any]:
    """User-given values overridden by saved ones, minus the fields this plan sets itself."""
    merged = {**(given or {}), **saved}
    return {k: v for k, v in merged.items() if k not in SESSION_FIELDS and k not in derived}


def _saved(saved: Mapping[str, Mapping[str, Any]] | None, *names: str) -> dict[str, Any]:
    """A saved service's fields minus per-session ones (the first of ``names`` that was saved)."""
    if not saved:
        return {}
    for name in names:
        if name in saved:
            return {k: v for k, v in saved[name].items() if k not in SESSION_FIELDS}
    return {}


def settings_flags(settings: BaseSettings) -> list[str]:
    """Command line flags (as ``impala.core.cli_options`` defines them) that rebuild ``settings``.

    Secret values are never put on a command line: set them through ``token_file`` instead.
    """
    flags: list[str] = []
    for name, value in settings.model_dump().items():
        flag = "--" + name.replace("_", "-")
        if value is None or isinstance(value, SecretStr) or name.endswith("token"):
            continue
        if name == "env" and name not in settings.model_fields_set:
            continue  # an env spec alone declares the spaces; the default id would be checked against it
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without ``IMPALA_*`` variables (a child gets exactly its flags), plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    return {**base, "PYTHONUNBUFFERED": "1", **(extra or {})}


def service_argv(command: str, settings: BaseSettings) -> list[str]:
    """``python -m impala <command> <flags>`` with this interpreter (no dependence on PATH)."""
    return [sys.executable, "-m", "impala", command, *settings_flags(settings)]


def default_envs_per_client(env: str, clients: int) -> int:
    """The preset's env slots for ``impala local`` spread over ``clients`` processes (rounded up)."""
    chosen = preset(env)
    return max(1, -(-(chosen.local_envs or chosen.num_envs) // max(1, clients)))


def effective_config_line(learner: LearnerSettings) -> str:
    """One line with the run's effective learning and model configuration (printed at start)."""
    names = ("env", "model", "hidden_size", "use_lstm", "unroll_length", "batch_size", "optimizer", "learning_rate",
             "loss_reduction", "entropy_cost", "baseline_cost", "grad_norm_clipping", "discounting", "total_steps")  # fmt: skip
    return "config: " + " ".join(f"{name}={getattr(learner, name)}" for name in names) + " (all of it in config.json)"
