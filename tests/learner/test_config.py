"""The one resolver: explicit (argument or IMPALA_* variable) > env preset > default, for every entry point."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from impala.actorpool.settings import ActorPoolSettings
from impala.core.learn import LearnConfig
from impala.core.presets import preset, resolve, sources, target_return
from impala.core.settings import with_presets
from impala.learner.config import learn_config
from impala.learner.settings import LearnerSettings

ATARI = "ALE/Pong-v5"


def test_preset_fills_fields_left_unset() -> None:
    config = learn_config(LearnerSettings(env=ATARI), environ={})
    for name, value in preset(ATARI).overrides.items():
        assert getattr(config, name) == value, name
    assert (config.optimizer, config.loss_reduction, config.unroll_length) == ("rmsprop", "sum", 80)
    assert config.discounting == LearnConfig().discounting  # not in the preset: the default


def test_explicit_argument_beats_the_preset() -> None:
    config = learn_config(LearnerSettings(env=ATARI, learning_rate=1e-4, batch_size=3), environ={})
    assert (config.learning_rate, config.batch_size) == (1e-4, 3)
    assert config.entropy_cost == preset(ATARI).overrides["entropy_cost"]


def test_environment_variable_beats_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPALA_ENTROPY_COST", "0.25")
    monkeypatch.setenv("REDIS_URL", "redis://not-ours:1/0")  # unprefixed variables are not ours
    settings = LearnerSettings(env=ATARI)
    assert settings.redis_url == LearnerSettings.model_fields["redis_url"].default
    assert learn_config(settings).entropy_cost == 0.25


def test_pool_and_learner_resolve_the_same_unroll_length() -> None:
    """The wire's T comes from the same resolver in both, so a pool and a learner started for one env
    without flags agree (before, the pools never read presets and the learner had to ignore them)."""
    for env in (ATARI, "CartPole-v1", "Acrobot-v1"):
        pool = with_presets(ActorPoolSettings(env=env, insecure=True), environ={})
        learner = with_presets(LearnerSettings(env=env), environ={})
        assert pool.unroll_length == learner.unroll_length == learn_config(learner, environ={}).unroll_length
    explicit = with_presets(ActorPoolSettings(env=ATARI, insecure=True, unroll_length=20), environ={})
    assert explicit.unroll_length == 20


def test_env_without_preset_keeps_the_defaults() -> None:
    settings = LearnerSettings(env="Acrobot-v1")
    assert learn_config(settings, environ={}) == LearnConfig.from_settings(settings) == LearnConfig()
    assert LearnConfig.for_env("Acrobot-v1") == LearnConfig()


def test_family_prefix_and_sources() -> None:
    assert preset("ALE/Breakout-v5") is preset(ATARI) and preset("ALE/").name == "torchbeast-atari"
    assert preset("Acrobot-v1").name == "default" and not preset("Acrobot-v1").overrides
    defaults = asdict(LearnConfig())
    effective = resolve(ATARI, {"batch_size": 32}, defaults)
    assert (effective["batch_size"], effective["unroll_length"], effective["discounting"]) == (32, 80, 0.99)
    origin = sources(ATARI, {"batch_size": 32}, defaults)
    assert (origin["batch_size"], origin["unroll_length"], origin["discounting"]) == (
        "user",
        "preset:torchbeast-atari",
        "default",
    )


def test_target_return_is_gymnasiums_reward_threshold() -> None:
    assert target_return("CartPole-v1") == 475.0
    assert target_return("Acrobot-v1") == -100.0
    assert target_return("Pendulum-v1") is None  # declares no threshold: the run has no target
    assert target_return("no-such-env-v0") is None
