"""A kubelet stand-in: the rendered workloads of a chart as real processes, each "pod" in its own network
namespace on a private bridge (its own IP), nothing else of Kubernetes.

What it does, per rendered pod: a netns with a veth onto the bridge; a hosts file naming every Service
(``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``, and a StatefulSet pod's own
``pod.svc.ns.svc``) with the IPs of the pods its selector picks; ConfigMap, Secret, emptyDir and
volumeClaimTemplate volumes as files, bind-mounted at their mountPaths (``subPath`` and ``items``
honoured) over an overlay of this machine's root (``launcher.py``); the env as Kubernetes builds it
(image ENV, Service links, envFrom, env with ``valueFrom`` and ``$(VAR)``); the command as Kubernetes
builds it from the container's ``command``/``args`` and the Dockerfile target's ENTRYPOINT/CMD; the
volumes owned by the pod's fsGroup and its read-only root (not its
user: processes run as root, as this machine's Python lives under /root, mode 0700). Probes run as the kubelet runs them: httpGet, tcpSocket
and grpc against the pod's IP from the node (the root namespace), exec inside the container (nsenter).

Not stood in for: scheduling, resource limits (every pod shares this machine's cores), readiness gating
of Service endpoints (hosts files list every pod), restarts, virtual Service IPs (no iptables here: a
Service's port must equal its pods' port, which is checked; Service link variables carry the first pod's
IP), and a LoadBalancer, for which a TCP forwarder in its own namespace is the "cloud" balancer.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from impala.core.processes import stop_group
from tests.chart.dockerfile import chain, exec_form, home_dir, image_env
from tests.chart.render import ROOT, Manifest

HERE = Path(__file__).parent
VENV = ROOT / ".venv"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMPALA_IMAGE = re.compile(r"/impala-([a-z]+):")
WORKLOADS = ("Deployment", "StatefulSet")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes, unknown names stay as written)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    spec: dict[str, Any]
    ip: str = ""
    netns: str = ""
    subdomain: str = ""
    env: dict[str, str] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.spec["containers"]
        assert len(containers) == 1, f"{self.name}: one container per pod is all this stand-in runs"
        return containers[0]

    def port(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        return int(next(p["containerPort"] for p in self.container.get("ports", []) if p.get("name") == port))


class Cluster:
    """Pods of ``objects`` on a bridge ``10.a.b.0/24``; every name carries ``tag`` so runs never collide."""

    def __init__(self, objects: list[Manifest], namespace: str, workdir: Path, tag: str) -> None:
        for obj in objects:  # helm install -n: objects without a namespace land in the release's
            obj["metadata"].setdefault("namespace", namespace)
        self.objects, self.namespace, self.workdir, self.tag = objects, namespace, workdir, tag
        self.subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        self.bridge, self.netns_names, self.procs = f"br{tag}", list[str](), list[subprocess.Popen[bytes]]()
        self.api = {f"{o['kind']}/{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in objects}
        self.pods = [pod for obj in objects if obj["kind"] in WORKLOADS for pod in self._pods_of(obj)]
        self.test_pods = [self._pod(o, o["metadata"]["name"], o["spec"]) for o in objects if o["kind"] == "Pod"]

    # -- objects ----------------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str) -> Manifest:
        return self.api[f"{kind}/{namespace}/{name}"]

    def data(self, kind: str, name: str, namespace: str) -> dict[str, bytes]:
        """A ConfigMap's or Secret's keys as bytes, as the API server stores them."""
        obj = self.get(kind, name, namespace)
        out = {k: v.encode() for k, v in (obj.get("stringData") or {}).items()}
        decoded = base64.b64decode if kind == "Secret" else str.encode
        out.update({k: decoded(v) for k, v in (obj.get("data") or {}).items()})
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def _pods_of(self, obj: Manifest) -> list[Pod]:
        replicas = obj["spec"].get("replicas", 1)
        for hpa in self.objects:  # an HPA scales its target to minReplicas at once
            if (
                hpa["kind"] == "HorizontalPodAutoscaler"
                and hpa["spec"]["scaleTargetRef"]["name"] == obj["metadata"]["name"]
            ):
                replicas = max(replicas, hpa["spec"].get("minReplicas", 1))
        pods = []
        for index in range(replicas):
            name = f"{obj['metadata']['name']}-{index}"
            pod = self._pod(obj["spec"]["template"], name, obj["spec"]["template"]["spec"])
            if obj["kind"] == "StatefulSet":
                pod.labels |= {"statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": str(index)}
                pod.subdomain = obj["spec"]["serviceName"]
                claims = {c["metadata"]["name"]: {"emptyDir": {}} for c in obj["spec"].get("volumeClaimTemplates", [])}
                pod.spec = {
                    **pod.spec,
                    "volumes": [*pod.spec.get("volumes", []), *({"name": k, **v} for k, v in claims.items())],
                }
            pods.append(pod)
        return pods

    def _pod(self, template: Manifest, name: str, spec: dict[str, Any]) -> Pod:
        return Pod(name, self.namespace, dict(template["metadata"].get("labels", {})), spec)

    def endpoints(self, service: Manifest) -> list[Pod]:
        selector = service["spec"].get("selector") or {}
        return [p for p in self.pods if selector and labels_match(selector, p.labels)]

    def services(self) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == "Service"]

    # -- network ----------------------------------------------------------------------------------
    def up(self) -> None:
        """The bridge (the node's address is .1) and a namespace per pod; then every pod's hosts file."""
        sh("ip", "link", "add", "name", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for pod in [*self.pods, *self.test_pods]:
            pod.netns, pod.ip = self.add_netns(pod.name)
        for service in self.services():
            for port in service["spec"]["ports"]:
                for pod in self.endpoints(service):
                    target = pod.port(port.get("targetPort", port["port"]))
                    assert target == port["port"], (
                        f"{service['metadata']['name']}: port {port['port']} -> {target} needs a DNAT"
                    )

    def add_netns(self, name: str) -> tuple[str, str]:
        index = len(self.netns_names) + 10
        netns, ip = f"{self.tag}-{name}"[:60], f"{self.subnet}.{index}"
        sh("ip", "netns", "add", netns)
        self.netns_names.append(netns)
        sh("ip", "link", "add", f"v{self.tag}{index}", "type", "veth", "peer", "name", "eth0", "netns", netns)
        sh("ip", "link", "set", f"v{self.tag}{index}", "master", self.bridge, "up")
        sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        for dev in ("lo", "eth0"):
            sh("ip", "-n", netns, "link", "set", dev, "up")
        return netns, ip

    def hosts(self, pod_name: str, ip: str) -> str:
        lines = ["127.0.0.1 localhost", f"{ip} {pod_name}"]
        for service in self.services():
            name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
            for pod in self.endpoints(service):
                lines.append(f"{pod.ip} {name} {name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local")
                if pod.subdomain == name:
                    lines.append(f"{pod.ip} {pod.name}.{name}.{ns}.svc {pod.name}.{name}.{ns}.svc.cluster.local")
        return "\n".join(lines) + "\n"

    def down(self) -> None:
        for proc in self.procs:
            stop_group(proc, 10)
        for netns in self.netns_names:
            pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
            for pid in pids:  # what our processes left behind in our namespaces (e.g. a port-forward)
                os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)

    # -- pods -------------------------------------------------------------------------------------
    def start(self, pod: Pod) -> None:
        container, security = pod.container, pod.spec.get("securityContext", {})
        # runAsUser is not applied: this machine's Python lives under /root (0700), the images' does not.
        own, groups = container.get("securityContext", {}), list[int]()
        target = IMPALA_IMAGE.search(container["image"])
        pod.env = self._env(pod, target.group(1) if target else None)
        argv = self._argv(container, pod.env, target.group(1) if target else None)
        binds, tmpfs = self._volumes(pod, security.get("fsGroup"))
        if target:
            binds += [(str(VENV), "/opt/venv", True), *self._copies(target.group(1))]
        self.launch(pod, argv, pod.env, binds, tmpfs, readonly=bool(own.get("readOnlyRootFilesystem")), groups=groups)

    def launch(
        self,
        pod: Pod,
        argv: list[str],
        env: dict[str, str],
        binds: list[tuple[str, str, bool]],
        tmpfs: tuple[str, ...] | list[str] = (),
        readonly: bool = False,
        groups: tuple[int, ...] | list[int] = (),
        cwd: str = "/",
    ) -> subprocess.Popen[bytes]:
        home = self.workdir / pod.name
        home.mkdir(parents=True, exist_ok=True)
        (home / "hosts").write_text(self.hosts(pod.name, pod.ip))
        # The kubelet's resolv.conf (search path, ndots) with no DNS server behind it: names come from hosts.
        search = f"{pod.namespace}.svc.cluster.local svc.cluster.local cluster.local"
        (home / "resolv.conf").write_text(f"search {search}\noptions ndots:5\nnameserver 127.0.0.1\n")
        spec = {
            "hostname": pod.name[:63], "layers": str(home / "layers"), "hosts": str(home / "hosts"),
            "binds": [*binds, (str(home / "resolv.conf"), "/etc/resolv.conf", True)], "tmpfs": list(tmpfs), "image_paths": [str(ROOT)], "readonly_root": readonly, "cwd": cwd,
            "uid": pod.uid, "gid": pod.gid if pod.gid is not None else pod.uid, "groups": list(groups),
            "argv": argv, "env": env,
        }  # fmt: skip
        (home / "spec.json").write_text(json.dumps(spec))
        command = ["ip", "netns", "exec", pod.netns, "unshare", "--uts", sys.executable, str(HERE / "launcher.py")]
        with (home / "log").open("ab") as log:
            proc = subprocess.Popen(
                [*command, str(home / "spec.json")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        pod.process = proc
        return proc

    def log(self, pod: Pod) -> str:
        path = self.workdir / pod.name / "log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _env(self, pod: Pod, target: str | None) -> dict[str, str]:
        """Image ENV < Service links < envFrom < env, as the kubelet and the runtime merge them."""
        env = image_env(target, BASE_PATH) if target else {"PATH": BASE_PATH}
        if target and "/opt/venv/bin" not in env["PATH"].split(":"):  # the CUDA image's own Python: the same venv
            env["PATH"] = "/opt/venv/bin:" + env["PATH"]
        env |= {"HOME": home_dir(target) if target else "/", "HOSTNAME": pod.name}
        if pod.spec.get("enableServiceLinks", True):
            env |= self._service_links()
        container = pod.container
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            for key, value in self.data(kind, ref["name"], pod.namespace).items():
                env[source.get("prefix", "") + key] = value.decode()
        for var in container.get("env", []):
            env[var["name"]] = expand(var["value"], env) if "value" in var else self._value_from(pod, var["valueFrom"])
        return env

    def _service_links(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for service in self.services():
            pods = self.endpoints(service)
            if service["spec"].get("clusterIP") == "None" or not pods:
                continue
            prefix, ports = service["metadata"]["name"].upper().replace("-", "_"), service["spec"]["ports"]
            env |= {f"{prefix}_SERVICE_HOST": pods[0].ip, f"{prefix}_SERVICE_PORT": str(ports[0]["port"])}
            env[f"{prefix}_PORT"] = f"tcp://{pods[0].ip}:{ports[0]['port']}"
            for port in ports:
                proto, where = (
                    port.get("protocol", "TCP"),
                    f"{prefix}_PORT_{port['port']}_{port.get('protocol', 'TCP')}",
                )
                env |= {where: f"{proto.lower()}://{pods[0].ip}:{port['port']}", f"{where}_PROTO": proto.lower()}
                env |= {f"{where}_PORT": str(port["port"]), f"{where}_ADDR": pods[0].ip}
                if "name" in port:
                    env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        return env

    def _value_from(self, pod: Pod, source: dict[str, Any]) -> str:
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            ref = source["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
            return self.data(kind, ref["name"], pod.namespace)[ref["key"]].decode()
        path = source["fieldRef"]["fieldPath"]
        fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "status.podIP": pod.ip}
        fields |= {"spec.nodeName": "node", "status.hostIP": f"{self.subnet}.1"}
        if label := re.fullmatch(r"metadata\.labels\['(.+)'\]", path):
            return pod.labels[label.group(1)]
        return fields[path]

    def _argv(self, container: dict[str, Any], env: dict[str, str], target: str | None) -> list[str]:
        """Kubernetes' rule: ``command`` replaces ENTRYPOINT (and drops CMD); ``args`` replaces CMD."""
        if "command" in container:
            argv = [*container["command"], *container.get("args", [])]
        else:
            assert target, f"{container['image']}: not a Dockerfile target, so its ENTRYPOINT is unknown here"
            argv = [*exec_form(target, "ENTRYPOINT"), *container.get("args", exec_form(target, "CMD"))]
        return [expand(arg, env) for arg in argv]

    def _copies(self, target: str) -> list[tuple[str, str, bool]]:
        """The image's files from this repository (``COPY`` of a source path into the final stage)."""
        out = []
        for line in chain(target):
            if line.startswith("COPY ") and "--from=" not in line and "helm/impala/files/" in line:
                source, destination = [w for w in line.split()[1:] if not w.startswith("--")]
                out.append((str(ROOT / source), destination, True))
        return out

    def _volumes(self, pod: Pod, fs_group: int | None) -> tuple[list[tuple[str, str, bool]], list[str]]:
        """Each volume as a directory of files (owned by fsGroup as the kubelet does); the mounts."""
        sources: dict[str, Path | None] = {}
        for volume in pod.spec.get("volumes", []):
            path = self.workdir / pod.name / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in volume:  # world-writable, as the kubelet makes it; the fsGroup's with one
                sources[volume["name"]] = None if volume["emptyDir"].get("medium") == "Memory" else path
                os.chown(path, 0, fs_group if fs_group is not None else 0)
                path.chmod(0o2777 if fs_group is not None else 0o777)
                continue
            kind = "Secret" if "secret" in volume else "ConfigMap"
            source = volume.get("secret") or volume["configMap"]
            data = self.data(kind, source.get("secretName") or source["name"], pod.namespace)
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                file = path / item["path"]
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(data[item["key"]])
                file.chmod(item.get("mode", source.get("defaultMode", 0o644)))
                if fs_group is not None:
                    os.chown(file, 0, fs_group)
            sources[volume["name"]] = path
            if fs_group is not None:
                os.chown(path, 0, fs_group)
                path.chmod(0o2775)
        binds, tmpfs = [], []
        for mount in pod.container.get("volumeMounts", []):
            source = sources[mount["name"]]
            if source is None:
                tmpfs.append(mount["mountPath"])
                continue
            binds.append(
                (str(source / mount.get("subPath", "")).rstrip("/"), mount["mountPath"], bool(mount.get("readOnly")))
            )
        return binds, tmpfs

    # -- probes -----------------------------------------------------------------------------------
    def probe(self, pod: Pod, probe: dict[str, Any]) -> bool:
        """One attempt of ``probe``, as the kubelet makes it; True on success."""
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"{get.get('scheme', 'HTTP').lower()}://{get.get('host', pod.ip)}:{pod.port(get['port'])}{get.get('path', '/')}"
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
                return 200 <= httpx.get(url, headers=headers, timeout=timeout, verify=False).status_code < 400
            if "tcpSocket" in probe:
                socket.create_connection((pod.ip, pod.port(probe["tcpSocket"]["port"])), timeout).close()
                return True
            if "grpc" in probe:
                with grpc.insecure_channel(f"{pod.ip}:{probe['grpc']['port']}") as channel:
                    request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
                    reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
                    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            assert pod.process is not None
            user = (
                ["-S", str(pod.uid), "-G", str(pod.gid if pod.gid is not None else pod.uid)]
                if pod.uid is not None
                else []
            )
            argv = [
                "nsenter",
                "-t",
                str(pod.process.pid),
                "-m",
                "-n",
                "-r",
                "-w",
                *user,
                "--",
                *probe["exec"]["command"],
            ]
            return subprocess.run(argv, env=pod.env, capture_output=True, timeout=timeout, check=False).returncode == 0
        except (OSError, httpx.HTTPError, grpc.RpcError, subprocess.TimeoutExpired):
            return False

    def wait_probes(self, pods: list[Pod], deadline_s: float) -> None:
        """Until each pod's startup, readiness and liveness probes pass (startup first, as the kubelet
        orders them); a pod whose process exits fails at once with its log."""
        deadline = time.monotonic() + deadline_s
        pending = {
            (pod.name, kind): pod for pod in pods for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        pending = {key: pod for key, pod in pending.items() if key[1] in pod.container}
        while pending:
            for (name, kind), pod in list(pending.items()):
                assert pod.process is not None and pod.process.poll() is None, f"{name} exited:\n{self.log(pod)}"
                if kind != "startupProbe" and (name, "startupProbe") in pending:
                    continue
                if self.probe(pod, pod.container[kind]):
                    del pending[(name, kind)]
            assert time.monotonic() < deadline, f"probes still failing: {sorted(pending)}"
            time.sleep(1.0)


def install_kubectl(cluster: Cluster, bindir: Path, lb_ip: str) -> Path:
    """The ``kubectl`` stand-in on ``bindir`` and its state: the objects as the API server serves them
    (Secrets' stringData folded into data; LoadBalancer Services with ``lb_ip`` as their ingress) and
    each Service port's endpoints."""
    objects, endpoints = {}, {}
    for key, obj in cluster.api.items():
        obj = json.loads(json.dumps(obj))
        if obj["kind"] == "Secret":
            obj["data"] = {
                k: base64.b64encode(v).decode()
                for k, v in cluster.data("Secret", obj["metadata"]["name"], key.split("/")[1]).items()
            }
            obj.pop("stringData", None)
        if obj["kind"] == "Service":
            if obj["spec"].get("type") == "LoadBalancer":
                obj["status"] = {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}
            for port in obj["spec"]["ports"]:
                pods = cluster.endpoints(obj)
                endpoints[f"{key.split('/')[1]}/{obj['metadata']['name']}/{port['port']}"] = [
                    f"{p.ip}:{port['port']}" for p in pods
                ]
        objects[key] = obj
    state = bindir / "kubectl-state.json"
    state.write_text(json.dumps({"objects": objects, "endpoints": endpoints}))
    script = bindir / "kubectl"
    script.write_text(f'#!/bin/sh\nKUBECTL_STATE={state} exec {sys.executable} {HERE / "kubectl.py"} "$@"\n')
    script.chmod(0o755)
    return state
