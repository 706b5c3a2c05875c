"""The package's imports form layers: no module imports, directly or through others, a module
that imports it back (also counting imports inside functions, which only hide a cycle)."""

import ast
from pathlib import Path

import nsa_tutorial

PACKAGE = Path(nsa_tutorial.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict:
    """``{module: {package modules it imports anywhere in its code}}``, from the source text."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[:len(base) - node.level + 1] if node.level else []
                stem = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:  # "from . import x" imports the module x
                    candidate = f"{stem}.{alias.name}"
                    targets.add(candidate if candidate in modules else stem)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict):
    """One cycle as a list of modules (first == last), or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "nsa_tutorial.checkpoint" in graph["nsa_tutorial.inference"]  # imported inside load_predictor
    assert "nsa_tutorial.calibration" in graph["nsa_tutorial.train"]  # imported inside train
    assert "nsa_tutorial.inference" in graph["nsa_tutorial.export"]
    assert "nsa_tutorial.batched.poisson" in graph["nsa_tutorial.batched.synthesis"]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20
    # the package's __init__ gathers the public names of the others
    graph = {name: targets - {"nsa_tutorial"} for name, targets in graph.items() if name != "nsa_tutorial"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
