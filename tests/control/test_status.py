"""/healthz, /readyz, /v1/status and /metrics, computed from the hashes the learner and pools write."""

from __future__ import annotations

import time

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from impala.core.redis_server import RedisServer
from tests.control.conftest import ApiFactory
from tests.control.harness import KEYS, RUN, write_learner_status


def _problem(response: httpx.Response, status: int, kind: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["type"] == f"urn:impala:problem:{kind}"
    return body


def test_status_reports_what_learner_and_pools_wrote(api: httpx.Client, redis_client: redis.Redis) -> None:
    write_learner_status(
        redis_client,
        age_s=1.0,
        learner_step=1234,
        env_steps=987654,
        env_steps_per_second=4321.5,
        policy_version=77,
        policy_lag_mean=1.25,
        episode_return_mean=201.5,
        episodes=42,
        paused="0",
        last_checkpoint="/ckpt/step-1200.pt",
        last_checkpoint_step=1200,
    )
    for i in range(3):
        redis_client.xadd(KEYS.rollouts, {"r": b"x" * (i + 1)})
    now = time.time()
    live = {"pool-a": 16, "pool-b": 3}
    for pool_id, clients in live.items():
        redis_client.hset(KEYS.pool_status(pool_id), mapping={"heartbeat": now, "clients": clients})
        redis_client.zadd(KEYS.pools, {pool_id: now})
    # A pool that stopped heartbeating a minute ago, and one whose status hash already expired.
    redis_client.hset(KEYS.pool_status("pool-stale"), mapping={"heartbeat": now - 60, "clients": 9})
    redis_client.zadd(KEYS.pools, {"pool-stale": now - 60, "pool-expired": now})
    redis_client.hset(KEYS.counters, mapping={"rollouts_produced": 50, "rollouts_consumed": 40, "rollouts_shed": 2})

    status = api.get("/v1/status").json()

    age = status.pop("learner_heartbeat_age_s")
    assert 1.0 <= age < 5.0
    assert status == {
        "run": RUN,
        "paused": False,
        "learner_paused": False,
        "learner_alive": True,
        "learner_step": 1234,
        "env_steps": 987654,
        "env_steps_per_second": 4321.5,
        "policy_version": 77,
        "policy_lag_mean": 1.25,
        "episode_return_mean": 201.5,
        "episodes": 42,
        "last_checkpoint": "/ckpt/step-1200.pt",
        "last_checkpoint_step": 1200,
        "buffer_depth": 3,
        "clients": live,
        "rollouts": {"produced": 50, "shed": 2, "consumed": 40, "dropped": 0},
    }


def test_status_of_a_fresh_run_has_nulls_not_errors(api: httpx.Client) -> None:
    status = api.get("/v1/status").json()
    assert status["learner_alive"] is False
    assert status["learner_step"] is None
    assert status["learner_heartbeat_age_s"] is None
    assert status["buffer_depth"] == 0
    assert status["clients"] == {}


def test_readyz_needs_a_fresh_learner_heartbeat(make_api: ApiFactory, redis_client: redis.Redis) -> None:
    with make_api(learner_timeout_s=5.0) as api:
        body = _problem(api.get("/readyz"), 503, "learner-unavailable")
        assert "never written" in str(body["detail"])
        write_learner_status(redis_client, age_s=30.0)
        body = _problem(api.get("/readyz"), 503, "learner-unavailable")
        assert "30." in str(body["detail"])
        write_learner_status(redis_client, age_s=0.0)
        ready = api.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["redis"] is True
        assert not api.get("/v1/status").json()["learner_paused"]


def test_redis_gone_means_503_but_healthz_stays_200(api: httpx.Client, redis_server: RedisServer) -> None:
    assert api.get("/v1/status").status_code == 200
    redis_server.stop()
    _problem(api.get("/readyz"), 503, "redis-unavailable")
    body = _problem(api.get("/v1/status"), 503, "redis-unavailable")
    assert "Redis" in str(body["detail"])
    _problem(api.post("/v1/pause"), 503, "redis-unavailable")
    assert api.get("/healthz").status_code == 200


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_and_commands(api: httpx.Client) -> None:
    api.post("/v1/pause")
    api.post("/v1/pause")
    api.get("/v1/checkpoints/does-not-exist")
    api.get("/no/such/path")
    samples = _samples(api.get("/metrics").text)

    def requests(route: str, method: str, code: str) -> float:
        labels = (("code", code), ("method", method), ("route", route))
        return samples.get(("impala_control_requests_total", labels), 0.0)

    assert requests("/v1/pause", "POST", "200") == 1
    assert requests("/v1/pause", "POST", "409") == 1
    assert requests("/v1/checkpoints/{checkpoint_id}", "GET", "404") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert samples[("impala_control_commands_total", (("command", "pause"),))] == 1
