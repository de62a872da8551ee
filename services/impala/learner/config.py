"""Hyperparameters of a learner: its settings, with the env's preset filling what the user left unset.

Precedence, per field: an explicit value (``--flag``, ``IMPALA_FIELD`` or a constructor argument) >
the preset of ``settings.env`` (``impala.core.presets``) > the torchbeast default of the field.

``unroll_length`` is the exception: it is part of the wire contract with the ActorPools (each rollout
holds T steps, and rollouts of another T are refused as corrupt), and the pools do not read presets,
so the learner takes it from its own setting only. ``impala local`` and the Helm chart pass the same
T to both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from pydantic_settings import BaseSettings

from impala.core.learn import LearnConfig
from impala.core.presets import preset
from impala.learner.settings import LearnerSettings

log = logging.getLogger(__name__)

WIRE_FIELDS = frozenset({"unroll_length"})


def explicit_fields(settings: BaseSettings, environ: Mapping[str, str] | None = None) -> set[str]:
    """Fields given as arguments (CLI flags end up here) or as ``IMPALA_*`` environment variables."""
    environ = os.environ if environ is None else environ
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    from_env = {key.upper() for key in environ}
    return set(settings.model_fields_set) | {
        name for name in type(settings).model_fields if f"{prefix}{name.upper()}" in from_env
    }


def learn_config(settings: LearnerSettings, environ: Mapping[str, str] | None = None) -> LearnConfig:
    """The LearnConfig of ``settings`` after applying the env's preset to fields not set explicitly."""
    explicit = explicit_fields(settings, environ)
    values: dict[str, Any] = {f.name: getattr(settings, f.name) for f in fields(LearnConfig)}
    applied = {
        name: value
        for name, value in preset(settings.env_id() or "").learn.items()
        if name in values and name not in explicit and name not in WIRE_FIELDS
    }
    if applied:
        log.info("env preset applied", extra={"env": settings.env, "fields": applied})
    return LearnConfig(**{**values, **applied})
