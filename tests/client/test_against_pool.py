"""The SDK against the real ActorPool (port 0, in-memory sink): what the client counts is what the
rollouts record, in vector mode and in reset-by-reconnect mode; a spec mismatch is refused for good."""

from __future__ import annotations

import numpy as np
import pytest

from impala.client import ClientError, ClientSettings, EnvClient, SimulatorBatch
from tests.actorpool.harness import decoded, running_pool
from tests.client.scripted_pool import Counter


@pytest.mark.parametrize(("num_envs", "reconnect"), [(2, False), (1, True)])
async def test_pool_records_the_episodes_the_client_played(num_envs: int, reconnect: bool) -> None:
    # Episodes of 3 steps (terminated) and 4 steps (truncated) alternate; reward t, so returns 6 and 10.
    # The step budget ends each env exactly at an episode end, so every episode is complete.
    batch = SimulatorBatch([Counter(i, (3, 4), (True, False)) for i in range(num_envs)])
    async with running_pool(unroll_length=5) as (pool, sink):
        config = ClientSettings(address=f"127.0.0.1:{pool.port}", max_steps=num_envs * 14, reconnect_on_reset=reconnect)
        stats = await EnvClient(batch, config).run()
        records = decoded(sink)
    assert sorted(stats.recent_returns) == [6.0] * 2 * num_envs + [10.0] * 2 * num_envs
    assert sorted(r for rec in records for r in rec.episode_returns) == sorted(stats.recent_returns)
    assert sum(rec.length for rec in records) == stats.env_steps
    # Vector mode sends the truncated flag; reset-by-reconnect closes the stream: the pool sees the same.
    assert sum(int(rec.terminated[: rec.length].sum()) for rec in records) == 2 * num_envs
    assert sum(int(rec.truncated[: rec.length].sum()) for rec in records) == 2 * num_envs
    assert stats.streams == (4 if reconnect else 1)


async def test_spec_mismatch_is_not_retried() -> None:
    batch = SimulatorBatch([Counter(0, (3,), (True,))], observation_dtype=np.float64)
    async with running_pool() as (pool, _):
        with pytest.raises(ClientError, match=r"float64\[4\].*float32\[4\]") as info:
            await EnvClient(batch, ClientSettings(address=f"127.0.0.1:{pool.port}")).run()
    assert info.value.code.name == "FAILED_PRECONDITION"
