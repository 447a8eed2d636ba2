"""The import graph of bulkner's modules (module-level and in-function imports alike): no cycles,
and the run-time path never reaches training or evaluation code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"bulkner": ROOT / "bulkner", "bulkner.connectors": ROOT / "connectors", "bulkner.kernels": ROOT / "kernels"}
RUN_TIME = ("bulkner.runner.local", "bulkner.runner.ray", "bulkner.pipeline.shard")
NOT_AT_RUN_TIME = ("bulkner.training", "bulkner.selectors.train", "bulkner.evaluation", "bulkner.corpora")


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the bulkner modules it imports anywhere in its file."""
    known = modules()

    def owner(name: str) -> str:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bulkner"):
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("bulkner")]
            graph[module] |= {owner(n) for n in names if owner(n) and owner(n) != module}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (a path that comes back to its start), or ``[]``."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += graph[node]
    return seen


def test_the_graph_is_read_whole():
    graph = import_graph()
    assert len(graph) > 50
    assert "bulkner.selectors" in graph["bulkner.pipeline.tagger"] and "bulkner.pipeline.tagger" in reachable(graph, "bulkner.runner.ray")


def test_no_import_cycle():
    assert cycle(import_graph()) == []


def test_the_check_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_a_run_never_imports_training_or_evaluation_code():
    graph = import_graph()
    for start in RUN_TIME:
        bad = sorted(m for m in reachable(graph, start) if m.startswith(NOT_AT_RUN_TIME))
        assert bad == [], f"{start} reaches {bad}"


def test_a_loaded_selector_has_not_imported_its_training_code():
    """Selector kinds are loaded by name (``selectors.KINDS``), which the graph cannot follow: load the
    shipped one in a fresh interpreter and look."""
    code = ("import sys\n"
            "import bulkner.runner.local, bulkner.runner.ray\n"
            "from bulkner.checkpoints import default_selector\n"
            "from bulkner.selectors import open_selector\n"
            "selector = open_selector(default_selector(), device='cpu')\n"
            "selector.setup()\n"
            "print(sorted(m for m in sys.modules if m.startswith('bulkner')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = eval(result.stdout.strip().splitlines()[-1])
    assert "bulkner.selectors.span" in loaded
    assert not [m for m in loaded if m.startswith(NOT_AT_RUN_TIME)]


def test_every_module_imports_in_a_fresh_interpreter():
    """In dependency order, each in a clean interpreter state: an import-time cycle would fail here."""
    code = ("import importlib, sys\n"
            f"for name in {sorted(modules())!r}:\n"
            "    importlib.import_module(name)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
