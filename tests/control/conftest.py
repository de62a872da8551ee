"""Fixtures: the control API served over real HTTP against the real redis-server of ``redis_server``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from impala.control.app import create_app
from impala.control.scaler import Scaler
from impala.control.settings import ControlSettings
from impala.core.redis_server import RedisServer
from tests.control.harness import RUN, TOKEN, serve

ApiFactory = Callable[..., AbstractContextManager[httpx.Client]]


def control_settings(redis_url: str, **overrides: Any) -> ControlSettings:
    return ControlSettings(
        **{
            "run": RUN,
            "redis_url": redis_url,
            "token": TOKEN,
            "learner_timeout_s": 5.0,
            "checkpoint_wait_s": 5.0,
            "redis_timeout_s": 1.0,
            **overrides,
        }
    )


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make sure no test reaches a real cluster: no in-cluster env, a kubeconfig path that does not exist."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    return tmp_path / "no-kubeconfig"


@pytest.fixture
def make_api(redis_server: RedisServer, no_cluster: Path) -> ApiFactory:
    """``with make_api(**settings) as client:`` serves a fresh app; the client sends the token."""

    @contextmanager
    def factory(*, scaler: Scaler | None = None, **overrides: Any) -> Iterator[httpx.Client]:
        settings = control_settings(redis_server.url, **{"kubeconfig": no_cluster, **overrides})
        app = create_app(settings, scaler=scaler, registry=CollectorRegistry())
        with serve(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield client

    return factory


@pytest.fixture
def api(make_api: ApiFactory) -> Iterator[httpx.Client]:
    """The control API with default test settings."""
    with make_api() as client:
        yield client
