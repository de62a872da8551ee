"""Real parts for the control API tests: uvicorn on a free port in a thread, a thread that plays the
learner's side of the Redis contract, and a small HTTP server standing in for the Kubernetes API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import uvicorn
from fastapi import FastAPI

from impala.core.redis_keys import RunKeys

TOKEN = "control-token-0123456789abcdef"
RUN = "ctltest"
KEYS = RunKeys(RUN)


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, access_log=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def write_learner_status(client: redis.Redis, *, age_s: float = 0.0, **fields: str | float) -> None:
    """Write the learner's status hash as the learner would, with a heartbeat ``age_s`` seconds old."""
    mapping: dict[Any, Any] = {"heartbeat": time.time() - age_s, **fields}
    client.hset(KEYS.learner_status, mapping=mapping)


class FakeLearner(threading.Thread):
    """Plays the learner's side of the checkpoint contract: reads the commands stream, then marks each
    checkpoint ``outcome`` ("done" or "failed") in the checkpoints hash, beating its heartbeat meanwhile."""

    def __init__(self, url: str, outcome: str = "done") -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.outcome = outcome
        self.served: list[str] = []
        self._halt = threading.Event()

    def start(self) -> None:
        """Beat once before the thread runs, so a request made right after ``start()`` finds a live learner."""
        write_learner_status(self.client, learner_step=100)
        super().start()

    def run(self) -> None:
        last = "0"
        while not self._halt.is_set():
            write_learner_status(self.client, learner_step=100 + len(self.served))
            replies: Any = self.client.xread({KEYS.commands: last}, block=50)
            for _, entries in replies or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("cmd") == "checkpoint":
                        self._answer(fields["id"])

    def _answer(self, checkpoint_id: str) -> None:
        record: dict[str, Any] = {"id": checkpoint_id, "status": self.outcome, "created_unix": time.time()}
        if self.outcome == "done":
            record |= {"path": f"/ckpt/{checkpoint_id}.pt", "step": 100 + len(self.served), "bytes": 4096}
        else:
            record["error"] = "disk full"
        self.client.hset(KEYS.checkpoints, checkpoint_id, json.dumps(record))
        self.served.append(checkpoint_id)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.client.close()


def scale_doc(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    """An autoscaling/v1 Scale shaped as the API server returns it."""
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "5d0c1a9e-5b0e-4c2e-9f52-2f0b8d3b7a11",
            "resourceVersion": "48213",
            "creationTimestamp": "2026-01-05T10:12:44Z",
        },
        "spec": {"replicas": replicas},
        "status": {
            "replicas": replicas,
            "selector": "app.kubernetes.io/instance=demo,app.kubernetes.io/component=actorpool",
        },
    }


def status_doc(code: int, reason: str, message: str) -> dict[str, Any]:
    """A meta/v1 Status failure, the body of every API server error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class FakeKubeApi:
    """The deployments/scale subresource of one Deployment, served over real HTTP. ``requests`` records
    (method, path, content type, authorization, JSON body) of each call the client made."""

    namespace: str
    deployment: str
    replicas: int = 2
    forbidden: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    @contextmanager
    def running(self) -> Iterator[FakeKubeApi]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(None)

            def do_PATCH(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self._answer(json.loads(self.rfile.read(length)) if length else None)

            def _answer(self, body: Any) -> None:
                api.requests.append(
                    {
                        "method": self.command,
                        "path": self.path.split("?")[0],
                        "content_type": self.headers.get("Content-Type"),
                        "authorization": self.headers.get("Authorization"),
                        "body": body,
                    }
                )
                code, doc = api.respond(self.command, self.path.split("?")[0], body)
                payload = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    @property
    def scale_path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.deployment}/scale"

    def respond(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        if path != self.scale_path:
            return 404, status_doc(404, "NotFound", 'deployments.apps "x" not found')
        if self.forbidden:
            message = f'deployments.apps "{self.deployment}" is forbidden: cannot {method.lower()} resource "deployments/scale"'
            return 403, status_doc(403, "Forbidden", message)
        if method == "PATCH":
            self.replicas = int(body["spec"]["replicas"])
        return 200, scale_doc(self.deployment, self.namespace, self.replicas)

    def write_kubeconfig(self, path: Path, *, namespace: str | None = None) -> Path:
        """A kubeconfig whose current context points at this server (JSON is valid YAML)."""
        context: dict[str, Any] = {"cluster": "fake", "user": "fake"}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "kube-sa-token-xyz"}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(doc))
        return path
