"""Scaling the ActorPool Deployment through the Kubernetes API (official ``kubernetes`` client).

Needs RBAC ``get`` and ``patch`` on ``deployments/scale`` for that one Deployment (the chart ships the
Role). Outside a cluster and without a kubeconfig every call raises ``ScalerUnavailableError``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

from impala.control.models import Replicas

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NO_CLUSTER = "not running in a Kubernetes cluster and no kubeconfig found"


class ScalerUnavailableError(Exception):
    """No Kubernetes API to talk to (no cluster, no kubeconfig, or the API server is unreachable)."""


class ScalerError(Exception):
    """The Kubernetes API refused the request; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


class Scaler(Protocol):
    """Reads and sets the replica count of the ActorPool Deployment."""

    async def get(self) -> Replicas: ...

    async def scale(self, replicas: int) -> Replicas: ...


class KubernetesScaler:
    """``Scaler`` backed by the Deployment's ``scale`` subresource.

    The client configuration is loaded on first use (in-cluster service account, else the kubeconfig),
    so the API starts anywhere and only the scale routes answer 503 outside a cluster.
    """

    def __init__(
        self, deployment: str, namespace: str = "", *, kubeconfig: Path | None = None, timeout_s: float = 10.0
    ) -> None:
        self.deployment, self.namespace, self.kubeconfig, self.timeout_s = deployment, namespace, kubeconfig, timeout_s
        self._api: Any = None
        self._lock = threading.Lock()

    async def get(self) -> Replicas:
        return await asyncio.to_thread(self._call, "read_namespaced_deployment_scale")

    async def scale(self, replicas: int) -> Replicas:
        return await asyncio.to_thread(
            self._call, "patch_namespaced_deployment_scale", body={"spec": {"replicas": replicas}}
        )

    def _call(self, method: str, **kwargs: Any) -> Replicas:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        api = self._connect()
        try:
            scale = getattr(api, method)(self.deployment, self.namespace, _request_timeout=self.timeout_s, **kwargs)
        except ApiException as exc:
            raise _api_error(exc, self.namespace, self.deployment) from None
        except HTTPError as exc:
            log.warning("kubernetes API unreachable", extra={"error": type(exc).__name__})
            raise ScalerUnavailableError(f"the Kubernetes API server is unreachable ({type(exc).__name__})") from None
        return Replicas(
            namespace=self.namespace,
            deployment=self.deployment,
            replicas=int(scale.spec.replicas or 0),
            current=None if scale.status is None else scale.status.replicas,
        )

    def _connect(self) -> Any:
        """The AppsV1Api, built once; a failed load is retried on the next call (a kubeconfig may appear)."""
        with self._lock:
            if self._api is None:
                self._api = self._load()
            return self._api

    def _load(self) -> Any:
        # A client configuration of our own: the kubernetes package's global default stays untouched.
        from kubernetes import client
        from kubernetes import config as kube_config

        config: Any = kube_config  # the package is untyped

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
            if not self.namespace and SERVICE_ACCOUNT_NAMESPACE.is_file():
                self.namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
            self.namespace = self.namespace or "default"
        except config.ConfigException:
            kubeconfig = str(self.kubeconfig) if self.kubeconfig else None
            try:
                config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
                if not self.namespace:
                    _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                    self.namespace = active.get("context", {}).get("namespace") or "default"
            except Exception as exc:  # missing, empty or malformed kubeconfig: all mean "no cluster here"
                raise ScalerUnavailableError(f"{NO_CLUSTER} ({type(exc).__name__})") from None
        log.info("kubernetes client ready", extra={"host": configuration.host, "namespace": self.namespace})
        return client.AppsV1Api(client.ApiClient(configuration))


def _api_error(exc: Any, namespace: str, deployment: str) -> ScalerError:
    """Map an ``ApiException`` to what the control API's client should see."""
    where = f"deployment {deployment!r} in namespace {namespace!r}"
    status = int(exc.status or 0)
    log.warning("kubernetes API error", extra={"status": status, "reason": exc.reason, "deployment": deployment})
    if status == 404:
        return ScalerError(404, "deployment-not-found", f"{where} does not exist")
    if status in (401, 403):
        return ScalerError(
            502,
            "kubernetes-forbidden",
            f"the service account may not scale {where}: grant get/patch on deployments/scale",
        )
    if status == 422:
        return ScalerError(422, "validation", f"the Kubernetes API rejected the scale of {where}: {exc.reason}")
    return ScalerError(502, "kubernetes-error", f"the Kubernetes API answered {status} {exc.reason} for {where}")
