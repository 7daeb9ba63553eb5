"""The package's import graph has no loop: every import statement counts, also one inside a function (a loop
through a deferred import, such as cli -> demo -> cli, is a loop all the same)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sfcrime"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.level and node.module else (node.module if not node.level else base)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_loop():
    graph = import_graph()
    assert "sfcrime.demo" in graph["sfcrime.cli"]  # the graph sees deferred imports
    assert loops(graph) == []


KAFKA_LIBRARIES = {"confluent_kafka", "kafka"}


def test_kafka_libraries_are_imported_only_behind_the_client_seam():
    """Everything outside sfcrime/clients/ talks to Kafka through what clients/ exports, so the choice of
    library is made in one place (an import inside a function counts too)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "clients":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}" for name in names
                      if name.split(".")[0] in KAFKA_LIBRARIES]
    assert found == []


def test_the_client_library_is_chosen_in_one_place():
    """Only clients.implementation() reads settings.client to pick a library; everything else asks it."""
    choosing = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                for path in sorted(PACKAGE.rglob("*.py"))
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "client"]
    assert choosing == ["sfcrime/clients/__init__.py:" + str(next(
        i for i, line in enumerate((PACKAGE / "clients" / "__init__.py").read_text().splitlines(), 1)
        if 'settings.client == "kafka-python"' in line))]
