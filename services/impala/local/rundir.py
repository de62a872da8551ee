"""The run directory ``runs/<name>/``: its name, ``secrets/`` (the session's tokens, mode 0600, the
only place they are written), ``endpoints.json`` (addresses, PIDs and the token files' paths) and
``config.json`` (every service's exact settings, secrets masked by ``impala.core.settings.public_values``)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from impala.core.settings import public_values

_RUN_NAME = re.compile(r"[^a-zA-Z0-9_.-]+")


def default_run_dir(env: str, root: Path = Path("runs"), now: float | None = None) -> Path:
    """``runs/<env>-<YYYYmmdd-HHMMSS>`` with the env id made filename-safe (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return root / f"{_RUN_NAME.sub('-', env)}-{stamp}"


def run_name(run_dir: Path) -> str:
    """The Redis run name (``ServiceSettings.run``) derived from the directory's name."""
    name = _RUN_NAME.sub("-", run_dir.resolve().name).lstrip("-_.")
    return (name or "local")[:63]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (0600 from creation on), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_private_json(path: Path, doc: dict[str, Any]) -> None:
    """``write_private`` of ``doc`` as indented JSON."""
    write_private(path, json.dumps(doc, indent=2) + "\n")


def write_config(path: Path, local: dict[str, Any], services: dict[str, BaseSettings]) -> None:
    """``config.json``: the local options plus the exact settings each service was started with."""
    doc = {"local": local, "services": {name: public_values(s) for name, s in services.items()}}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def read_config(path: Path) -> dict[str, Any]:
    """A previous run's ``config.json`` (for ``--resume``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} the directory of an impala local run?")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc
