"""The chart renders with every values file, every object passes kubernetes-validate --strict for the
oldest and newest Kubernetes we support, `helm lint --strict` is clean, and the default install is
secure: generated tokens as files, TLS with a generated CA."""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from cryptography import x509

from tests.chart.render import CHART, TOKENS, VALUES_FILES, Manifest, find, load_values, merge, name_of, one, render

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


def test_default_install_generates_every_token_into_a_secret_mounted_as_files() -> None:
    """`helm install impala ./helm/impala` with no values: tokens generated (kept across upgrades by
    `lookup`), no token in any env var or ConfigMap, every server and client of a token reads a file."""
    objects = render()
    tokens = one(objects, "Secret", "demo-impala-auth")["data"]
    assert set(tokens) == {"actorpool-token", "control-token", "weights-token"}
    secrets = {base64.b64decode(v).decode() for v in tokens.values()}
    assert len(secrets) == 3 and all(len(t) >= 32 for t in secrets)
    for obj in objects:
        text = yaml.safe_dump(obj)
        if obj["kind"] != "Secret":
            assert not any(t in text for t in secrets), f"a token leaks into {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "ConfigMap":
            assert not any("TOKEN" in key and not key.endswith("_FILE") for key in obj.get("data", {})), obj
    files = {
        "actorpool": {"IMPALA_TOKEN_FILE", "IMPALA_WEIGHTS_TOKEN_FILE"},
        "control": {"IMPALA_TOKEN_FILE"},
        "weights": {"IMPALA_TOKEN_FILE"},
        "learner": {"IMPALA_WEIGHTS_TOKEN_FILE"},
    }
    for component, names in files.items():
        kind = "StatefulSet" if component == "learner" else "Deployment"
        box = next(find(objects, kind, name_of(component)))["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in box["env"]}
        mounts = {m["mountPath"] for m in box["volumeMounts"]}
        for name in names:
            assert env[name]["value"].rsplit("/", 1)[0] in mounts, (component, name)
        assert not any("TOKEN" in n and not n.endswith("_FILE") for n in env), (component, sorted(env))
        assert "IMPALA_INSECURE" not in env


def test_public_service_carries_tls_with_a_generated_ca_by_default() -> None:
    objects = render()
    pair = one(objects, "Secret", "demo-impala-actorpool-tls")
    assert pair["type"] == "kubernetes.io/tls" and {"tls.crt", "tls.key", "ca.crt"} <= set(pair["data"])
    ca = x509.load_pem_x509_certificate(base64.b64decode(pair["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(pair["data"]["tls.crt"]))
    assert cert.issuer == ca.subject
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {name_of("actorpool"), f"{name_of('actorpool')}.rl.svc"} <= set(names)
    config = one(objects, "ConfigMap", name_of("actorpool"))["data"]
    assert config["IMPALA_TLS_CERT"] == "/var/run/secrets/impala/tls/tls.crt"
    service = one(objects, "Service", name_of("actorpool"))
    assert service["spec"]["type"] == "LoadBalancer" and "appProtocol" not in service["spec"]["ports"][0]


def test_tls_from_cert_manager_or_an_existing_secret() -> None:
    issued = render(
        {
            "actorpool": {
                "tls": {
                    "certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}},
                    "dnsNames": ["rl.example.com"],
                }
            }
        }
    )
    certificate = one(issued, "Certificate", name_of("actorpool"))
    assert certificate["spec"]["secretName"] == "demo-impala-actorpool-tls"
    assert "rl.example.com" in certificate["spec"]["dnsNames"]
    assert not list(find(issued, "Secret", "demo-impala-actorpool-tls"))
    own = render({"actorpool": {"tls": {"existingSecret": "mine"}}})
    assert not list(find(own, "Secret", "demo-impala-actorpool-tls")) and not list(find(own, "Certificate"))
    volumes = next(find(own, "Deployment", name_of("actorpool")))["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "mine"}} in volumes


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
