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


KAFKA_LIBRARIES = {"confluent_kafka", "kafka"}  # confluent-kafka, kafka-python
# The seam's own modules for each library: importing one from outside picks a library past implementation().
LIBRARY_MODULES = {"sfcrime.clients.confluent", "sfcrime.clients.kafka_python"}
ENTRY_POINTS = sorted(PACKAGE.parent.glob("*.py"))  # kafka_server.py, data_stream.py, ...: the product's too


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `tree`: statements anywhere, a function's deferred
    ones too, and importlib.import_module / __import__ of a literal name. Relative names are resolved
    (`from . import kafka` in sfcrime/local/ is our broker, not kafka-python); `from P import N` gives P.N
    as well as P, since N may be a module."""
    package = module if is_package else module.rpartition(".")[0]

    def absolute(name: str, level: int) -> str:
        if not level:
            return name
        base = package
        for _ in range(level - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{name}" if name else base

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node.module or "", node.level)
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            name = node.args[0].value
            found.append((node.lineno, absolute(name.lstrip("."), len(name) - len(name.lstrip(".")))))
    return found


def bypasses(tree: ast.AST, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """The imports in `tree` that reach a Kafka library other than through the seam."""
    return sorted({(line, name) for line, name in imported(tree, module, is_package)
                   if name.split(".")[0] in KAFKA_LIBRARIES
                   or any(name == m or name.startswith(m + ".") for m in LIBRARY_MODULES)})


def test_the_seam_guard_sees_every_way_of_importing_a_kafka_library():
    """A guard blind to one form would pass for ever: each form it must see, and our broker it must not."""
    source = """
import confluent_kafka
import kafka.admin as kafka_admin
from kafka.errors import KafkaError
from ..clients import confluent, open_admin
from ..clients.kafka_python import build
from . import kafka
from .kafka import KafkaNode
def later():
    import importlib
    from sfcrime.clients import kafka_python
    importlib.import_module("confluent_kafka.admin")
    return __import__("kafka")
"""
    assert bypasses(ast.parse(source), "sfcrime.local.setup") == [
        (2, "confluent_kafka"), (3, "kafka.admin"), (4, "kafka.errors"), (4, "kafka.errors.KafkaError"),
        (5, "sfcrime.clients.confluent"), (6, "sfcrime.clients.kafka_python"),
        (6, "sfcrime.clients.kafka_python.build"), (11, "sfcrime.clients.kafka_python"),
        (12, "confluent_kafka.admin"), (13, "kafka")]  # not line 7 or 8: sfcrime.local.kafka is our broker


def test_kafka_libraries_are_imported_only_behind_the_client_seam():
    """Everything outside sfcrime/clients/ talks to Kafka through what clients/ exports, so the choice of
    library is made in one place: no import of confluent_kafka or kafka (kafka-python), nor of the seam's
    module for either, in the package or its entry points (an import inside a function counts too)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")) + ENTRY_POINTS:
        if path.is_relative_to(PACKAGE / "clients"):
            continue
        module = module_name(path) if path.is_relative_to(PACKAGE) else path.stem
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(PACKAGE.parent)}:{line} {name}"
                  for line, name in bypasses(tree, module, path.name == "__init__.py")]
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


def test_the_job_ships_sfcrime_to_executors_without_the_baseline_or_set_ups_training(tmp_path):
    import zipfile

    from sfcrime.stream.job import package_zip

    names = set(zipfile.ZipFile(package_zip(tmp_path)).namelist())
    assert {"sfcrime/stream/source.py", "sfcrime/dataset.py", "sfcrime/clients/seam.py"} <= names
    assert not {n for n in names if n.startswith("sfcrime/baseline/") or n == "sfcrime/local/training.py"}
    assert not {n for n in names if "__pycache__" in n or not n.endswith(".py")}
