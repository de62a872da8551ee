"""Every action space end to end over real parts: a pool built from a spec file (no Gymnasium env), a
raw gRPC client, the Redis buffer, the learner's decoder, ``collate`` and ``learn_step``; the recorded
behaviour log-probabilities checked against ``torch.distributions``; mismatched clients refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import gymnasium as gym
import numpy as np
import pytest
import redis
import torch
from prometheus_client import CollectorRegistry

from impala.actorpool.policy import PolicyHolder
from impala.actorpool.server import ActorPool, build_actorpool
from impala.actorpool.settings import ActorPoolSettings
from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.buffer.producer import RolloutProducer
from impala.core import distributions, tensors
from impala.core.batch import collate
from impala.core.env_spec import ActionSpace
from impala.core.learn import LearnConfig, episode_starts, learn_step, make_learner_state
from impala.core.models import ModelSpec, build_model, spec_from_settings
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer
from impala.core.rollouts import RolloutRecord
from impala.learner.decoding import rollout_decoder

T, E, OBS = 4, 3, 3
RUN = "spaces"
SPACES = {
    "discrete": {"type": "discrete", "n": 3},
    "multi_discrete": {"type": "multi_discrete", "nvec": [3, 2, 4]},
    # Narrow bounds under a unit-std initial policy: most samples fall outside and are clipped.
    "box": {"type": "box", "shape": [2], "low": [-0.1, None], "high": [0.1, 0.5]},
}


def write_spec(directory: Path, action: dict[str, Any], suffix: str = ".json") -> Path:
    path = directory / f"spec{suffix}"
    doc = {"observation": {"shape": [OBS], "dtype": "float32"}, "action": action}
    path.write_text(json.dumps(doc))  # JSON is YAML too: the .yaml file takes the YAML path
    return path


@pytest.fixture
def no_gymnasium_envs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build a Gymnasium env fails: the pool must not need one."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"gym.make called with {args}")

    monkeypatch.setattr(gym, "make", refuse)


@asynccontextmanager
async def spec_pool(
    spec_file: Path, redis_url: str, *, use_lstm: bool = False
) -> AsyncIterator[tuple[ActorPool, ModelSpec, PolicyHolder]]:
    settings = ActorPoolSettings(
        host="127.0.0.1",
        port=0,
        insecure=True,
        unroll_length=T,
        env_spec=spec_file,
        run=RUN,
        redis_url=redis_url,
        use_lstm=use_lstm,
        hidden_size=8,
    )
    spec = spec_from_settings(settings)
    torch.manual_seed(0)
    policy = PolicyHolder(build_model(spec), version=0, seed=1)
    sink = RolloutProducer(redis_url, RunKeys(RUN), capacity=1000, producer_id="pool-0")
    pool = build_actorpool(settings, policy=policy, spec=spec, sink=sink, registry=CollectorRegistry())
    await pool.start()
    try:
        yield pool, spec, policy
    finally:
        await pool.stop()
        await sink.close()


def hello(space: ActionSpace, **overrides: Any) -> actorpool_pb2.EnvMessage:
    msg = actorpool_pb2.Hello(
        client_name="spaces",
        num_envs=E,
        observation_spec=tensors.spec(np.float32, (OBS,)),
        num_actions=space.num_actions,
        protocol_version=1,
        action_spec=space.to_proto(),
    )
    for key, value in overrides.items():
        if key == "action_spec" and value is None:
            msg.ClearField("action_spec")  # as an older client sends it
        elif key == "action_spec":
            msg.action_spec.CopyFrom(value)
        else:
            setattr(msg, key, value)
    return actorpool_pb2.EnvMessage(hello=msg)


def step(obs: np.ndarray, reward: float, terminated: list[bool]) -> actorpool_pb2.EnvMessage:
    no = [False] * E
    msg = actorpool_pb2.Step(observation=tensors.encode(obs), reward=[reward] * E, terminated=terminated, truncated=no)
    return actorpool_pb2.EnvMessage(step=msg)


def ends(t: int) -> list[bool]:
    """Episodes end at a rollout boundary (env 0, the Step completing transition T-1) and inside one (env 1)."""
    return [t == T, t == 2] + [False] * (E - 2)


async def play(port: int, space: ActionSpace, steps: int) -> list[np.ndarray]:
    """One stream of ``steps`` Steps; the actions received, in order."""
    rng = np.random.default_rng(0)
    received = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = actorpool_pb2_grpc.ActorPoolStub(channel).Connect()
        await call.write(hello(space))
        assert (await call.read()).WhichOneof("kind") == "welcome"
        for t in range(steps):
            await call.write(step(rng.normal(size=(E, OBS)).astype(np.float32), float(t > 0), ends(t)))
            reply = await call.read()
            received.append(np.array(tensors.decode(reply.actions.actions)))
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    return received


def stored_records(redis_url: str, spec: ModelSpec) -> list[RolloutRecord]:
    decode = rollout_decoder(spec, T)
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(RunKeys(RUN).rollouts)
    finally:
        client.close()
    return [decode(next(iter(fields.values()))) for _, fields in entries]


def reference_log_prob(space: ActionSpace, params: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log μ(a) written with torch.distributions, independently of impala.core.distributions."""
    if space.type == "discrete":
        return torch.distributions.Categorical(logits=params).log_prob(action)
    if space.type == "multi_discrete":
        heads = params.split(list(space.nvec), -1)
        parts = [torch.distributions.Categorical(logits=h).log_prob(action[..., k]) for k, h in enumerate(heads)]
        return torch.stack(parts, -1).sum(-1)
    mean, log_std = params.chunk(2, -1)
    normal = torch.distributions.Normal(mean, log_std.exp())
    return normal.log_prob(action.reshape(*action.shape[:-1], -1)).sum(-1)


