"""``impala learner``: factories that turn settings into the learner's parts, and the process around
them (signals, metrics endpoint, orderly shutdown). Tests build the same ``Learner`` with
``build_learner`` and run it on a thread.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import redis
import torch
from prometheus_client import CollectorRegistry

from impala.buffer.capacity import rank_buffer_floor
from impala.core import heap, logs, metrics
from impala.core.device import resolve_device
from impala.core.learn import LearnConfig, LearnerState, make_learner_state
from impala.core.models import ModelSpec, Policy, fingerprint, spec_from_settings
from impala.core.pools import live_pools
from impala.core.redis_client import sync_client
from impala.core.redis_keys import RunKeys
from impala.core.settings import secret_values, with_presets
from impala.core.state_codec import encode_state
from impala.learner.buffer_check import BufferCheck
from impala.learner.checkpointing import Checkpointer
from impala.learner.control import ControlPlane
from impala.learner.decode_process import DecodeConfig, DecodeProcess
from impala.learner.distributed import RankGroup, RankLostError, Ranks, Solo, World, WorldError, backend_for
from impala.learner.eval_schedule import build_evaluation
from impala.learner.keep_best import KeepBest
from impala.learner.loop import TrainingLoop
from impala.learner.metrics import LearnerMetrics
from impala.learner.progress import Progress
from impala.learner.publishing import BackgroundPublisher, PermanentPublishError
from impala.learner.settings import LearnerSettings
from impala.weights.publisher import PublishRefusedError, WeightPublisher

log = logging.getLogger(__name__)

_SHUTDOWN_PUBLISH_S = 2.0  # how long the last weights may take to reach the service on exit


@dataclass
class Learner:
    """An assembled learner; ``run(stop)`` trains until ``stop`` is set and shuts its parts down."""

    loop: TrainingLoop
    prefetcher: DecodeProcess
    control: ControlPlane | None  # rank 0 only
    redis: redis.Redis
    publisher: BackgroundPublisher | None = None
    weights: WeightPublisher | None = None

    def run(self, stop: threading.Event) -> int:
        # Fill the heartbeat before the control thread's first write, or it would carry the previous
        # (dead) learner's counters for a heartbeat (the status hash merges fields).
        self.loop.refresh_status()
        if self.control is not None:
            self.control.start()
        self.prefetcher.start()
        if self.publisher is not None:
            self.publisher.start()
        try:
            self.loop.run(stop)
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        # Entries read but not learned from stay pending: the next learner of this name re-reads them.
        self.prefetcher.stop()
        if self.publisher is not None and self.weights is not None:
            if not self.publisher.flush(_SHUTDOWN_PUBLISH_S):
                log.warning("last weight version not published before exit")
            self.publisher.stop(interrupt=self.weights.close)
        if self.loop.evaluation is not None:
            self.loop.evaluation.stop()
        if self.control is not None:
            self.control.stop()
        self.loop.ranks.close()
        self.redis.close()


def build_state(spec: ModelSpec, config: LearnConfig, settings: LearnerSettings, device: str) -> LearnerState:
    torch.manual_seed(settings.seed)
    return make_learner_state(spec, config, device)


def consumer_name(settings: LearnerSettings, world: World | None = None) -> str:
    """This learner's name in the consumer group: the setting, else the hostname (the pod name); one of
    N ranks appends ``-r<RANK>`` (torchrun's ranks share a host)."""
    name = settings.consumer or socket.gethostname()
    return f"{name}-r{world.rank}" if world is not None and world.distributed else name


def build_publisher(settings: LearnerSettings, model: Policy) -> tuple[BackgroundPublisher, WeightPublisher]:
    client = WeightPublisher(settings.weights_address, token=settings.weights_bearer_token())
    model_fingerprint = fingerprint(model)

    def publish(version: int, payload: bytes) -> None:
        try:
            client.publish(version, model_fingerprint, payload)
        except PublishRefusedError as err:
            raise PermanentPublishError(str(err), err.current_version) from err

    return BackgroundPublisher(publish, encode_state), client


def build_prefetcher(
    settings: LearnerSettings,
    spec: ModelSpec,
    config: LearnConfig,
    device: str,
    *,
    current_version: Callable[[], int],
    metrics: LearnerMetrics,
    world: World | None = None,
) -> DecodeProcess:
    """Batches of this rank's share of B (B / WORLD_SIZE rollouts) under its own consumer name."""
    world = world or World()
    decode = DecodeConfig(
        redis_url=settings.redis_url,
        run=settings.run,
        consumer=consumer_name(settings, world),
        claim_idle_s=settings.claim_idle_s,
        spec=spec,
        unroll_length=config.unroll_length,
        batch_size=config.batch_size // world.size,
        max_policy_lag=settings.max_policy_lag,
        max_ahead=settings.prefetch if world.distributed else 0,
        log_level=settings.log_level,
        log_format=settings.log_format,
    )
    return DecodeProcess(decode, device, metrics, current_version=current_version, depth=settings.prefetch)


def join_ranks(settings: LearnerSettings, world: World, device: str) -> Ranks:
    """``Solo`` alone; else the process group of the world (after waiting for every rank)."""
    if not world.distributed:
        return Solo()
    place = torch.device(device)
    if place.type == "cuda":
        torch.cuda.set_device(place)
    return RankGroup.join(
        world,
        backend=backend_for(place, settings.dist_backend),
        device=place,
        timeout_s=settings.dist_timeout_s,
        rendezvous_timeout_s=settings.rendezvous_timeout_s,
    )


def rank_device(settings: LearnerSettings, world: World) -> str:
    """The setting's device; ``cuda`` means this rank's GPU (``LOCAL_RANK``) when there are several."""
    device = resolve_device(settings.device)
    return f"cuda:{world.local_rank}" if device == "cuda" and world.distributed else device


def build_buffer_check(
    settings: LearnerSettings, client: redis.Redis, keys: RunKeys, metrics: LearnerMetrics, world: World
) -> BufferCheck:
    """Rank 0's check that the pools' buffer can hold a batch. One rank suffices: every rank shares
    the pools, B and N, and waits in the same turn (ADR 0022), so each would reach the same verdict."""
    return BufferCheck(
        lambda: live_pools(client, keys),
        need=rank_buffer_floor(settings.batch_size, world.size, settings.prefetch),
        batch_size=settings.batch_size,
        ranks=world.size,
        gauge=metrics.buffer_too_small,
        after_s=settings.buffer_check_after_s,
    )


def build_learner(settings: LearnerSettings, *, registry: CollectorRegistry, world: World | None = None) -> Learner:
    """Every part of a learner from its settings; resumes the latest checkpoint in ``checkpoint_dir``.

    One of N ranks (``world``) waits here for the others, then takes rank 0's state.
    """
    world = world or World()
    settings = with_presets(settings)  # the one resolver: model fields and hyperparameters alike
    config = LearnConfig.from_settings(settings)
    if config.batch_size % world.size:
        raise WorldError(f"batch_size {config.batch_size} must be a multiple of WORLD_SIZE {world.size}")
    device = rank_device(settings, world)
    spec = spec_from_settings(settings)
    state = build_state(spec, config, settings, device)
    learner_metrics = LearnerMetrics.create(registry)
    evaluation = build_evaluation(settings, spec, learner_metrics, primary=world.primary)
    checkpointer = Checkpointer(
        settings.checkpoint_dir,
        keep=settings.keep_checkpoints,
        interval_s=settings.checkpoint_interval_s,
        config=settings.public_dict(),
        # Without evaluation, best.pt is the checkpoint with the best training mean return (ADR 0020).
        keep_best=KeepBest(settings.checkpoint_dir, "train_mean") if evaluation is None and world.primary else None,
    )
    progress = (checkpointer.restore(state, device) if world.primary else None) or Progress()
    ranks = join_ranks(settings, world, device)
    if world.distributed:
        shared = ranks.share_state({**state.state_dict(), **progress.to_payload()} if world.primary else None)
        if not world.primary and shared is not None:
            state.load_state_dict(shared)
            progress = Progress.from_payload(shared)
    keys = RunKeys(settings.run)
    learner_metrics.checkpoint_interval.set(settings.checkpoint_interval_s)
    publish = settings.weights_address and world.primary
    publisher, weights = build_publisher(settings, state.model) if publish else (None, None)
    prefetcher = build_prefetcher(
        settings,
        spec,
        config,
        device,
        current_version=lambda: progress.policy_version,
        metrics=learner_metrics,
        world=world,
    )
    loop = TrainingLoop(
        state=state,
        config=config,
        prefetcher=prefetcher,
        consumer=prefetcher,
        checkpointer=checkpointer,
        control=None,
        metrics=learner_metrics,
        progress=progress,
        publisher=publisher,
        publish_interval=settings.publish_interval,
        primary=world.primary,
        ranks=ranks,
        evaluation=evaluation,
    )
    client = sync_client(settings.redis_url, socket_timeout_s=5.0)
    if world.primary:
        loop.control = ControlPlane(client, keys, status=loop.status, status_interval_s=settings.status_interval_s)
        loop.buffer_check = build_buffer_check(settings, client, keys, learner_metrics, world)
    log.info(
        "learner built",
        extra={
            "device": device,
            "env": settings.env,
            "spec": str(spec),
            "config": str(config),
            "rank": world.rank,
            "world_size": world.size,
        },
    )
    return Learner(loop, prefetcher, loop.control, client, publisher, weights)


def run(settings: LearnerSettings) -> int:
    """Entry point of ``impala learner``: train until SIGTERM/SIGINT, then checkpoint and exit 0."""
    logs.configure(settings.log_level, settings.log_format, secret_values(settings))
    heap.retain_freed_memory()
    registry = metrics.service_registry()
    try:
        world = World.from_environ()
    except WorldError as err:
        log.error("bad learner world", extra={"error": str(err)})
        return 2
    # Served before the rendezvous: the StatefulSet (OrderedReady) starts pod N+1 once pod N is up.
    metrics.serve(registry, settings.metrics_port)
    try:
        learner = build_learner(settings, registry=registry, world=world)
    except WorldError as err:
        log.error("bad learner world", extra={"error": str(err)})
        return 2
    except RankLostError as err:
        log.error("learner ranks could not meet; exiting for a restart", extra={"error": str(err)})
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only a flag: the loop finishes its step, checkpoints and returns.
        log.info("signal received; finishing the current step", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return learner.run(stop)
    except RankLostError as err:
        # Exiting is what stops the world cleanly: every rank's supervisor restarts it, and the ranks
        # resume from rank 0's checkpoint of the last step they all finished.
        log.error("a learner rank was lost; exiting for a restart", extra={"error": str(err)})
        return 1
