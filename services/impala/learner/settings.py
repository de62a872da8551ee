"""Settings of the learner (`impala learner`). Hyperparameter defaults learn small control tasks (ADR 0016);
per-env presets (impala.core.presets: torchbeast's configuration for ALE/*) fill what a user leaves unset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from impala.core.settings import CASELESS, DEPLOYMENT, ModelSettings, ServiceSettings, WeightsToken


class LearnerSettings(ServiceSettings, ModelSettings, WeightsToken):
    """Reads rollouts from Redis, runs V-trace updates, publishes weights, checkpoints."""

    # ModelSettings' default config (no env prefix) would otherwise win in the MRO and make the
    # learner read REDIS_URL instead of IMPALA_REDIS_URL.
    model_config = ServiceSettings.model_config

    consumer: str = Field(
        "",
        description="Consumer name in the learners group; default: hostname. With N ranks, '-r<RANK>' is appended.",
        json_schema_extra=DEPLOYMENT,
    )
    batch_size: int = Field(
        8, ge=1, le=4096, description="B, rollouts per update (all ranks together: each reads B / WORLD_SIZE)."
    )
    learning_rate: float = Field(1e-3, gt=0, description="Learning rate of the optimizer (decays linearly).")
    total_steps: int = Field(
        50_000_000, ge=1, description="Env steps over which the learning rate decays linearly to 0."
    )
    discounting: float = Field(0.99, ge=0, le=1, description="Discount γ.")
    vtrace_lambda: float = Field(
        1.0,
        ge=0,
        le=1,
        description="V-trace λ: scales the trace coefficients (c = λ·min(1, π/μ)); 1 is plain V-trace, lower "
        "trades bias for variance as GAE's λ does.",
    )
    baseline_cost: float = Field(0.5, ge=0, description="Weight of the baseline loss.")
    entropy_cost: float = Field(0.01, ge=0, description="Weight of the entropy loss.")
    reward_clipping: Annotated[Literal["abs_one", "none"], CASELESS] = Field(
        "abs_one", description="Clip rewards to [-1, 1] (abs_one) or not (none)."
    )
    grad_norm_clipping: float = Field(0.5, gt=0, description="Global gradient-norm clip.")
    optimizer: Annotated[Literal["adam", "rmsprop"], CASELESS] = Field(
        "adam", description="Optimizer: adam, or rmsprop (torchbeast's)."
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="Adam β1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="Adam β2.")
    adam_epsilon: float = Field(1e-5, gt=0, description="Adam epsilon.")
    loss_reduction: Annotated[Literal["mean", "sum"], CASELESS] = Field(
        "mean", description="Average the losses over the batch's valid steps, or sum them (torchbeast)."
    )
    normalize_advantages: bool = Field(
        False, description="Scale the policy-gradient advantages to mean 0, std 1 over each batch."
    )
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1, description="RMSprop smoothing constant.")
    rmsprop_epsilon: float = Field(0.01, gt=0, description="RMSprop epsilon.")
    rmsprop_momentum: float = Field(0.0, ge=0, lt=1, description="RMSprop momentum.")
    publish_interval: int = Field(1, ge=1, description="Publish weights every this many updates.")
    weights_address: str = Field(
        "127.0.0.1:50052", description="host:port of the weight service.", json_schema_extra=DEPLOYMENT
    )
    checkpoint_dir: Path = Field(
        Path("checkpoints"), description="Directory for checkpoints.", json_schema_extra=DEPLOYMENT
    )
    checkpoint_interval_s: float = Field(600.0, gt=0, description="Seconds between periodic checkpoints.")
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept; older ones are deleted.")
    max_policy_lag: int = Field(0, ge=0, description="Drop rollouts more than this many versions old (0 = keep all).")
    claim_idle_s: float = Field(
        30.0, gt=0, description="Pending entries idle this long are reclaimed from dead learners."
    )
    status_interval_s: float = Field(1.0, gt=0, description="Period of the status heartbeat written to Redis.")
    buffer_check_after_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Seconds without a batch after which the learner checks that some live pool's buffer_capacity "
            "holds one batch (else it logs an error: a deadlock)."
        ),
    )
    seed: int = Field(0, description="Torch seed.")
    eval_every_updates: int = Field(
        500,
        ge=0,
        description=(
            "Evaluate the policy every this many updates on a separate env, greedy and sampled, in a child "
            "process (0 = off; spec-only runs have no env and skip it). Keeps best.pt by the sampled mean."
        ),
    )
    eval_episodes: int = Field(
        10, ge=1, le=10_000, description="Episodes per mode (greedy, sampled) of one evaluation."
    )
    prefetch: int = Field(2, ge=1, le=8, description="Collated batches prepared ahead of the learn step.")
    dist_backend: str = Field(
        "auto",
        pattern=r"^(auto|gloo|nccl)$",
        description="torch.distributed backend of N learner ranks: auto = NCCL on CUDA, gloo on CPU.",
    )
    dist_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Longest wait of a collective between learner ranks; past it a hung rank stops the others.",
    )
    rendezvous_timeout_s: float = Field(
        900.0, gt=0, description="How long learner ranks wait for each other at start (pods come up one by one)."
    )
