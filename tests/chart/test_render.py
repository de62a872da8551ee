"""The chart renders with every values file, every object passes kubernetes-validate --strict for the
oldest and newest Kubernetes we support, `helm lint --strict` is clean, and default-deny holds."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import pytest

from tests.chart.render import CHART, TOKENS, VALUES_FILES, Manifest, find, load_values, merge, name_of, render

KUBE_VERSIONS = ("1.29.0", "1.33.0")
CRD_GROUP = "monitoring.coreos.com/"  # not in kubernetes-validate's schemas: checked in test_monitoring_objects
OVERLAYS = [("values-dev.yaml", "values-external-redis.yaml"), ("values-gpu.yaml", "values-external-redis.yaml")]

helm_python.disable_logging()  # the SDK logs every `fail` at INFO level
# kubernetes-validate re-reads its multi-MB definitions file on every call; reading it once is 7x faster.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def validate_all(objects: list[Manifest]) -> None:
    for obj in objects:
        if obj["apiVersion"].startswith(CRD_GROUP):
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(
                    f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {err.message} at {list(err.path)}"
                )


def test_values_files_exist() -> None:
    names = {path.name for path in VALUES_FILES}
    assert {"values-dev.yaml", "values-gpu.yaml", "values-external-redis.yaml"} <= names
    assert len(list((CHART / "ci").glob("*.yaml"))) >= 3


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda p: p.name)
def test_values_file_renders_valid_objects(values_file: Path) -> None:
    objects = render(load_values(values_file))
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap"} <= kinds
    validate_all(objects)


@pytest.mark.parametrize(("base", "overlay"), OVERLAYS)
def test_values_overlays_render(base: str, overlay: str) -> None:
    deploy = CHART.parents[1] / "deploy"
    objects = render(load_values(deploy / base), load_values(deploy / overlay))
    assert not list(find(objects, "StatefulSet", name_of("redis")))
    validate_all(objects)


@pytest.mark.parametrize("kube_version", ["v1.27.0", "v1.33.0"])
@pytest.mark.parametrize("values", [TOKENS, {}], ids=["tokens", "defaults"])
def test_helm_lint_strict_is_clean(kube_version: str, values: dict[str, Any]) -> None:
    report = helm_python.lint(str(CHART), values, strict=True, kube_version=kube_version)
    assert report["errors"] == [], report
    assert report["messages"] == [], report


def test_lint_reports_a_broken_values_file() -> None:
    """The lint check can fail: a schema violation is an error."""
    report = helm_python.lint(str(CHART), merge(TOKENS, {"actorpool": {"replicas": "two"}}), strict=True)
    assert any("/actorpool/replicas" in str(err) for err in report["errors"]), report


@pytest.mark.parametrize("component", ["actorpool", "control"])
def test_default_deny_refuses_to_render_without_a_token(component: str) -> None:
    values = {"auth": {name: {"token": "t"} for name in ("actorpool", "control") if name != component}}
    with pytest.raises(helm_python.HelmRenderError, match=rf"auth\.{component}: no bearer token configured"):
        render(values)


def test_insecure_flag_renders_without_tokens_and_says_so() -> None:
    objects = render({"auth": {"insecure": True}})
    for component in ("actorpool", "control"):
        deployment = next(find(objects, "Deployment", name_of(component)))
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env.get("IMPALA_INSECURE") == "true"
        assert "IMPALA_TOKEN_FILE" not in env
    assert not list(find(objects, "Secret", "demo-impala-auth"))


def test_kubernetes_validate_catches_an_invalid_object() -> None:
    """The validation above can fail: a wrong field type is reported."""
    deployment = next(find(render(TOKENS), "Deployment", name_of("control")))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33.0", strict=True)