@pytest.mark.parametrize(("kind", "use_lstm"), [(kind, False) for kind in SPACES] + [("box", True)])
async def test_action_space_end_to_end(
    kind: str, use_lstm: bool, tmp_path: Path, redis_server: RedisServer, no_gymnasium_envs: None
) -> None:
    space = ActionSpace.from_dict(SPACES[kind])
    spec_file = write_spec(tmp_path, SPACES[kind], ".yaml" if kind == "box" else ".json")
    steps = T + 3  # one full rollout per env, then a partial one when the stream closes
    async with spec_pool(spec_file, redis_server.url, use_lstm=use_lstm) as (pool, spec, policy):
        assert spec.actions == space
        received = await play(pool.port, space, steps)
    records = sorted(stored_records(redis_server.url, spec), key=lambda r: (r.length != T, r.env_index))
    assert len(records) == 2 * E and [r.length for r in records] == [T] * E + [steps - 1 - T] * E
    assert records[1].terminated[1]  # env 1's episode ended inside its first rollout
    if use_lstm:  # env 0's ended at the boundary: its second rollout starts from the zero state
        assert records[0].terminated[T - 1] and not any(s.any() for s in records[E].initial_core_state)

    # The wire: one action per env of the space's shape and dtype, within the space.
    for actions in received:
        assert actions.shape == (E, *space.shape_per_env) and actions.dtype == space.dtype
        if space.type == "box":
            low, high = np.array(space.low, np.float32), np.array(space.high, np.float32)
            assert np.isfinite(actions).all() and (actions >= low).all() and (actions <= high).all()
        else:
            assert (actions >= 0).all() and (actions < np.array(space.nvec or space.n)).all()
    # The rollout keeps what was sampled: for a box the unclipped sample, of which the client got the clip.
    for r in records:
        first = 0 if r.length == T else T
        sent = np.stack([received[first + t][r.env_index] for t in range(r.length)])
        np.testing.assert_array_equal(space.clip(r.action[: r.length]), sent)
    if space.type == "box":
        assert any(not np.array_equal(r.action, space.clip(r.action)) for r in records), "nothing was clipped"

    # log μ(a) as recorded equals torch.distributions' log-probability of the recorded action.
    for r in records:
        L = r.length
        want = reference_log_prob(space, torch.tensor(r.behaviour_logits[:L]), torch.tensor(r.action[:L]))
        np.testing.assert_allclose(r.behaviour_log_prob[:L], want.numpy(), rtol=1e-5, atol=1e-5)
        assert not r.behaviour_log_prob[L:].any()

    # The learner: same weights, so log π − log μ = 0 on every valid step (for an LSTM: unrolled from each
    # rollout's initial state, reset where episodes start); one step gives finite losses.
    config = LearnConfig(unroll_length=T, batch_size=len(records), learning_rate=1e-3, total_steps=10_000)
    state = make_learner_state(spec, config)
    state.model.load_state_dict(policy.model.state_dict())
    batch = collate(records, "cpu")
    with torch.no_grad():
        out = state.model(batch.observation, episode_starts(batch), batch.initial_core_state)
    np.testing.assert_allclose(
        (out.logits[:-1] * batch.mask[..., None]).numpy(), batch.behaviour_logits.numpy(), rtol=1e-4, atol=1e-4
    )
    target = distributions.log_prob(space, out.logits[:-1], batch.action)
    np.testing.assert_allclose(
        (target * batch.mask).numpy(), (batch.behaviour_log_prob * batch.mask).numpy(), rtol=1e-4, atol=1e-4
    )
    before = [p.detach().clone() for p in state.model.parameters()]
    stats = learn_step(state, batch, config)
    assert all(np.isfinite(v) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, state.model.parameters(), strict=True))


REFUSALS = [
    # (pool's action, client's Hello overrides, field named in the status, a value named)
    (
        "discrete",
        {"action_spec": ActionSpace.box([1], [-1.0], [1.0]).to_proto(), "num_actions": 0},
        "action_spec",
        "Box",
    ),
    ("box", {"num_actions": 2, "action_spec": None}, "num_actions", "Box"),
    ("box", {"action_spec": ActionSpace.box([2], [-1.0, -1.0], [1.0, 1.0]).to_proto()}, "action_spec", "0.1"),
    ("multi_discrete", {"action_spec": ActionSpace.multi_discrete([3, 2]).to_proto()}, "action_spec", "[3, 2, 4]"),
    ("discrete", {"num_actions": 2}, "num_actions", "Discrete(3)"),
    ("box", {"num_actions": 3}, "num_actions", "needs num_actions 0"),
]


@pytest.mark.parametrize(("kind", "overrides", "field", "value"), REFUSALS)
async def test_spec_mismatch_is_refused_naming_the_field_and_both_values(
    kind: str, overrides: dict[str, Any], field: str, value: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    space = ActionSpace.from_dict(SPACES[kind])
    async with spec_pool(write_spec(tmp_path, SPACES[kind]), redis_server.url) as (pool, _, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            call = actorpool_pb2_grpc.ActorPoolStub(channel).Connect()
            await call.write(hello(space, **overrides))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert field in (caught.value.details() or "") and value in (caught.value.details() or "")
