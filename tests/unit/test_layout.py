"""The layout's rules that imports can break: the library never imports the app, and no two
modules of the library import each other in a loop."""

import ast
from pathlib import Path

from tests.conftest import REPO


def imports(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


LIBRARY = {module_name(p): p for p in sorted((REPO / "sparse_cbm").rglob("*.py"))}


def test_the_library_never_imports_the_app():
    offenders = sorted(f"{name} imports {imp}" for name, path in LIBRARY.items()
                       for imp in imports(path) if imp.split(".")[0] in {"sparse_cbm_app", "stages"})
    assert offenders == []


def test_the_library_has_no_import_cycles():
    graph = {name: {imp for imp in imports(path) if imp in LIBRARY and imp != name} for name, path in LIBRARY.items()}
    # a package's __init__ that only hands names on is not an edge back: drop edges into a package from inside it
    graph = {name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
