"""The rendered chart, run: the proof that ``helm install`` wiring works without a cluster.

The chart is rendered with Helm's own code (helm-python-sdk) as ``helm install impala ./helm/impala -n
impala`` renders it, for the default values and for ``deploy/values-dev.yaml`` (its table in
deploy/README.md asks a user to create no Secret first, so there are no Secret fixtures to make). Every
rendered workload then runs as a real process "pod" in its own network namespace, started by a stand-in
for the **kubelet only** (``kubelet.py``: its docstring lists what it does and does not stand in for):
Services resolve through each pod's hosts file, ConfigMaps and Secrets are files at their mountPaths
(bind mounts over an overlay of this machine's root, so command, args and env stay exactly as rendered)
and env vars, the command is the rendered one on the Dockerfile target's ENTRYPOINT, this repository's
.venv is the images' /opt/venv and the system's redis-server is the redis image's. The startup,
readiness and liveness probes must pass against the running processes (and fail once a process is
stopped), and the ``helm test`` pods must exit 0.

Then a user's env client: the NOTES.txt lines run verbatim in bash, in a namespace of their own, with a
``kubectl`` stand-in (``kubectl.py``) answering from the materialised Secrets and Services (a
LoadBalancer's address is a TCP forwarder's, round robin over the pool's pods, standing in for the cloud
balancer). It dials the ActorPool Service over TLS with the token and CA it wrote to files, and the
control API's status is read with the header file NOTES make, through ``kubectl port-forward``.

With the default values the run trains CartPole-v1 until the mean return of the last 100 episodes is
475; with values-dev.yaml (same services, other wiring: NodePort, one pool, CPU learner) it stops once
the learner has counted a few hundred env steps, which keeps CI's time in bounds. The render-and-
validate-only part for the GPU and external-Redis files is ``tests/chart/test_render.py``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chart.render import ROOT, load_values, parse, render_templates
from tests.cluster.kubelet import BASE_PATH, HERE, VENV, Cluster, Pod, install_kubectl

RELEASE = NAMESPACE = "impala"  # README: helm install impala ./helm/impala -n impala --create-namespace
TARGET, WINDOW = 475.0, 100
RUNS = [pytest.param(None, True, id="default-values"), pytest.param("values-dev.yaml", False, id="values-dev")]


def netns_works() -> bool:
    if shutil.which("ip") is None:
        return False
    name = f"probe{secrets.token_hex(3)}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False).returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return True


pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def cluster_workdir(tmp_path: Path) -> Path:
    if os.geteuid() != 0 or not netns_works():
        pytest.skip("needs root and `ip netns` (CI runs as root)")
    return tmp_path


def notes_steps(notes: str) -> dict[int, list[str]]:
    """The shell lines of each numbered step of NOTES.txt (indented by three spaces)."""
    steps: dict[int, list[str]] = {}
    current = 0
    for line in notes.splitlines():
        if match := re.match(r"(\d+)\. ", line):
            current = int(match.group(1))
        elif line.startswith("   ") and current:
            steps.setdefault(current, []).append(line[3:])
    return steps


def status(url: str, header_file: Path) -> dict[str, Any]:
    name, value = header_file.read_text().strip().split(": ", 1)
    reply = httpx.get(url, headers={name: value}, timeout=10)
    reply.raise_for_status()
    body: dict[str, Any] = reply.json()
    return body


def stop_and_check_probes_fail(cluster: Cluster) -> None:
    """The probe checks can fail: once a pod's process is stopped, its probes do. Stopped as the kubelet
    does: SIGTERM, then SIGKILL after the pod's ``terminationGracePeriodSeconds`` (a pool's drain within
    its grace is tested in tests/actorpool/test_drain_process.py; one that overruns here is reported)."""
    for pod in cluster.pods:
        assert pod.process is not None
        pod.process.terminate()
        grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
        try:
            pod.process.wait(grace + 5)
        except subprocess.TimeoutExpired:
            print(f"\n{pod.name} overran its {grace:.0f} s grace after SIGTERM; killed. Its log:\n{cluster.log(pod)}")
            pod.process.kill()
            pod.process.wait(30)
        for kind in ("readinessProbe", "livenessProbe"):
            if kind in pod.container:
                assert not cluster.probe(pod, pod.container[kind]), f"{pod.name} {kind} passes with no process"


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(("values_file", "train"), RUNS)
def test_rendered_chart_runs_and_trains(
    values_file: str | None, train: bool, cluster_workdir: Path, request: pytest.FixtureRequest
) -> None:
    layers = [load_values(ROOT / "deploy" / values_file)] if values_file else []
    templates = render_templates(*layers, name=RELEASE, namespace=NAMESPACE)
    cluster = Cluster(parse(templates), NAMESPACE, cluster_workdir / "pods", secrets.token_hex(2))
    request.addfinalizer(cluster.down)
    cluster.up()
    for pod in cluster.pods:
        cluster.start(pod)
    cluster.wait_probes(cluster.pods, deadline_s=600)

    for pod in cluster.test_pods:  # helm test
        cluster.start(pod)
        assert pod.process is not None and pod.process.wait(120) == 0, f"helm test {pod.name}:\n{cluster.log(pod)}"

    pool = cluster.get("Service", f"{RELEASE}-actorpool", NAMESPACE)
    lb = Pod("cloud-lb", NAMESPACE, {}, {})
    lb.netns, lb.ip = cluster.add_netns(lb.name)
    if pool["spec"]["type"] == "LoadBalancer":
        port = str(pool["spec"]["ports"][0]["port"])
        backends = [f"{p.ip}:{port}" for p in cluster.endpoints(pool)]
        proxy = [sys.executable, str(HERE / "proxy.py"), lb.ip, port, *backends]
        cluster.procs.append(subprocess.Popen(["ip", "netns", "exec", lb.netns, *proxy], start_new_session=True))

    home = cluster_workdir / "user"
    (home / "bin").mkdir(parents=True)
    install_kubectl(cluster, home / "bin", lb.ip)
    user = Pod("user", NAMESPACE, {}, {})
    user.netns, user.ip = cluster.add_netns(user.name)
    env = {"PATH": f"{home / 'bin'}:{VENV / 'bin'}:{BASE_PATH}", "HOME": str(home)}
    steps = notes_steps(templates["impala/templates/NOTES.txt"])
    assert steps[3][0].startswith("impala env "), steps
    client = "\n".join([*steps[1], *steps[2], "exec " + steps[3][0]])
    cluster.launch(
        user, ["bash", "-euo", "pipefail", "-c", client], env, [(str(home), str(home), False)], cwd=str(home)
    )
    forward, header, curl = steps[4]
    control = "\n".join([forward, header, f"for _ in $(seq 60); do {curl} > status.json && break; sleep 1; done"])
    control_proc = cluster.launch(
        Pod("user-control", NAMESPACE, {}, {}, ip=user.ip, netns=user.netns),
        ["bash", "-euo", "pipefail", "-c", control],
        env,
        [(str(home), str(home), False)],
        cwd=str(home),
    )
    assert control_proc.wait(120) == 0, cluster.log(Pod("user-control", NAMESPACE, {}, {}))
    assert f'"run":"{RELEASE}"' in (home / "status.json").read_text()

    control_pod = next(p for p in cluster.pods if p.name.startswith(f"{RELEASE}-control-"))
    url, last = f"http://{control_pod.ip}:{control_pod.port('http')}/v1/status", {}
    deadline = time.monotonic() + (900 if train else 300)  # a hang guard, not a timing claim
    while True:
        assert user.process is not None and user.process.poll() is None, f"env client exited:\n{cluster.log(user)}"
        last = status(url, home / "impala-control-header")
        episodes, mean = last.get("episodes") or 0, last.get("episode_return_mean") or 0.0
        if (train and episodes >= WINDOW and mean >= TARGET) or (not train and (last.get("env_steps") or 0) >= 500):
            break
        assert time.monotonic() < deadline, f"not reached; last status {last}\nclient:\n{cluster.log(user)}"
        time.sleep(2.0)
    print(f"\n{values_file or 'default values'}: env_steps={last['env_steps']} episodes={last['episodes']} "
          f"return_mean={last['episode_return_mean']} clients={last['clients']}")  # fmt: skip
    stop_and_check_probes_fail(cluster)
