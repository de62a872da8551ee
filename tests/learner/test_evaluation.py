"""Periodic evaluation and keep-best: the evaluator over a real tiny env (in this process and in its
child process), ``best.pt`` replaced only by a better score and readable by ``impala eval``, and the
learner on a thread against a real redis-server evaluating, exporting the metrics and keeping best.pt."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from impala.core.checkpoints import best_checkpoint_path, load_checkpoint
from impala.core.models import build_model, spec_for_env
from impala.core.redis_server import RedisServer
from impala.learner.eval_schedule import build_evaluation
from impala.learner.evaluation import EvalConfig, EvalRequest, Evaluator, evaluate
from impala.learner.keep_best import KeepBest
from impala.learner.metrics import LearnerMetrics
from impala.learner.publishing import cpu_snapshot
from impala.learner.settings import LearnerSettings
from impala.tools.evaluate import evaluate_checkpoint
from tests.support import wait_for

from .harness import learner_fields, learner_settings, produce, request_checkpoint, rollout, running, sample, status

BANDIT = "impala.envs:impala/ContextualBandit-v0"  # 32 steps, reward 1 when the action equals the bit shown


def _config(tmp_path: Path, episodes: int = 3) -> EvalConfig:
    return EvalConfig(BANDIT, episodes, 7, spec_for_env(BANDIT, hidden_size=8), tmp_path, {"env": BANDIT})


def test_evaluate_plays_greedy_and_sampled_episodes_and_keeps_the_best(tmp_path: Path) -> None:
    config = _config(tmp_path)
    model = build_model(config.spec)
    keeper = KeepBest(tmp_path, "eval_sampled")
    request = EvalRequest(cpu_snapshot(model), policy_version=3, learner_steps=30, env_steps=240)
    report = evaluate(config, request, model, keeper)
    assert report.greedy_length == report.sampled_length == 32  # whole episodes of the real env
    assert 0 <= report.greedy_return <= 32 and 0 <= report.sampled_return <= 32
    assert report.best and report.best_return == report.sampled_return
    saved = load_checkpoint(best_checkpoint_path(tmp_path))
    assert saved["best"] == {"score": report.sampled_return, "source": "eval_sampled"}
    assert (saved["policy_version"], saved["learner_steps"], saved["env_steps"]) == (3, 30, 240)
    assert len(saved["eval"]["sampled"]) == 3
    # Same weights, same seeds: the same score, which does not replace the file.
    again = evaluate(config, request, model, keeper)
    assert (again.sampled_return, again.best) == (report.sampled_return, False)
    # impala eval plays best.pt like any checkpoint.
    assert evaluate_checkpoint(best_checkpoint_path(tmp_path), None, 2) == 0


def test_keep_best_replaces_only_on_a_higher_score_and_survives_a_restart(tmp_path: Path) -> None:
    keeper = KeepBest(tmp_path, "train_mean")
    assert keeper.offer(10.0, {"model": {}, "tag": "a"})
    assert not keeper.offer(9.0, {"model": {}, "tag": "b"})
    assert not keeper.offer(float("nan"), {"model": {}, "tag": "c"})
    assert keeper.offer(12.5, {"model": {}, "tag": "d"})
    restarted = KeepBest(tmp_path, "train_mean")
    assert restarted.score == 12.5
    assert not restarted.offer(12.0, {"model": {}, "tag": "e"})
    assert load_checkpoint(best_checkpoint_path(tmp_path))["tag"] == "d"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left behind


def test_evaluator_child_process_reports_and_refuses_a_second_evaluation_while_busy(tmp_path: Path) -> None:
    evaluator = Evaluator(_config(tmp_path, episodes=2))
    model = build_model(evaluator.config.spec)
    request = EvalRequest(cpu_snapshot(model), policy_version=1, learner_steps=5, env_steps=40)
    try:
        assert evaluator.submit(request)
        assert not evaluator.submit(request)  # one at a time
        report = wait_for(evaluator.poll, lambda r: r is not None, timeout_s=60)
        assert report is not None and report.learner_steps == 5 and report.greedy_length == 32
        assert best_checkpoint_path(tmp_path).is_file()
        assert evaluator.submit(request)  # free again
        wait_for(evaluator.poll, lambda r: r is not None, timeout_s=60)
    finally:
        evaluator.stop()
    assert evaluator.poll() is None


def test_spec_only_runs_skip_evaluation_with_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"observation": {"shape": [4], "dtype": "float32"}, "action": {"type": "discrete", "n": 2}}')
    fields = learner_fields("redis://127.0.0.1:1/0", tmp_path, env_spec=spec, eval_every_updates=1)
    del fields["env"]  # the spec alone declares the spaces: no Gymnasium env
    settings = LearnerSettings(**fields)
    with caplog.at_level(logging.INFO, logger="impala.learner.eval_schedule"):
        built = build_evaluation(
            settings, spec_for_env("CartPole-v1"), LearnerMetrics.create(CollectorRegistry()), primary=True
        )
    assert built is None
    assert [r.getMessage() for r in caplog.records].count(
        "periodic evaluation skipped: a spec-only run has no Gymnasium env to evaluate in (pass --env ID)"
    ) == 1


def test_learner_evaluates_periodically_exports_metrics_and_keeps_best(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    produce(redis_client, [rollout(returns=(float(i),), seed=i) for i in range(8)])  # 4 updates of B=2
    settings = learner_settings(redis_server.url, tmp_path, eval_every_updates=2, eval_episodes=2)
    with running(settings) as (learner, registry):
        assert sample(registry, "impala_learner_evaluations_total", outcome="done") == 0
        assert registry.get_sample_value("impala_learner_eval_return", {"mode": "greedy"}) is None  # absent
        wait_for(lambda: sample(registry, "impala_learner_evaluations_total", outcome="done"), lambda v: v >= 1, 90)
        fields = wait_for(lambda: status(redis_client), lambda s: "eval_return_sampled" in s)
        greedy = registry.get_sample_value("impala_learner_eval_return", {"mode": "greedy"})
        sampled = registry.get_sample_value("impala_learner_eval_return", {"mode": "sampled"})
        assert greedy is not None and sampled is not None and sampled > 0  # CartPole pays 1 per step
        assert float(fields["eval_return_sampled"]) == sampled
        assert sample(registry, "impala_learner_best_return") == float(fields["best_return"])
    best = load_checkpoint(best_checkpoint_path(tmp_path))
    assert best["best"]["source"] == "eval_sampled" and best["learner_steps"] in (2, 4)
    assert learner.loop.state.learner_steps == 4


def test_without_evaluation_best_pt_follows_the_training_mean_at_checkpoints(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    produce(redis_client, [rollout(returns=(5.0,), seed=i) for i in range(2)])
    settings = learner_settings(redis_server.url, tmp_path, eval_every_updates=0)
    with running(settings) as (_learner, registry):
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 1)
        request_checkpoint(redis_client, "c1")
        wait_for(lambda: best_checkpoint_path(tmp_path).is_file(), bool)
        assert sample(registry, "impala_learner_evaluations_total", outcome="done") == 0
    best = load_checkpoint(best_checkpoint_path(tmp_path))
    assert best["best"] == {"score": 5.0, "source": "train_mean"}
