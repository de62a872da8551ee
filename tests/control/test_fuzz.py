"""Schema-driven fuzzing (schemathesis) of the control API's OpenAPI spec over real HTTP: no input,
valid or not, gets a 5xx other than a documented 503, and every response matches the spec.

(schemathesis' pytest plugin does not run under pytest 9, so the test drives its strategies itself.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from prometheus_client import CollectorRegistry

from impala.control.app import create_app
from impala.core.redis_server import RedisServer
from tests.control.conftest import control_settings
from tests.control.harness import TOKEN, FakeKubeApi, FakeLearner, serve

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    """Everything the API talks to, for real: Redis, a learner answering checkpoint commands, and a
    Kubernetes API server answering deployments/scale."""
    tmp = tmp_path_factory.mktemp("fuzz")
    redis_server = RedisServer(workdir=tmp / "redis").start()
    learner = FakeLearner(redis_server.url)
    learner.start()
    try:
        with FakeKubeApi("rl", "impala-actorpool").running() as kube:
            app_settings = control_settings(
                redis_server.url,
                kubeconfig=kube.write_kubeconfig(tmp / "kubeconfig", namespace="rl"),
                learner_timeout_s=30.0,
                max_actorpool_replicas=8,
            )
            with serve(create_app(app_settings, registry=CollectorRegistry())) as url:
                yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    finally:
        learner.stop()
        redis_server.stop()


def _fuzz(operation: schemathesis.APIOperation[Any, Any, Any, Any], mode: schemathesis.GenerationMode) -> Counter[int]:
    seen: Counter[int] = Counter()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call(headers=AUTH, timeout=30)
        seen[response.status_code] += 1
        documented = set(operation.definition.raw["responses"])
        assert response.status_code < 500 or (response.status_code == 503 and "503" in documented), (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
        )
        if mode is schemathesis.GenerationMode.POSITIVE:
            case.validate_response(response, headers=AUTH)

    try:
        check()
    except Unsatisfiable:
        # Nothing to make invalid: the operation takes no parameters (e.g. /healthz in negative mode).
        assert mode is schemathesis.GenerationMode.NEGATIVE
    return seen


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_fuzzing_finds_no_server_errors(
    api_schema: schemathesis.BaseSchema,
    mode: schemathesis.GenerationMode,
    record_property: Callable[[str, object], None],
) -> None:
    statuses: dict[str, Counter[int]] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid spec raises here, failing the test
        statuses[operation.label] = _fuzz(operation, mode)
    record_property("statuses", {label: dict(seen) for label, seen in statuses.items()})
    assert len(statuses) == 11
    if mode is schemathesis.GenerationMode.POSITIVE:
        # Valid inputs with the token get past auth everywhere: the fuzzing reached the handlers.
        assert all(set(seen) - {401} for seen in statuses.values()), statuses
    else:
        # Invalid inputs were generated and refused as invalid, not as server errors.
        assert sum(seen[422] for seen in statuses.values()) > 0, statuses
