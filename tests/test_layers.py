"""Import contracts (run by ``make lint``), read from the source with ``ast`` like import-linter would:

* ``core`` imports no service: only ``core`` and the generated wire code (``impala.<x>.v1``).
* ``client`` imports only the wire contract and ``core`` (so the SDK never drags in a server).
* ``buffer`` (the Redis Streams protocol) imports only ``core`` and the wire contract.
* services talk through Redis and gRPC only: ``actorpool``, ``learner``, ``weights`` and ``control``
  import no other service, except the weight service's gRPC clients (``publisher`` for the learner,
  ``subscriber`` for the pools), and those clients import nothing of the server side. Only the
  rollout stream's two ends use ``buffer`` (the pools produce, the learner consumes).
  ``control`` in particular never imports ``learner``.
* no import cycles between modules.

Imports under ``if TYPE_CHECKING:`` are left out (they never run); imports inside functions count.
Orchestrators (``impala.cli``, ``impala.local``, ``impala.tools``) may import anything.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "services"
WIRE = re.compile(r"^impala\.[a-z_]+\.v1(\.|$)")
SERVICES = ("actorpool", "learner", "weights", "control", "client")
# The weight service's clients, and what of the weights package they may use (wire format, chunking).
WEIGHTS_CLIENTS = {"impala.weights.publisher", "impala.weights.subscriber"}
WEIGHTS_CLIENT_SIDE = {
    *WEIGHTS_CLIENTS,
    "impala.weights.bulk_client",
    "impala.weights.bulk_wire",
    "impala.weights.chunks",
}
CROSS_ALLOWED = {"actorpool": {"impala.weights.subscriber"}, "learner": {"impala.weights.publisher"}}
USES_BUFFER = {"actorpool", "learner"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        name = ".".join(path.relative_to(SOURCE).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (name for child in node.orelse for name in _imports(ast.Module([child], [])))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from pkg import module` depends on pkg.module
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in MODULES or WIRE.match(sub) else node.module
        yield from _imports(node)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        graph[name] = {i for i in _imports(ast.parse(path.read_text())) if i.startswith("impala") and i != name}
    return graph


GRAPH = _graph()


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _breaches(package: str, allowed: set[str], extra: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if _package(module) == package
        for target in targets
        if not (WIRE.match(target) or _package(target) in allowed or target in extra)
    )


def test_the_checker_sees_the_imports() -> None:
    assert "impala.core.vtrace" in GRAPH and "impala.core.settings" in GRAPH["impala.actorpool.settings"]
    assert "impala.actorpool.v1.actorpool_pb2" in GRAPH["impala.client.wire"]


def test_core_imports_no_service() -> None:
    assert not _breaches("core", {"core"})


def test_client_imports_only_the_wire_contract_and_core() -> None:
    assert not _breaches("client", {"client", "core"})


def test_buffer_imports_only_core_and_the_wire_contract() -> None:
    assert not _breaches("buffer", {"buffer", "core"})


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "client"])
def test_services_talk_through_redis_and_grpc_only(service: str) -> None:
    allowed = {service, "core", *(["buffer"] if service in USES_BUFFER else [])}
    assert not _breaches(service, allowed, CROSS_ALLOWED.get(service, set()))


def test_control_never_imports_the_learner() -> None:
    assert not [t for m, ts in GRAPH.items() if _package(m) == "control" for t in ts if _package(t) == "learner"]


def test_weight_clients_import_nothing_of_the_server_side() -> None:
    breaches = [
        f"{module} -> {target}"
        for module in WEIGHTS_CLIENT_SIDE
        for target in GRAPH[module]
        if _package(target) == "weights" and not WIRE.match(target) and target not in WEIGHTS_CLIENT_SIDE
    ]
    assert not breaches


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH.get(node, ()):
            if target not in MODULES:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                cycles.append(sorted([node, *component]))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles
