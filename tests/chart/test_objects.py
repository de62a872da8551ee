"""Assertions on the rendered objects: what each component needs to work on a real cluster."""

from __future__ import annotations

from typing import Any

import pytest

from impala.actorpool.settings import ActorPoolSettings
from tests.chart.render import (
    CHART,
    TOKENS,
    Manifest,
    container,
    find,
    load_values,
    merge,
    name_of,
    one,
    pod_spec,
    render,
)

DEV = load_values(CHART.parents[1] / "deploy" / "values-dev.yaml")
FULL = load_values(CHART / "ci" / "full-values.yaml")
WORKLOADS = {"actorpool": "Deployment", "learner": "StatefulSet", "weights": "Deployment", "control": "Deployment"}


@pytest.fixture(scope="module")
def objects() -> list[Manifest]:
    """The chart with no values at all: what `helm install impala ./helm/impala` creates."""
    return render()


def env_of(obj: Manifest) -> dict[str, Any]:
    return {e["name"]: e for e in container(obj).get("env", [])}


GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def test_learner_requests_one_gpu_per_rank_on_any_cloud(objects: list[Manifest]) -> None:
    learner = one(objects, "StatefulSet", name_of("learner"))
    assert container(learner)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container(learner)["image"] == "ghcr.io/impala-rl/impala-cuda:0.1.0"
    spec = pod_spec(learner)
    # No label that exists only with NVIDIA's feature discovery: GKE, EKS and AKS schedule it as is.
    assert "nodeSelector" not in spec
    assert spec["tolerations"] == [GPU_TAINT]
    # Long enough for the final checkpoint after SIGTERM.
    assert spec["terminationGracePeriodSeconds"] >= 120
    mounts = {m["name"]: m["mountPath"] for m in container(learner)["volumeMounts"]}
    claim = learner["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "checkpoints" and mounts["checkpoints"] == "/checkpoints"


def test_learner_has_a_memory_backed_dev_shm_for_its_decode_process() -> None:
    """The decode process's batches live in /dev/shm (ADR 0011); runtimes give containers 64Mi."""
    learner = one(render(merge(TOKENS, {"learner": {"sharedMemorySize": "2Gi"}})), "StatefulSet", name_of("learner"))
    mounts = {m["name"]: m["mountPath"] for m in container(learner)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(learner)["volumes"]}
    assert mounts["shm"] == "/dev/shm"
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}


def test_gpus_per_rank_and_user_tolerations_add_up() -> None:
    extra = {"key": "team", "operator": "Equal", "value": "rl", "effect": "NoSchedule"}
    values = {"learner": {"gpus": 2, "replicas": 2, "tolerations": [extra], "nodeSelector": {"pool": "gpu"}}}
    learner = one(render(values), "StatefulSet", name_of("learner"))
    assert container(learner)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod_spec(learner)["tolerations"] == [extra, GPU_TAINT]
    assert pod_spec(learner)["nodeSelector"] == {"pool": "gpu"}
    cpu = one(render({"learner": {"gpus": 0}}), "StatefulSet", name_of("learner"))
    assert "nvidia.com/gpu" not in container(cpu)["resources"].get("limits", {})
    assert "tolerations" not in pod_spec(cpu)


def test_dev_values_make_the_learner_cpu_only() -> None:
    learner = one(render(DEV), "StatefulSet", name_of("learner"))
    spec = pod_spec(learner)
    assert "nvidia.com/gpu" not in container(learner)["resources"].get("limits", {})
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert container(learner)["image"].startswith("ghcr.io/impala-rl/impala-cpu:")


def test_ingress_service_exposes_grpc_only(objects: list[Manifest]) -> None:
    service = one(objects, "Service", name_of("actorpool"))
    assert service["spec"]["type"] == "LoadBalancer"
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("grpc", 50051, "grpc")]
    pool = one(objects, "Deployment", name_of("actorpool"))
    ports = {p["name"]: p["containerPort"] for p in container(pool)["ports"]}
    assert ports["grpc"] == 50051
    assert service["spec"]["selector"] == pool["spec"]["selector"]["matchLabels"]


def test_weight_service_exposes_grpc_and_the_bulk_data_plane_on_one_number(objects: list[Manifest]) -> None:
    """Subscribers dial the bulk port the service announces: container, Service and setting must agree."""
    service = one(objects, "Service", name_of("weights"))
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("grpc", 50052, "grpc"),
        ("bulk", 50053, "bulk"),
        ("metrics", 9090, "metrics"),
    ]
    ports = {p["name"]: p["containerPort"] for p in container(one(objects, "Deployment", name_of("weights")))["ports"]}
    assert ports == {"grpc": 50052, "bulk": 50053, "metrics": 9090}
    assert one(objects, "ConfigMap", name_of("weights"))["data"]["IMPALA_BULK_PORT"] == "50053"


