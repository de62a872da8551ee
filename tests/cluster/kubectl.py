"""A ``kubectl`` stand-in answering exactly the commands the chart's NOTES.txt prints, from the objects
the kubelet stand-in materialised (``KUBECTL_STATE``: a JSON file of the objects as the API server would
return them, Secrets' stringData folded into data, and each Service port's endpoints):

    kubectl get svc|secret -n NS NAME -o jsonpath=TEMPLATE
    kubectl port-forward -n NS svc/NAME LOCAL:REMOTE

Anything else exits 1 naming the command, so a NOTES change that needs more fails the test loudly.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

KINDS = {"svc": "Service", "service": "Service", "secret": "Secret", "secrets": "Secret"}


def jsonpath(template: str, obj: Any) -> str:
    """kubectl's JSONPath for plain field paths: ``{.a.b[0].c\\.d}`` segments, a missing field prints ''."""

    def field(match: re.Match[str]) -> str:
        value = obj
        for key, index in re.findall(r"\.((?:\\\.|[^.\[])+)(?:\[(\d+)\])?", match.group(1)):
            value = value.get(key.replace("\\.", "."), {}) if isinstance(value, dict) else {}
            if index:
                value = value[int(index)] if isinstance(value, list) and len(value) > int(index) else {}
        return "" if value in ({}, None) else str(value)

    return re.sub(r"\{([^}]*)\}", field, template)


def parse(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    words, flags, rest = [], {}, iter(argv)
    for arg in rest:
        if arg in ("-n", "--namespace", "-o", "--output"):
            flags[arg.lstrip("-")[0]] = next(rest)
        elif arg.startswith(("-o=", "--output=", "-n=", "--namespace=")):
            flags[arg.lstrip("-")[0]] = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise SystemExit(f"kubectl stand-in: unsupported flag {arg}")
        else:
            words.append(arg)
    return words, flags


def main(argv: list[str]) -> None:
    state = json.loads(Path(os.environ["KUBECTL_STATE"]).read_text())
    words, flags = parse(argv)
    namespace = flags.get("n", "default")
    if len(words) == 3 and words[0] == "get" and words[1] in KINDS and flags.get("o", "").startswith("jsonpath="):
        key = f"{KINDS[words[1]]}/{namespace}/{words[2]}"
        if key not in state["objects"]:
            raise SystemExit(f'Error from server (NotFound): {words[1]} "{words[2]}" not found')
        sys.stdout.write(jsonpath(flags["o"].removeprefix("jsonpath="), state["objects"][key]))
        return
    if len(words) == 3 and words[0] == "port-forward" and words[1].startswith("svc/"):
        local, remote = words[2].split(":")
        endpoints = state["endpoints"].get(f"{namespace}/{words[1].removeprefix('svc/')}/{remote}")
        if not endpoints:
            raise SystemExit(f"kubectl stand-in: no ready endpoint for {words[1]} port {remote}")
        proxy = str(Path(__file__).with_name("proxy.py"))
        os.execv(sys.executable, [sys.executable, proxy, "127.0.0.1", local, endpoints[0]])
    raise SystemExit(f"kubectl stand-in: unsupported command: kubectl {' '.join(argv)}")


if __name__ == "__main__":
    main(sys.argv[1:])
