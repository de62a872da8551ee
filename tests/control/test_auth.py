"""No route works without the token except the health checks; errors are problem documents."""

from __future__ import annotations

import itertools

import httpx

from tests.control.conftest import ApiFactory
from tests.control.harness import TOKEN

PUBLIC = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _operations(client: httpx.Client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def _call(bare: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    """``bare`` has no default headers, so exactly ``headers`` are sent."""
    path = path.replace("{checkpoint_id}", "abc")
    body = {"replicas": 1} if method == "PUT" else None
    return bare.request(method, path, json=body, headers=headers)


BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"X-Token": TOKEN},
]


def test_every_route_but_health_refuses_a_missing_or_wrong_token(api: httpx.Client) -> None:
    operations = _operations(api)
    protected = [(m, p) for m, p in operations if p not in PUBLIC]
    # Guard against a spec that lost its routes: the test must see every resource.
    assert {p for _, p in protected} >= {
        "/v1/status",
        "/v1/pause",
        "/v1/resume",
        "/v1/checkpoints",
        "/v1/checkpoints/{checkpoint_id}",
        "/v1/actorpool/replicas",
        "/metrics",
    }
    with httpx.Client(base_url=api.base_url) as bare:
        responses = [(m, p, h, _call(bare, m, p, h)) for h, (m, p) in itertools.product(BAD_HEADERS, protected)]
    for method, path, headers, response in responses:
        assert response.status_code == 401, (method, path, headers, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        problem = response.json()
        assert problem["type"] == "urn:impala:problem:unauthorized"
        assert problem["status"] == 401
        assert TOKEN not in response.text


def test_the_right_token_passes_on_every_route(api: httpx.Client) -> None:
    with httpx.Client(base_url=api.base_url) as bare:
        responses = [(m, p, _call(bare, m, p, {"Authorization": f"Bearer {TOKEN}"})) for m, p in _operations(api)]
    for method, path, response in responses:
        assert response.status_code != 401, (method, path, response.text)


def test_health_needs_no_token(api: httpx.Client) -> None:
    assert httpx.get(f"{api.base_url}/healthz").json() == {"status": "ok"}
    # /readyz answers without a token (503 here: no learner yet), never 401.
    assert httpx.get(f"{api.base_url}/readyz").status_code == 503


def test_metrics_can_be_made_public(make_api: ApiFactory) -> None:
    with make_api(metrics_public=True) as client:
        response = httpx.get(f"{client.base_url}/metrics")
        assert response.status_code == 200
        assert "impala_control_requests_total" in response.text
        assert httpx.get(f"{client.base_url}/v1/status").status_code == 401


def test_insecure_mode_without_token_is_open(make_api: ApiFactory) -> None:
    with make_api(token="", insecure=True) as client:
        assert httpx.get(f"{client.base_url}/v1/status").status_code == 200


ERRORS = [
    ("GET", "/nope", None, 404, "not-found"),
    ("DELETE", "/v1/status", None, 405, "method-not-allowed"),
    ("PUT", "/v1/actorpool/replicas", {"replicas": "many"}, 422, "validation"),
    ("PUT", "/v1/actorpool/replicas", {"replicas": 0}, 422, "validation"),
    ("PUT", "/v1/actorpool/replicas", {"replicas": 65}, 422, "validation"),  # over max_actorpool_replicas
    ("PUT", "/v1/actorpool/replicas", None, 422, "validation"),
    ("POST", "/v1/checkpoints?wait=maybe", None, 422, "validation"),
]


def test_errors_are_problem_documents(api: httpx.Client) -> None:
    for method, path, body, status, kind in ERRORS:
        response = api.request(method, path, json=body)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == f"urn:impala:problem:{kind}"
        assert problem["status"] == status
        assert problem["title"]
        assert problem["detail"]
        assert problem["instance"] == path.split("?")[0]
