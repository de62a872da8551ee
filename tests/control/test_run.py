"""Pause and resume set the run's desired state in Redis; repeating one is a 409."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from tests.control.harness import KEYS, RUN, TOKEN


def test_pause_resume_and_conflicts(api: httpx.Client, redis_client: redis.Redis) -> None:
    conflict = api.post("/v1/resume")
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:impala:problem:already-running"

    assert api.post("/v1/pause").json() == {"run": RUN, "paused": True}
    assert redis_client.hget(KEYS.state, "paused") == b"1"
    assert api.get("/v1/status").json()["paused"] is True

    conflict = api.post("/v1/pause")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert conflict.json()["type"] == "urn:impala:problem:already-paused"
    assert redis_client.hget(KEYS.state, "paused") == b"1"

    assert api.post("/v1/resume").json() == {"run": RUN, "paused": False}
    assert redis_client.hget(KEYS.state, "paused") == b"0"
    assert api.post("/v1/resume").status_code == 409


def test_pause_set_elsewhere_is_respected(api: httpx.Client, redis_client: redis.Redis) -> None:
    # Another control API replica (or an operator with redis-cli) paused the run.
    redis_client.hset(KEYS.state, "paused", "1")
    assert api.post("/v1/pause").status_code == 409
    assert api.post("/v1/resume").status_code == 200


def test_concurrent_pauses_get_exactly_one_success(api: httpx.Client) -> None:
    def pause(_: int) -> int:
        with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            return client.post("/v1/pause").status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(pause, range(8)))
    assert codes == [200] + [409] * 7
