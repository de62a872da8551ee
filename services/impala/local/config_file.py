"""``impala local --config FILE`` and the hyperparameter flags: which fields a user may set, and from where.

A config file has the keys of a run's ``config.json`` (JSON or YAML): a ``local`` section with the
options of ``impala local`` and a ``services`` section with each service's settings. So
``impala local --config runs/<name>/config.json`` starts a run configured exactly as ``<name>`` was;
a hand-written file sets a few of the same keys. Per-session fields (ports, addresses, tokens, paths,
names) are never read from a file, and masked secrets never become values. Flags win over the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.core.settings import MASK
from impala.learner.settings import LearnerSettings
from impala.local.plan import SESSION_FIELDS

# The services whose hyperparameters ``impala local`` exposes, under their config.json names.
TUNED_SERVICES: dict[str, type[BaseSettings]] = {"learner": LearnerSettings, "actorpool": ActorPoolSettings}
# Not hyperparameters: the plan's per-session fields (deployment wiring among them), the run's spaces
# (impala local's own --env / --env-spec) and the heartbeat period the live display reads.
_WIRING = SESSION_FIELDS | {"env", "env_spec", "status_interval_s"}
# Options of ``impala local`` that a file may set (run_dir and resume belong to one invocation).
LOCAL_KEYS = frozenset(
    {"env", "clients", "envs_per_client", "pools", "target_return", "use_target", "max_seconds", "max_env_steps",
     "seed", "tensorboard", "startup_timeout_s"}
)  # fmt: skip


class ConfigFileError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def hyperparameter_fields() -> dict[str, tuple[str, ...]]:
    """Field name → the tuned services that have it (a flag applies to each), in declaration order."""
    fields: dict[str, tuple[str, ...]] = {}
    for service, cls in TUNED_SERVICES.items():
        for name in cls.model_fields:
            if name not in _WIRING:
                fields[name] = (*fields.get(name, ()), service)
    return fields


def split_by_service(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flag values keyed by field → per-service overrides (``{"learner": {...}, "actorpool": {...}}``)."""
    owners = hyperparameter_fields()
    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        for service in owners[name]:
            out.setdefault(service, {})[name] = value
    return out


def load(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(local options, per-service overrides) from a config file; see the module docstring."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigFileError(f"--config {path}: {err.strerror or err}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigFileError(
            f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}"
        ) from None
    if not isinstance(doc, dict) or not set(doc) <= {"local", "services"}:
        raise ConfigFileError(f"--config {path}: expected a mapping with 'local' and/or 'services' sections")
    local = _section(path, doc, "local")
    unknown = sorted(set(local) - LOCAL_KEYS - {"run_dir", "resume", "live"})
    if unknown:
        raise ConfigFileError(f"--config {path}: unknown key(s) in 'local': {', '.join(unknown)}")
    services = _section(path, doc, "services")
    overrides: dict[str, dict[str, Any]] = {}
    for service, cls in TUNED_SERVICES.items():
        # config.json names pools actorpool-0, actorpool-1, ...: they share one configuration.
        saved = services.get(service) or services.get(f"{service}-0") or {}
        if not isinstance(saved, dict):
            raise ConfigFileError(f"--config {path}: services.{service} must be a mapping")
        unknown = sorted(set(saved) - set(cls.model_fields))
        if unknown:
            raise ConfigFileError(f"--config {path}: unknown field(s) of {service}: {', '.join(unknown)}")
        kept = {k: v for k, v in saved.items() if k not in _WIRING and v != MASK}
        if kept:
            overrides[service] = kept
    return {k: v for k, v in local.items() if k in LOCAL_KEYS}, overrides


def _section(path: Path, doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigFileError(f"--config {path}: '{name}' must be a mapping")
    return section
