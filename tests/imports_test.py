"""The package's import graph: no cycles (imports inside functions count), and the pipeline
finds the methods through their registry, never by importing a method module."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kerasbnn"


def _modules():
    """`{dotted name: path}` of every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _resolve(name, modules):
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(name, path, modules):
    """The package's modules that `name` imports anywhere in its code (functions included):
    `from a.b import c` is `a.b.c` when that is a module, else `a.b`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {_resolve(a.name, modules) for a in node.names if a.name.startswith("kerasbnn")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.startswith("kerasbnn"):
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules
                          else _resolve(base, modules) for a in node.names}
    return found - {None, name}


def import_graph():
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle_through_an_import_inside_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def method_modules():
    """The modules that register a method (`@method(...)`)."""
    return {name for name, path in _modules().items()
            if name.startswith("kerasbnn.methods.") and "\n@method(" in path.read_text()}


def test_the_pipeline_imports_no_method_module_by_name_or_by_a_computed_one():
    plugins = method_modules()
    assert {"kerasbnn.methods.mad", "kerasbnn.methods.kd", "kerasbnn.methods.pkkd"} <= plugins
    graph, modules = import_graph(), _modules()
    run_parts = sorted(name for name in modules if name.startswith("kerasbnn.run."))
    assert "kerasbnn.run.arms" in run_parts
    for name in ("kerasbnn.pipeline", "kerasbnn.run_dir", "kerasbnn.resume", "kerasbnn.cli",
                 "kerasbnn.run", *run_parts):
        assert not graph[name] & plugins, (name, graph[name] & plugins)
        source = modules[name].read_text()
        assert "import_module" not in source and "__import__" not in source, name


def test_no_module_imports_the_pipeline_back():
    """`kerasbnn.pipeline` puts the parts of `kerasbnn.run` together; no part needs it."""
    importers = sorted(name for name, imported in import_graph().items()
                       if "kerasbnn.pipeline" in imported and name != "kerasbnn.cli")
    assert importers == []
