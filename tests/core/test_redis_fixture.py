from __future__ import annotations

import os

import redis

from impala.core.redis_keys import LEARNER_GROUP, RunKeys
from impala.core.redis_server import RedisServer


def test_fixture_runs_a_real_server_with_streams(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    stream = RunKeys("t").rollouts
    redis_client.xgroup_create(stream, LEARNER_GROUP, id="0", mkstream=True)
    ids = [redis_client.xadd(stream, {"r": f"payload-{i}".encode()}) for i in range(3)]
    got = redis_client.xreadgroup(LEARNER_GROUP, "c1", {stream: ">"}, count=2)
    assert [e[0] for e in got[0][1]] == ids[:2]
    assert redis_client.xack(stream, LEARNER_GROUP, *ids[:2]) == 2
    assert redis_client.config_get("save")["save"] == ""
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, 0)  # alive


def test_server_stops_by_pid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(workdir=tmp_path).start()
    assert server.process is not None
    pid = server.process.pid
    server.stop()
    assert server.process.poll() is not None
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