def test_hpa_targets_the_actorpool(objects: list[Manifest]) -> None:
    hpa = one(objects, "HorizontalPodAutoscaler", name_of("actorpool"))
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name_of("actorpool"),
    }
    assert "replicas" not in one(objects, "Deployment", name_of("actorpool"))["spec"]  # the HPA owns it
    custom = one(render(FULL), "HorizontalPodAutoscaler", name_of("actorpool"))["spec"]["metrics"]
    assert any(m.get("pods", {}).get("metric", {}).get("name") == "impala_actorpool_connected_clients" for m in custom)


def test_probes_use_the_real_health_endpoints(objects: list[Manifest]) -> None:
    pool = container(one(objects, "Deployment", name_of("actorpool")))
    weights = container(one(objects, "Deployment", name_of("weights")))
    control = container(one(objects, "Deployment", name_of("control")))
    plain_pool = container(one(render({"actorpool": {"tls": {"enabled": False}}}), "Deployment", name_of("actorpool")))
    for probe in ("readinessProbe", "livenessProbe"):
        assert plain_pool[probe]["grpc"]["port"] == 50051  # grpc.health.v1.Health of GrpcServer
        assert weights[probe]["grpc"]["port"] == 50052
    assert control["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert control["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Kubelet gRPC probes speak plaintext: with TLS on the pod (the default) the chart probes the TCP port.
    assert "grpc" not in pool["readinessProbe"] and pool["readinessProbe"]["tcpSocket"]["port"] == "grpc"


def test_prestop_and_grace_cover_the_drain(objects: list[Manifest]) -> None:
    pool = one(objects, "Deployment", name_of("actorpool"))
    sleep = int(container(pool)["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = ActorPoolSettings.model_fields["drain_grace_s"].default  # not rendered: the service's default
    assert drain == 10.0, "the chart's grace check assumes 10.0 (actorpool/deployment.yaml)"
    assert "IMPALA_DRAIN_GRACE_S" not in one(objects, "ConfigMap", name_of("actorpool"))["data"]
    assert pod_spec(pool)["terminationGracePeriodSeconds"] >= sleep + drain
    pdb = one(objects, "PodDisruptionBudget", name_of("actorpool"))
    assert pdb["spec"]["selector"] == pool["spec"]["selector"]


def secret_refs(obj: Manifest) -> set[tuple[str, str]]:
    """(secret name, key) pairs a workload reads through env or volumes."""
    refs = set()
    for entry in container(obj).get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs.add((ref["name"], ref["key"]))
    for volume in pod_spec(obj).get("volumes", []):
        secret = volume.get("secret")
        if secret:
            keys = [item["key"] for item in secret.get("items", [])] or ["*"]
            refs.update((secret["secretName"], key) for key in keys)
    return refs


@pytest.mark.parametrize("values", [{}, TOKENS, FULL], ids=["default", "tokens", "full"])
def test_every_secret_is_referenced_and_every_reference_exists(values: dict[str, Any]) -> None:
    objects = render(values)
    refs: set[tuple[str, str]] = set()
    for workload in [*find(objects, "Deployment"), *find(objects, "StatefulSet")]:
        refs |= secret_refs(workload)
    secrets = {s["metadata"]["name"]: set(s["data"]) for s in find(objects, "Secret")}
    for name, keys in secrets.items():
        for key in keys:
            assert (name, key) in refs or (name, "*") in refs, f"Secret {name} key {key} is never used"
    for name, key in refs:
        assert name in secrets, f"reference to missing Secret {name}"
        assert key == "*" or key in secrets[name], f"reference to missing key {name}/{key}"


def test_tokens_reach_the_services_as_files(objects: list[Manifest]) -> None:
    for component in ("actorpool", "control"):
        workload = one(objects, "Deployment", name_of(component))
        assert env_of(workload)["IMPALA_TOKEN_FILE"]["value"] == "/var/run/secrets/impala/token/token"
        assert ("demo-impala-auth", f"{component}-token") in secret_refs(workload)
        assert "IMPALA_TOKEN" not in env_of(workload)  # never the token itself in the pod spec


def test_existing_secrets_are_used_instead_of_chart_secrets() -> None:
    own = {"existingSecret": "impala-auth", "existingSecretKey": "token"}
    objects = render({"auth": dict.fromkeys(("actorpool", "control", "weights"), own)})
    assert not list(find(objects, "Secret", "demo-impala-auth"))
    assert ("impala-auth", "token") in secret_refs(one(objects, "Deployment", name_of("actorpool")))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In/NotIn/Exists expressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        failed = {
            "In": value not in expr.get("values", []),
            "NotIn": value in expr.get("values", []),
            "Exists": value is None,
            "DoesNotExist": value is not None,
        }[op]
        if failed:
            return False
    return True


def selected_components(objects: list[Manifest], selector: dict[str, Any]) -> set[str]:
    """Components whose pod templates the selector matches (helm test pods included)."""
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    pods += [o["metadata"]["labels"] for o in find(objects, "Pod")]
    return {labels["app.kubernetes.io/component"] for labels in pods if selects(selector, labels)}


def test_network_policies_select_the_right_pods(objects: list[Manifest]) -> None:
    policies = {p["metadata"]["name"].removeprefix("demo-impala-"): p["spec"] for p in find(objects, "NetworkPolicy")}
    assert set(policies) == {"actorpool", "learner", "weights", "control", "redis"}
    for component, spec in policies.items():
        assert selected_components(objects, spec["podSelector"]) == {component}
        assert spec["policyTypes"] == ["Ingress"]
    # Env clients reach the pool's gRPC port from anywhere; scrapers reach /metrics; nothing else.
    assert policies["actorpool"]["ingress"][0] == {"ports": [{"port": "grpc", "protocol": "TCP"}]}
    assert [r["ports"][0]["port"] for r in policies["actorpool"]["ingress"]] == ["grpc", "metrics"]
    assert [r["ports"][0]["port"] for r in policies["learner"]["ingress"]] == ["metrics"]
    # Redis only from the four services of this release; the weight service only from learner and pools.
    (redis_rule,) = policies["redis"]["ingress"]
    assert selected_components(objects, redis_rule["from"][0]["podSelector"]) == {
        "actorpool",
        "learner",
        "weights",
        "control",
    }
    weights_rule, bulk_rule, _ = policies["weights"]["ingress"]
    assert weights_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert selected_components(objects, weights_rule["from"][0]["podSelector"]) == {"actorpool", "learner"}
    assert bulk_rule["ports"] == [{"port": "bulk", "protocol": "TCP"}]  # the data plane: pools only
    assert selected_components(objects, bulk_rule["from"][0]["podSelector"]) == {"actorpool"}
    other_release = {"app.kubernetes.io/instance": "other", "app.kubernetes.io/name": "impala"}
    assert not selects(
        redis_rule["from"][0]["podSelector"], {**other_release, "app.kubernetes.io/component": "learner"}
    )
    # The control API: pods of this namespace, the extra peers, scrapers; always on the HTTP port only.
    (control_rule,) = policies["control"]["ingress"]
    assert control_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert control_rule["from"][0] == {"podSelector": {}}
    full = render(FULL)
    extra = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
    assert extra in one(full, "NetworkPolicy", name_of("control"))["spec"]["ingress"][0]["from"]
    cidrs = one(full, "NetworkPolicy", name_of("actorpool"))["spec"]["ingress"][0]["from"]
    assert cidrs == [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "198.51.100.0/24"}}]


def test_control_api_may_only_scale_the_actorpool(objects: list[Manifest]) -> None:
    role = one(objects, "Role", name_of("control"))
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [name_of("actorpool")],
            "verbs": ["get", "patch"],
        }
    ]
    binding = one(objects, "RoleBinding", name_of("control"))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name_of("control"), "namespace": "rl"}]
    control = one(objects, "Deployment", name_of("control"))
    assert pod_spec(control)["serviceAccountName"] == name_of("control")
    config = one(objects, "ConfigMap", name_of("control"))["data"]
    assert config["IMPALA_ACTORPOOL_DEPLOYMENT"] == name_of("actorpool") and config["IMPALA_NAMESPACE"] == "rl"
    for component in ("actorpool", "learner", "weights"):
        assert pod_spec(one(objects, WORKLOADS[component], name_of(component)))["automountServiceAccountToken"] is False


