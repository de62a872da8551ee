"""shared.env_spec: the spec itself in values, rendered into a ConfigMap mounted as a file whose path
the ActorPool and the learner get as IMPALA_ENV_SPEC; a changed spec rolls their pods."""

from __future__ import annotations

from pathlib import Path

import pytest

from impala.core.env_spec import EnvSpec, load_env_spec
from tests.chart.render import TOKENS, container, merge, name_of, one, pod_spec, render

SPEC = {
    "observation": {"shape": [3], "dtype": "float32"},
    "action": {"type": "box", "shape": [1], "low": [-2.0], "high": [2.0]},
}
WORKLOADS = {"actorpool": "Deployment", "learner": "StatefulSet"}


def test_spec_is_a_mounted_file_the_pools_and_learner_read(tmp_path: Path) -> None:
    objects = render(merge(TOKENS, {"shared": {"env_spec": SPEC}}))
    configmap = one(objects, "ConfigMap", name_of("env-spec"))
    path = tmp_path / "spec.json"
    path.write_text(configmap["data"]["spec.json"])
    assert load_env_spec(path) == EnvSpec.from_dict(SPEC)  # the services' own reader accepts it
    checksums = set()
    for component, kind in WORKLOADS.items():
        assert (
            one(objects, "ConfigMap", name_of(component))["data"]["IMPALA_ENV_SPEC"] == "/etc/impala/env-spec/spec.json"
        )
        workload = one(objects, kind, name_of(component))
        mounts = {m["name"]: m["mountPath"] for m in container(workload)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert mounts["env-spec"] == "/etc/impala/env-spec"
        assert volumes["env-spec"]["configMap"]["name"] == configmap["metadata"]["name"]
        checksums.add(workload["spec"]["template"]["metadata"]["annotations"]["checksum/env-spec"])
    other = render(merge(TOKENS, {"shared": {"env_spec": {**SPEC, "observation": {"shape": [4], "dtype": "float32"}}}}))
    changed = one(other, "Deployment", name_of("actorpool"))["spec"]["template"]["metadata"]["annotations"]
    assert len(checksums) == 1 and changed["checksum/env-spec"] not in checksums


def test_without_a_spec_nothing_is_rendered() -> None:
    objects = render(TOKENS)
    assert "IMPALA_ENV_SPEC" not in one(objects, "ConfigMap", name_of("actorpool"))["data"]
    assert not any(o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-env-spec") for o in objects)


def test_a_malformed_spec_is_refused_by_the_schema() -> None:
    with pytest.raises(Exception, match=r"env_spec|action"):
        render(merge(TOKENS, {"shared": {"env_spec": {"observation": {"shape": [3], "dtype": "float32"}}}}))
