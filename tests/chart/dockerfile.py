"""docker/Dockerfile read as data: its stages, the instructions a target inherits, its ENTRYPOINT and ENV."""

from __future__ import annotations

import json
import re
import shlex

from tests.chart.render import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (the image or stage it starts FROM, its instruction lines)."""
    out: dict[str, tuple[str, list[str]]] = {}
    current: list[str] = []
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text()).splitlines():
        if match := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = []
            out[match.group(2)] = (match.group(1), current)
        elif line and not line.startswith("#"):
            current.append(line)
    return out


def chain(target: str) -> list[str]:
    """Instructions of a target including the stages it is built FROM (ancestors first)."""
    all_stages = stages()
    parent, lines = all_stages[target]
    return [*(chain(parent) if parent in all_stages else []), *lines]


def exec_form(target: str, instruction: str) -> list[str]:
    """The exec-form ENTRYPOINT or CMD in force for ``target`` (the last one along its FROM chain)."""
    found: list[str] = []
    for line in chain(target):
        if line.startswith(instruction + " "):
            found = json.loads(line.removeprefix(instruction).strip())
    return found


def entrypoint(target: str) -> list[str]:
    return exec_form(target, "ENTRYPOINT")


def image_env(target: str, base_path: str) -> dict[str, str]:
    """The ENV of ``target`` (``KEY=value`` pairs, ``$PATH`` expanded from ``base_path``, the base image's)."""
    env = {"PATH": base_path}
    for line in chain(target):
        if line.startswith("ENV "):
            for pair in shlex.split(line.removeprefix("ENV ")):
                key, value = pair.split("=", 1)
                env[key] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)
    return env


def home_dir(target: str) -> str:
    """The home directory of the image's user (``useradd --home-dir``); ``/`` when it has none."""
    for line in chain(target):
        if match := re.search(r"useradd .*--home-dir (\S+)", line):
            return match.group(1)
    return "/"