def checksums(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    objects = render(values)
    return {c: one(objects, k, name_of(c))["spec"]["template"]["metadata"]["annotations"] for c, k in WORKLOADS.items()}


def test_config_changes_roll_only_the_changed_component() -> None:
    pinned = merge(TOKENS, {"redis": {"auth": {"password": "fixed"}}})  # a generated password is random
    before = checksums(pinned)
    after = checksums(merge(pinned, {"learner": {"config": {"batch_size": 32}}}))
    for component in WORKLOADS:
        changed = before[component]["checksum/config"] != after[component]["checksum/config"]
        assert changed == (component == "learner"), component
    rotated = checksums(merge(pinned, {"auth": {"control": {"token": "new"}}}))
    assert rotated["control"]["checksum/secrets"] != before["control"]["checksum/secrets"]


def test_redis_persists_with_aof_and_never_evicts(objects: list[Manifest]) -> None:
    redis = one(objects, "StatefulSet", name_of("redis"))
    conf = one(objects, "ConfigMap", name_of("redis"))["data"]["redis.conf"]
    assert "appendonly yes" in conf and "maxmemory-policy noeviction" in conf
    assert container(redis)["resources"]["limits"]["memory"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # The password lives in a mounted file, never in the command line.
    assert "requirepass" not in " ".join(container(redis)["command"])


def test_services_find_redis_through_the_secret_url(objects: list[Manifest]) -> None:
    secret = one(objects, "Secret", name_of("redis"))
    assert {"redis-url", "redis-password", "auth.conf"} <= set(secret["data"])
    for component, kind in WORKLOADS.items():
        ref = env_of(one(objects, kind, name_of(component)))["IMPALA_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": name_of("redis"), "key": "redis-url"}


def test_helm_test_hooks_check_the_real_endpoints(objects: list[Manifest]) -> None:
    tests = {p["metadata"]["name"]: p for p in find(objects, "Pod")}
    grpc_pod = tests["demo-impala-test-actorpool-grpc"]
    http_pod = tests["demo-impala-test-control-healthz"]
    for pod in (grpc_pod, http_pod):
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    grpc_cmd = grpc_pod["spec"]["containers"][0]["command"]
    assert grpc_cmd[0] == "impala-healthcheck" and grpc_cmd[3:5] == ["grpc", f"{name_of('actorpool')}:50051"]
    # TLS by default: the check trusts the CA clients are told to use, and checks the server name.
    assert grpc_cmd[5:] == ["--tls-ca", "/var/run/secrets/impala/tls/ca.crt", "--server-name", name_of("actorpool")]
    assert http_pod["spec"]["containers"][0]["command"][-1] == f"http://{name_of('control')}:8080/healthz"


def test_every_container_runs_as_non_root_with_a_read_only_root(objects: list[Manifest]) -> None:
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert container(obj)["securityContext"]["readOnlyRootFilesystem"] is True, obj["metadata"]["name"]


def test_learner_replicas_are_ranks_of_one_torch_distributed_world() -> None:
    objects = render(merge(TOKENS, {"learner": {"replicas": 3, "rendezvousPort": 29600}}))
    learner = one(objects, "StatefulSet", name_of("learner"))
    assert learner["spec"]["replicas"] == 3
    env = env_of(learner)
    assert env["WORLD_SIZE"]["value"] == "3"
    # The rank is the pod's ordinal; rank 0 is reached through the headless Service, ready or not.
    assert env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["MASTER_ADDR"]["value"] == f"{name_of('learner')}-0.{name_of('learner')}.rl.svc"
    assert env["MASTER_PORT"]["value"] == "29600"
    assert {"name": "rendezvous", "containerPort": 29600, "protocol": "TCP"} in container(learner)["ports"]
    service = one(objects, "Service", name_of("learner"))
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert learner["spec"]["serviceName"] == name_of("learner")
    # Ranks reach each other on any port (gloo/NCCL pick theirs), from learner pods only.
    policy = one(objects, "NetworkPolicy", name_of("learner"))["spec"]
    metrics_rule, peers_rule = policy["ingress"]
    assert metrics_rule["ports"][0]["port"] == "metrics"
    assert "ports" not in peers_rule
    assert selected_components(objects, peers_rule["from"][0]["podSelector"]) == {"learner"}
    # Every rank gets the GPUs of learner.gpus.
    assert container(learner)["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_a_lone_learner_has_no_torch_distributed_variables(objects: list[Manifest]) -> None:
    learner = one(objects, "StatefulSet", name_of("learner"))
    assert not {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"} & set(env_of(learner))
    policy = one(objects, "NetworkPolicy", name_of("learner"))["spec"]
    assert len(policy["ingress"]) == 1
