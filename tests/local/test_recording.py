"""Progress readings from a real Redis, metrics.csv, learning_curve.png, stop decisions and exit codes."""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import pytest
import redis

from impala.core.redis_keys import RunKeys
from impala.local.main import exit_code
from impala.local.recorder import MetricsCsv, plot_learning_curve, read_metrics, tensorboard_problem
from impala.local.stack import LocalOptions, OptionsError, resolve
from impala.local.status import Snapshot, read_snapshot, target_reached


def test_snapshot_reads_the_control_plane_keys(redis_client: redis.Redis) -> None:
    keys = RunKeys("r1")
    redis_client.hset(
        keys.learner_status,
        mapping={"env_steps": 1200, "learner_step": 30, "episode_return_mean": 87.5, "episodes": 140,
                 "env_steps_per_second": 2500.5, "policy_lag_mean": 1.25, "heartbeat": time.time(),
                 "pg_loss": -0.5, "baseline_loss": 2.0, "entropy_loss": -0.01, "grad_norm": 3.5,
                 "learning_rate": 4.8e-4, "eval_return_greedy": 500.0, "eval_return_sampled": 480.5},
    )  # fmt: skip
    now = time.time()
    for pool, clients, beat in (("p0", 2, now), ("p1", 3, now), ("gone", 9, now - 120)):
        redis_client.hset(keys.pool_status(pool), mapping={"clients": clients, "heartbeat": beat})
        redis_client.zadd(keys.pools, {pool: beat})
    for _ in range(4):
        redis_client.xadd(keys.rollouts, {"r": b"x"})
    snap = read_snapshot(redis_client, keys, 12.5)
    assert snap == Snapshot(
        12.5, 1200, 30, 87.5, 140, 2500.5, 1.25, buffer_depth=4, clients=5,
        policy_loss=-0.5, value_loss=2.0, entropy_loss=-0.01, grad_norm=3.5, learning_rate=4.8e-4,
        eval_return_greedy=500.0, eval_return_sampled=480.5,
    )  # fmt: skip


def test_snapshot_before_anything_reported(redis_client: redis.Redis) -> None:
    snap = read_snapshot(redis_client, RunKeys("empty"), 1.0)
    assert (snap.env_steps, snap.episodes, snap.buffer_depth, snap.clients) == (0, 0, 0, 0)
    assert math.isnan(snap.episode_return_mean)
    redis_client.hset(RunKeys("empty").learner_status, mapping={"episode_return_mean": 0.0, "episodes": 0})
    assert math.isnan(read_snapshot(redis_client, RunKeys("empty"), 2.0).episode_return_mean)


def test_target_needs_a_full_window_of_episodes() -> None:
    assert not target_reached(Snapshot(1.0, episode_return_mean=500.0, episodes=99), 475.0)
    assert target_reached(Snapshot(1.0, episode_return_mean=475.0, episodes=100), 475.0)
    assert not target_reached(Snapshot(1.0, episode_return_mean=474.9, episodes=1000), 475.0)
    assert not target_reached(Snapshot(1.0, episode_return_mean=500.0, episodes=1000), None)


def test_metrics_csv_appends_on_resume_and_continues_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    first = MetricsCsv(path)
    assert first.time_offset_s == 0.0
    first.write(Snapshot(1.0, env_steps=100))
    first.write(Snapshot(2.0, env_steps=250, episode_return_mean=20.0, episodes=3))
    first.close()
    second = MetricsCsv(path)
    assert second.time_offset_s == 2.0
    second.write(Snapshot(3.0, env_steps=400, episode_return_mean=30.0, episodes=5))
    second.close()
    rows = read_metrics(path)
    assert path.read_text().splitlines()[0] == ",".join(Snapshot.columns())
    assert [r["env_steps"] for r in rows] == [100, 250, 400]
    assert math.isnan(rows[0]["episode_return_mean"])
    assert rows[2]["episode_return_mean"] == 30.0


def test_learning_curve_png(tmp_path: Path) -> None:
    csv_path, png = tmp_path / "metrics.csv", tmp_path / "learning_curve.png"
    metrics = MetricsCsv(csv_path)
    metrics.write(Snapshot(1.0))
    metrics.close()
    assert not plot_learning_curve(csv_path, png, "t")  # no return yet: nothing to draw
    assert not png.exists()
    metrics = MetricsCsv(csv_path)
    for i in range(2, 30):
        metrics.write(Snapshot(float(i), env_steps=1000 * i, episode_return_mean=float(i * 10), episodes=i))
    metrics.close()
    assert plot_learning_curve(csv_path, png, "CartPole-v1", target=475.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_tensorboard_missing_is_explained() -> None:
    problem = tensorboard_problem()
    if importlib.util.find_spec("tensorboard") is None:
        assert problem is not None
        assert "pip install 'impala-rl[tensorboard]'" in problem
    else:
        assert problem is None


def test_exit_codes() -> None:
    assert exit_code("target", reached=True, use_target=True) == 0
    assert exit_code("max_seconds", reached=False, use_target=True) == 1
    assert exit_code("interrupted", reached=False, use_target=True) == 130
    assert exit_code("max_env_steps", reached=False, use_target=False) == 0
    assert exit_code("interrupted", reached=False, use_target=False) == 0
    assert exit_code("failed", reached=False, use_target=False) == 1


def test_options_resolve_from_presets_and_the_resumed_run(tmp_path: Path) -> None:
    resolved = resolve(LocalOptions(run_dir=tmp_path / "run"))
    assert (resolved.env, resolved.target) == ("CartPole-v1", 475.0)
    assert resolved.envs_per_client >= 1
    assert resolve(LocalOptions(env="Acrobot-v1")).target == -100.0  # Gymnasium's reward_threshold
    assert resolve(LocalOptions(env="Pendulum-v1")).target is None  # declares none: runs without a target
    assert resolve(LocalOptions(env="Acrobot-v1", use_target=False)).target is None
    with pytest.raises(OptionsError, match="not found"):
        resolve(LocalOptions(resume=tmp_path / "nothing"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"local": {"env": "Acrobot-v1"}, "services": {}}')
    resumed = resolve(LocalOptions(resume=tmp_path / "run", target_return=-100.0))
    assert (resumed.env, resumed.run_dir, resumed.saved) == ("Acrobot-v1", tmp_path / "run", {})
    with pytest.raises(OptionsError, match="cannot resume"):
        resolve(LocalOptions(resume=tmp_path / "run", env="CartPole-v1"))


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="the tensorboard extra is not installed")
def test_tensorboard_event_files_hold_every_column(tmp_path: Path) -> None:
    """What --tensorboard writes reads back with TensorBoard's own reader, against env steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from impala.local.recorder import TensorBoardLog

    board = TensorBoardLog(tmp_path / "tb")
    board.write(Snapshot(1.0, env_steps=100, episode_return_mean=20.0, episodes=3, grad_norm=2.5, learning_rate=4e-4))
    board.write(Snapshot(2.0, env_steps=250, policy_loss=-0.5, value_loss=1.5, entropy_loss=-0.01, grad_norm=3.5))
    board.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"run/policy_loss", "run/value_loss", "run/entropy_loss", "run/grad_norm", "run/learning_rate"} <= tags
    assert {"run/env_steps_per_second", "run/episode_return_mean", "run/clients"} <= tags
    assert [(e.step, e.value) for e in events.Scalars("run/grad_norm")] == [(100, 2.5), (250, 3.5)]
    assert [e.step for e in events.Scalars("run/policy_loss")] == [250]  # NaN before the first update: no point
