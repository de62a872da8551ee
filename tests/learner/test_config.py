"""Hyperparameter precedence: explicit (argument or IMPALA_* variable) > env preset > default."""

from __future__ import annotations

import pytest

from impala.core.learn import LearnConfig
from impala.core.presets import preset
from impala.learner.config import learn_config
from impala.learner.settings import LearnerSettings


def test_preset_fills_fields_left_unset() -> None:
    config = learn_config(LearnerSettings(env="CartPole-v1"), environ={})
    for name, value in preset("CartPole-v1").learn.items():
        if name != "unroll_length":
            assert getattr(config, name) == value, name
    assert config.rmsprop_alpha == LearnConfig().rmsprop_alpha  # not in the preset: the default


def test_explicit_argument_beats_the_preset() -> None:
    config = learn_config(LearnerSettings(env="CartPole-v1", learning_rate=1e-4, batch_size=3), environ={})
    assert (config.learning_rate, config.batch_size) == (1e-4, 3)
    assert config.entropy_cost == preset("CartPole-v1").learn["entropy_cost"]


def test_environment_variable_beats_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPALA_ENTROPY_COST", "0.25")
    monkeypatch.setenv("REDIS_URL", "redis://not-ours:1/0")  # unprefixed variables are not ours
    settings = LearnerSettings(env="CartPole-v1")
    assert settings.redis_url == LearnerSettings.model_fields["redis_url"].default
    assert learn_config(settings).entropy_cost == 0.25


def test_unroll_length_is_never_taken_from_a_preset() -> None:
    # The pools do not read presets; a preset T would make the learner refuse every rollout.
    assert learn_config(LearnerSettings(env="CartPole-v1"), environ={}).unroll_length == 80
    assert learn_config(LearnerSettings(env="CartPole-v1", unroll_length=20), environ={}).unroll_length == 20


def test_env_without_preset_keeps_the_defaults() -> None:
    settings = LearnerSettings(env="Acrobot-v1")
    assert learn_config(settings, environ={}) == LearnConfig.from_settings(settings)
