"""Every episode an env slot completes is recorded once, however it ends: a terminated or truncated
flag, or the client closing the stream (reset-by-reconnect), also right at a rollout boundary."""

from __future__ import annotations

from impala.client import ClientSettings, EnvClient, SimulatorBatch
from tests.actorpool.harness import decoded, running_pool
from tests.client.scripted_pool import Counter

T = 5
# Episode lengths and whether each terminates (else the client ends it by closing the stream): lengths
# that are multiples of T end the stream right after a full rollout shipped (nothing left to truncate).
LENGTHS = (T, 2, 2 * T, 3, T - 1, T + 1, 1, T)
TERMINAL = (False, True, True, False, False, True, False, False)


async def test_reset_by_reconnect_records_every_episode_once() -> None:
    simulator = Counter(0, LENGTHS, TERMINAL)
    async with running_pool(unroll_length=T) as (pool, sink):
        config = ClientSettings(address=f"127.0.0.1:{pool.port}", reconnect_on_reset=True, max_steps=sum(LENGTHS))
        stats = await EnvClient(SimulatorBatch([simulator]), config).run()
        assert stats.streams == len(LENGTHS) and stats.episodes == len(LENGTHS)
    records = decoded(sink)
    episodes = [(r, n) for rec in records for r, n in zip(rec.episode_returns, rec.episode_lengths, strict=True)]
    # Counter's reward at step t is t: an episode of n steps returns n(n+1)/2.
    assert episodes == [(n * (n + 1) / 2, n) for n in LENGTHS]
    assert sum(rec.length for rec in records) == sum(LENGTHS)  # every transition once, none invented
