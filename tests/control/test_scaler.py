"""The Kubernetes part, against a real HTTP server that answers the paths the official client calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from impala.control.scaler import NO_CLUSTER, KubernetesScaler, ScalerError, ScalerUnavailableError
from tests.control.conftest import ApiFactory
from tests.control.harness import FakeKubeApi

NAMESPACE, DEPLOYMENT = "rl", "demo-impala-actorpool"


@pytest.fixture
def kube(no_cluster: Path) -> Iterator[FakeKubeApi]:
    with FakeKubeApi(NAMESPACE, DEPLOYMENT).running() as api:
        yield api


def test_get_and_patch_hit_the_scale_subresource(kube: FakeKubeApi, tmp_path: Path) -> None:
    kubeconfig = kube.write_kubeconfig(tmp_path / "config", namespace=NAMESPACE)
    scaler = KubernetesScaler(DEPLOYMENT, kubeconfig=kubeconfig)

    current = asyncio.run(scaler.get())
    assert (current.namespace, current.deployment, current.replicas, current.current) == (NAMESPACE, DEPLOYMENT, 2, 2)
    scaled = asyncio.run(scaler.scale(5))
    assert scaled.replicas == 5

    get, patch = kube.requests
    assert get["method"] == "GET"
    assert get["path"] == f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
    assert get["authorization"] == "Bearer kube-sa-token-xyz"
    assert patch["method"] == "PATCH"
    assert patch["path"] == get["path"]
    assert patch["body"] == {"spec": {"replicas": 5}}
    assert patch["content_type"] == "application/strategic-merge-patch+json"


def test_namespace_setting_wins_over_the_context(kube: FakeKubeApi, tmp_path: Path) -> None:
    kubeconfig = kube.write_kubeconfig(tmp_path / "config", namespace="elsewhere")
    assert asyncio.run(KubernetesScaler(DEPLOYMENT, NAMESPACE, kubeconfig=kubeconfig).get()).replicas == 2
    # Without the setting, the context's namespace is used: no such deployment there.
    with pytest.raises(ScalerError) as missing:
        asyncio.run(KubernetesScaler(DEPLOYMENT, kubeconfig=kubeconfig).get())
    assert missing.value.status == 404
    assert "elsewhere" in missing.value.detail


def test_missing_rbac_is_a_clear_502(kube: FakeKubeApi, tmp_path: Path) -> None:
    kube.forbidden = True
    kubeconfig = kube.write_kubeconfig(tmp_path / "config", namespace=NAMESPACE)
    with pytest.raises(ScalerError) as refused:
        asyncio.run(KubernetesScaler(DEPLOYMENT, kubeconfig=kubeconfig).scale(3))
    assert (refused.value.status, refused.value.kind) == (502, "kubernetes-forbidden")
    assert "deployments/scale" in refused.value.detail


def test_no_cluster_no_kubeconfig(no_cluster: Path) -> None:
    with pytest.raises(ScalerUnavailableError, match=NO_CLUSTER):
        asyncio.run(KubernetesScaler(DEPLOYMENT, kubeconfig=no_cluster).scale(2))


def test_api_scales_through_the_kubernetes_client(make_api: ApiFactory, kube: FakeKubeApi, tmp_path: Path) -> None:
    kubeconfig = kube.write_kubeconfig(tmp_path / "config", namespace=NAMESPACE)
    with make_api(kubeconfig=kubeconfig, actorpool_deployment=DEPLOYMENT, max_actorpool_replicas=8) as api:
        assert api.get("/v1/actorpool/replicas").json()["replicas"] == 2
        response = api.put("/v1/actorpool/replicas", json={"replicas": 8})
        assert response.status_code == 200, response.text
        assert response.json() == {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "replicas": 8, "current": 8}
        assert api.put("/v1/actorpool/replicas", json={"replicas": 9}).status_code == 422
        metrics = api.get("/metrics").text
    assert [r["body"] for r in kube.requests if r["method"] == "PATCH"] == [{"spec": {"replicas": 8}}]
    assert 'impala_control_commands_total{command="scale"} 1.0' in metrics


def test_api_outside_a_cluster_answers_503_problem(api: httpx.Client) -> None:
    for response in (api.put("/v1/actorpool/replicas", json={"replicas": 2}), api.get("/v1/actorpool/replicas")):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "urn:impala:problem:kubernetes-unavailable"
        assert problem["detail"].startswith(NO_CLUSTER)
        assert "Traceback" not in response.text
