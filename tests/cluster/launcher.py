"""The container runtime's part of a "pod": run as root inside the pod's network namespace (``ip netns
exec NS unshare --uts python launcher.py SPEC``), it builds the container's filesystem and execs the
container's command in it, so the process sees exactly the rendered paths, env and user.

The filesystem is an overlay whose lower layer is this machine's root (the "image": the repository's
.venv is bind-mounted at the image's /opt/venv, the healthcheck script at its COPY destination), with
the pod's volumes bind-mounted at their mountPaths and the pod's hosts file at /etc/hosts; the repository
is bound again at its own path last, so no volume hides what the venv points into. Everything is
private to this mount namespace (``ip netns exec`` makes one per call) and vanishes with its processes.
Standard library only: it runs before the container's environment exists.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def inside(root: Path, path: str) -> Path:
    """``path`` as the container sees it: symlinks on the way (``/var/run -> /run``) resolve under ``root``,
    never onto this machine's own tree."""
    resolved = root
    for part in Path(path).parts[1:]:
        candidate = resolved / part
        hops = 0
        while candidate.is_symlink() and hops < 40:
            link, hops = os.readlink(candidate), hops + 1
            candidate = root / link.lstrip("/") if link.startswith("/") else candidate.parent / link
        resolved = candidate
    return resolved


def bind(source: str, target: Path, readonly: bool) -> None:
    if Path(source).is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    mount("--bind", source, str(target))
    if readonly:
        mount("-o", "remount,bind,ro", str(target))


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    socket.sethostname(spec["hostname"])
    layers = Path(spec["layers"])
    upper, work, root = layers / "upper", layers / "work", layers / "root"
    for path in (upper, work, root):
        path.mkdir(parents=True, exist_ok=True)
    mount("-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", str(root))
    for fs in ("proc", "dev", "sys"):
        mount("--rbind", f"/{fs}", str(root / fs))
    for source, target, readonly in [*spec["binds"], [spec["hosts"], "/etc/hosts", True]]:
        bind(source, inside(root, target), readonly)
    for target in spec["tmpfs"]:
        inside(root, target).mkdir(parents=True, exist_ok=True)
        mount("-t", "tmpfs", "tmpfs", str(inside(root, target)))
    # The image's contents that live in this repository (the venv's interpreter and console scripts, the
    # editable install's sources) stay at their own path even when a volume or tmpfs (an emptyDir at /tmp)
    # covers a directory above it, as a checkout under /tmp would be.
    for path in spec["image_paths"]:
        bind(path, inside(root, path), True)
    inside(root, spec["cwd"]).mkdir(parents=True, exist_ok=True)
    if spec["readonly_root"]:
        mount("-o", "remount,bind,ro", str(root))
    os.chroot(root)
    os.chdir(spec["cwd"])
    if spec["uid"] is not None:
        os.setgroups(spec["groups"])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])


if __name__ == "__main__":
    main(sys.argv[1])
