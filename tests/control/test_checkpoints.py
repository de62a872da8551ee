"""Checkpoint requests travel to the learner through Redis; a test thread plays the learner."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from impala.core.redis_server import RedisServer
from tests.control.conftest import ApiFactory
from tests.control.harness import KEYS, FakeLearner, write_learner_status


@pytest.fixture
def learner(redis_server: RedisServer) -> Iterator[FakeLearner]:
    fake = FakeLearner(redis_server.url)
    fake.start()
    yield fake
    fake.stop()


def _kind(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return str(response.json()["type"]).removeprefix("urn:impala:problem:")


def test_no_learner_means_503_and_no_command(api: httpx.Client, redis_client: redis.Redis) -> None:
    for path in ("/v1/checkpoints", "/v1/checkpoints?wait=true"):
        response = api.post(path)
        assert response.status_code == 503
        assert _kind(response) == "learner-unavailable"
        assert response.headers["retry-after"]
    write_learner_status(redis_client, age_s=60.0)  # a learner that died a minute ago
    assert api.post("/v1/checkpoints").status_code == 503
    assert redis_client.exists(KEYS.commands) == 0
    assert redis_client.hlen(KEYS.checkpoints) == 0


def test_request_writes_pending_record_then_command(api: httpx.Client, redis_client: redis.Redis) -> None:
    write_learner_status(redis_client)
    response = api.post("/v1/checkpoints")
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "pending"
    checkpoint_id = accepted["id"]
    assert response.headers["location"] == f"/v1/checkpoints/{checkpoint_id}"

    record = json.loads(redis_client.hget(KEYS.checkpoints, checkpoint_id) or b"{}")
    assert record["status"] == "pending"
    assert record["id"] == checkpoint_id
    entries: Any = redis_client.xrange(KEYS.commands)
    [(_, fields)] = entries
    assert fields[b"cmd"] == b"checkpoint"
    assert fields[b"id"] == checkpoint_id.encode()
    assert abs(float(fields[b"ts"]) - time.time()) < 60

    got = api.get(f"/v1/checkpoints/{checkpoint_id}")
    assert got.status_code == 200
    assert got.json()["status"] == "pending"
    missing = api.get("/v1/checkpoints/no-such-id")
    assert missing.status_code == 404
    assert _kind(missing) == "checkpoint-not-found"


def test_wait_returns_201_once_the_learner_wrote_it(api: httpx.Client, learner: FakeLearner) -> None:
    response = api.post("/v1/checkpoints", params={"wait": "true"})
    assert response.status_code == 201, response.text
    written = response.json()
    assert learner.served == [written["id"]]
    assert written == {
        "id": written["id"],
        "status": "done",
        "path": f"/ckpt/{written['id']}.pt",
        "step": 100,
        "bytes": 4096,
        "created_unix": written["created_unix"],
        "error": None,
    }
    assert api.get(f"/v1/checkpoints/{written['id']}").json() == written


def test_wait_reports_a_failed_checkpoint(make_api: ApiFactory, redis_server: RedisServer) -> None:
    learner = FakeLearner(redis_server.url, outcome="failed")
    learner.start()
    try:
        with make_api() as api:
            response = api.post("/v1/checkpoints?wait=true")
    finally:
        learner.stop()
    assert response.status_code == 502
    assert _kind(response) == "checkpoint-failed"
    assert "disk full" in response.json()["detail"]


def test_wait_times_out_with_504(make_api: ApiFactory, redis_client: redis.Redis) -> None:
    write_learner_status(redis_client)  # alive, but never answers
    with make_api(checkpoint_wait_s=0.3, learner_timeout_s=30.0) as api:
        response = api.post("/v1/checkpoints?wait=true")
    assert response.status_code == 504
    assert _kind(response) == "checkpoint-timeout"
    checkpoint_id = response.headers["location"].rsplit("/", 1)[1]
    assert json.loads(redis_client.hget(KEYS.checkpoints, checkpoint_id) or b"{}")["status"] == "pending"


def test_wait_gives_up_when_the_learner_dies(make_api: ApiFactory, redis_client: redis.Redis) -> None:
    write_learner_status(redis_client)  # one heartbeat, then silence: stale after learner_timeout_s
    with make_api(checkpoint_wait_s=20.0, learner_timeout_s=0.5) as api:
        response = api.post("/v1/checkpoints?wait=true")
    assert response.status_code == 503
    assert _kind(response) == "learner-unavailable"


def test_list_is_newest_first_and_tolerates_a_corrupt_record(
    api: httpx.Client, learner: FakeLearner, redis_client: redis.Redis
) -> None:
    responses = [api.post("/v1/checkpoints?wait=true") for _ in range(3)]
    assert [r.status_code for r in responses] == [201] * 3, [r.text for r in responses]
    ids = [r.json()["id"] for r in responses]
    redis_client.hset(KEYS.checkpoints, "corrupt", "{not json")
    listed = api.get("/v1/checkpoints").json()["checkpoints"]
    by_id = {c["id"]: c for c in listed}
    assert [c["id"] for c in listed if c["id"] in ids] == ids[::-1]
    assert by_id["corrupt"]["status"] == "failed"
    assert all(by_id[i]["status"] == "done" for i in ids)
