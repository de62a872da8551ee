"""Each bad input ends only its own stream with a specific status; healthy clients keep running."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest
import torch

from impala.actorpool.v1 import actorpool_pb2
from impala.core import tensors
from impala.tensor.v1 import tensor_pb2
from tests.actorpool.harness import ScriptedClient, decoded, obs_for, running_pool

E = 2
INVALID = grpc.StatusCode.INVALID_ARGUMENT
GOOD_OBS = obs_for(np.zeros(E), np.zeros(E), E)


def step(**fields: object) -> actorpool_pb2.Step:
    msg = actorpool_pb2.Step(
        observation=tensors.encode(GOOD_OBS), reward=[0.0] * E, terminated=[False] * E, truncated=[False] * E
    )
    for key, value in fields.items():
        if isinstance(value, tensor_pb2.Tensor):
            getattr(msg, key).CopyFrom(value)
        else:
            field = getattr(msg, key)
            del field[:]
            field.extend(value)  # type: ignore[arg-type]
    return msg


async def after_first(client: ScriptedClient, bad: actorpool_pb2.Step) -> None:
    await client.hello()
    await client.step(GOOD_OBS)
    await client.send(bad)


def bad_hello(**fields: object) -> Callable[[ScriptedClient], Awaitable[None]]:
    async def send(client: ScriptedClient) -> None:
        hello = actorpool_pb2.Hello(
            client_name="bad",
            num_envs=E,
            observation_spec=tensors.spec(np.float32, (4,)),
            num_actions=2,
            protocol_version=1,
        )
        for key, value in fields.items():
            if key == "observation_spec":
                hello.observation_spec.CopyFrom(value)  # type: ignore[arg-type]
            else:
                setattr(hello, key, value)
        await client.call.write(actorpool_pb2.EnvMessage(hello=hello))

    return send


def bad_step(msg: actorpool_pb2.Step) -> Callable[[ScriptedClient], Awaitable[None]]:
    async def send(client: ScriptedClient) -> None:
        await after_first(client, msg)

    return send


async def step_before_hello(client: ScriptedClient) -> None:
    await client.send(step())


async def second_hello(client: ScriptedClient) -> None:
    await client.hello()
    await client.step(GOOD_OBS)
    await bad_hello()(client)


async def first_step_with_flags(client: ScriptedClient) -> None:
    await client.hello()
    await client.send(step(terminated=[True, False], observation=tensors.encode(GOOD_OBS)))


nan_obs = GOOD_OBS.copy()
nan_obs[0, 0] = np.nan
CASES: dict[str, tuple[Callable[[ScriptedClient], Awaitable[None]], grpc.StatusCode, str]] = {
    "wrong dtype": (
        bad_step(step(observation=tensors.encode(GOOD_OBS.astype(np.float64)))),
        INVALID,
        "dtype is float64",
    ),
    "wrong shape": (
        bad_step(step(observation=tensors.encode(np.zeros((E, 5), np.float32)))),
        INVALID,
        "shape is [2, 5]",
    ),
    "data length": (
        bad_step(step(observation=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[E, 4], data=b"\0" * 12))),
        INVALID,
        "data has 12 bytes",
    ),
    "nan observation": (bad_step(step(observation=tensors.encode(nan_obs))), INVALID, "NaN"),
    "inf reward": (bad_step(step(reward=[0.0, float("inf")])), INVALID, "non-finite"),
    "flags length": (bad_step(step(terminated=[False])), INVALID, "terminated has 1 values"),
    "truncated without final": (bad_step(step(truncated=[True, False])), INVALID, "final_observation is missing"),
    "final obs rows": (
        bad_step(step(truncated=[True, False], final_observation=tensors.encode(GOOD_OBS))),
        INVALID,
        "final_observation: shape is [2, 4], expected [1, 4]",
    ),
    "unspecified dtype": (
        bad_step(step(observation=tensor_pb2.Tensor(shape=[E, 4], data=b"\0" * 32))),
        INVALID,
        "DTYPE_UNSPECIFIED",
    ),
    "step before hello": (step_before_hello, INVALID, "first message of a stream must be Hello"),
    "second hello": (second_hello, INVALID, "Hello may be sent only once"),
    "first step flags": (first_step_with_flags, INVALID, "flags must be false"),
    "num_envs zero": (bad_hello(num_envs=0), INVALID, "num_envs is 0"),
    "num_envs too many": (bad_hello(num_envs=100_000), INVALID, "num_envs is 100000"),
    "obs spec mismatch": (
        bad_hello(observation_spec=tensors.spec(np.float32, (5,))),
        grpc.StatusCode.FAILED_PRECONDITION,
        "observation_spec is float32[5], the model expects float32[4]",
    ),
    "action count mismatch": (
        bad_hello(num_actions=3),
        grpc.StatusCode.FAILED_PRECONDITION,
        "num_actions is 3, the model expects 2",
    ),
    "protocol version": (bad_hello(protocol_version=2), grpc.StatusCode.FAILED_PRECONDITION, "protocol_version is 2"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_ends_only_its_stream(case: str) -> None:
    send_bad, code, detail = CASES[case]
    async with running_pool() as (pool, _sink):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            healthy = ScriptedClient(channel, E)
            await healthy.hello()
            await healthy.step(GOOD_OBS)
            bad = ScriptedClient(channel, E)
            await send_bad(bad)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(bad.call.read(), 10)
            assert err.value.code() == code
            assert detail in (err.value.details() or "")
            for t in range(1, 8):  # the healthy client keeps being served
                actions = await healthy.step(obs_for(np.zeros(E), np.full(E, t), E), [1.0, 1.0])
                assert actions.shape == (E,)
            assert await healthy.close() == grpc.StatusCode.OK
        reasons = {
            s.labels["reason"]
            for m in pool.metrics.rejected_streams.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.value > 0
        }
        assert reasons, "the rejection is counted in impala_actorpool_rejected_streams_total"


async def test_message_over_size_limit_is_refused() -> None:
    async with running_pool(max_message_bytes=4096) as (pool, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, E)
            await client.hello()
            huge = actorpool_pb2.Step(observation=tensors.encode(np.zeros((E, 4096), np.float32)))
            await client.send(huge)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.call.read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_client_that_never_says_hello_is_dropped() -> None:
    async with running_pool(handshake_timeout_s=0.2) as (pool, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, E)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.call.read()
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no Hello received within 0.2s" in (err.value.details() or "")
            assert not pool.servicer.sessions


async def test_client_that_stops_stepping_is_dropped_and_its_partial_rollout_ships() -> None:
    async with running_pool(idle_timeout_s=0.3) as (pool, sink):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, E)
            await client.hello()
            await client.step(obs_for(np.zeros(E), np.zeros(E), E))
            await client.step(obs_for(np.zeros(E), np.ones(E), E), [1.0] * E)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.call.read()  # sends nothing more: the pool ends the stream
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no Step received within 0.3s" in (err.value.details() or "")
        records = decoded(sink)
        assert len(records) == E and all(r.length == 1 for r in records)
        assert not pool.servicer.sessions and pool.servicer.connected == 0


async def test_a_diverged_model_ends_streams_internal_and_good_weights_bring_the_pool_back() -> None:
    async with running_pool() as (pool, sink):
        policy = pool.batcher.policy
        good = {k: v.clone() for k, v in policy.model.state_dict().items()}
        with torch.no_grad():
            for param in policy.model.parameters():
                param.fill_(float("nan"))  # what a diverged learner would publish
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, E)
            await client.hello()
            await client.send(step())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.call.read()
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "non-finite logits or values for 2 of 2 rows" in (info.value.details() or "")
            policy.offer(policy.version + 1, good)  # the learner publishes sane weights again
            healthy = ScriptedClient(channel, E)
            await healthy.hello()
            for t in range(3):
                assert (await healthy.step(obs_for(np.zeros(E), np.full(E, t), E))).shape == (E,)
            assert await healthy.close() == grpc.StatusCode.OK
        shipped = decoded(sink)  # the healthy stream's partial rollouts; the failed stream recorded nothing
        assert [r.length for r in shipped] == [2] * E
        assert all(np.isfinite(r.behaviour_logits).all() and r.policy_version == 4 for r in shipped)
        counted = {
            (s.labels["code"], s.labels["reason"]): s.value
            for m in pool.metrics.rejected_streams.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.value  # every known pair is exported at 0
        }
        assert counted == {("INTERNAL", "inference"): 1.0}
