"""The import order of docs/architecture.md holds for every import in labkit/, function-level ones included.

The layer list is read from the docs page (the one place it is written down); every .py file under
labkit/ is parsed with ``ast``. An import of ``labkit.a.b`` also imports the package ``labkit.a``, so that
edge counts for cycles too (except from inside the package, which is already being imported).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"


# --- Reading the layers --------------------------------------------------------------------------------


def read_layers(text: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """({unit: line number from 0}, {(importer unit or module, imported module)} known exceptions) from the doc.

    Units are the backticked names at the start of each numbered item of "## Layers, lowest first".
    """
    def section(title):
        m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert m, f"docs/architecture.md has no section '## {title}'"
        return m.group(1)

    layers: dict[str, int] = {}
    for i, item in enumerate(re.findall(r"^\d+\.\s+(.*)$", section("Layers, lowest first"), re.M)):
        names = re.findall(r"`(labkit(?:\.\w+)*)`", item.split(":")[0])
        assert names, f"layer line {i + 1} names no module: {item!r}"
        for name in names:
            assert name not in layers, f"{name} is listed twice in docs/architecture.md"
            layers[name] = i
    exceptions = set(re.findall(r"^- `(labkit[\w.]*)` -> `(labkit[\w.]*)`", section("Known exceptions (to remove)"), re.M))
    return layers, exceptions


# --- Reading the imports -------------------------------------------------------------------------------


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package at ``root`` (a folder named labkit)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def resolve(name: str, modules: dict[str, Path]) -> str:
    """The module an import of ``name`` loads: name itself, else its longest prefix that is a module."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """[(imported labkit module, line)] for every import statement in the file, at any depth, plus
    ``importlib.import_module("labkit...")`` with a literal name."""
    top = module.split(".")[0]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import b
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        for name in names:
            if name == top or name.startswith(top + "."):
                found.append((resolve(name, modules), node.lineno))
    return found


def import_graph(root: Path) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """(modules, {importer: {imported: first line}}) including the implicit imports of parent packages."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for target, line in imports_of(module, path, modules):
            if target == module:
                continue
            graph[module].setdefault(target, line)
            parts = target.split(".")
            for k in range(2, len(parts)):  # importing labkit.a.b runs labkit/a/__init__.py first
                parent = ".".join(parts[:k])
                if parent in modules and not (module == parent or module.startswith(parent + ".")):
                    graph[module].setdefault(parent, line)
    return modules, graph


# --- The rules -----------------------------------------------------------------------------------------


def unit_of(module: str, layers: dict[str, int]) -> str | None:
    """The listed unit a module belongs to: itself, or the longest listed package above it (the root
    package ``labkit`` covers only labkit/__init__.py)."""
    parts = module.split(".")
    for k in range(len(parts), 1, -1):
        if ".".join(parts[:k]) in layers:
            return ".".join(parts[:k])
    return module if module in layers else None


def order_violations(graph, modules, layers) -> list[tuple[str, str, str]]:
    """[(importer, imported, "file:line ...")] for every import of a module on a later line than the importer."""
    out = []
    for a, targets in graph.items():
        ua = unit_of(a, layers)
        for b, line in targets.items():
            ub = unit_of(b, layers)
            if ua is not None and ub is not None and layers[ub] > layers[ua]:
                out.append((a, b, f"{modules[a].relative_to(REPO) if modules[a].is_relative_to(REPO) else modules[a]}:{line}: "
                                  f"{a} (layer {layers[ua] + 1}) imports {b} (layer {layers[ub] + 1})"))
    return out


def find_cycle(graph) -> list[str] | None:
    """One import cycle as [m1, m2, ..., m1], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child in graph and not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


# --- The tests -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout():
    layers, exceptions = read_layers(DOC.read_text())
    modules, graph = import_graph(REPO / "labkit")
    return layers, exceptions, modules, graph


def test_every_module_is_on_a_layer(layout):
    layers, _, modules, _ = layout
    missing = sorted(m for m in modules if unit_of(m, layers) is None)
    assert not missing, f"modules not placed in docs/architecture.md's layer list: {missing}"
    stale = sorted(u for u in layers if u not in modules)
    assert not stale, f"docs/architecture.md lists modules that do not exist: {stale}"


def excused_by(a: str, b: str, exceptions, layers) -> tuple[str, str] | None:
    """The known exception "A -> B" that covers the import a -> b: a is A or in A's unit, and b is B or a
    package B lives in (importing B runs those packages too)."""
    for ea, eb in sorted(exceptions):
        if ea in (a, unit_of(a, layers)) and (b == eb or eb.startswith(b + ".")):
            return ea, eb
    return None


def test_imports_follow_the_layers(layout):
    layers, exceptions, modules, graph = layout
    bad = [text for a, b, text in order_violations(graph, modules, layers) if not excused_by(a, b, exceptions, layers)]
    assert not bad, "imports against the order of docs/architecture.md:\n" + "\n".join(bad)


def test_known_exceptions_still_exist(layout):
    layers, exceptions, modules, graph = layout
    used = {excused_by(a, b, exceptions, layers) for a, b, _ in order_violations(graph, modules, layers)}
    gone = sorted(exceptions - used)
    assert not gone, f"fixed: delete these lines from 'Known exceptions' in docs/architecture.md: {gone}"


def test_no_import_cycles(layout):
    *_, graph = layout
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_device_is_chosen_only_in_labkit_device(layout):
    """No more private pickers: `"cuda" if torch.cuda.is_available() else "cpu"` outside labkit/device.py."""
    *_, modules, _ = layout
    bad = []
    for module, path in modules.items():
        if module == "labkit.device":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.IfExp) and "is_available" in ast.unparse(node.test):
                branches = ast.unparse(node.body) + ast.unparse(node.orelse)
                if re.search(r"""['"](cuda|cpu|mps)['"]|torch\.device""", branches):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "device choices outside labkit.device.pick_device:\n" + "\n".join(bad)


def test_the_checker_finds_a_late_import_a_cycle_and_a_relative_import(tmp_path):
    """The rules above can fail: a small fake package with one of each mistake."""
    pkg = tmp_path / "labkit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from labkit.high import g  # against the order, inside a function\n")
    (pkg / "high.py").write_text("import labkit.low\n")
    (pkg / "sub" / "__init__.py").write_text("from .a import x\n")  # relative import
    (pkg / "sub" / "a.py").write_text("import importlib\nm = importlib.import_module('labkit.sub')\nx = 1\n")
    layers, exceptions = read_layers("## Layers, lowest first\n\n1. `labkit`, `labkit.low`: low\n"
                                     "2. `labkit.high`: high\n3. `labkit.sub`: a package\n\n"
                                     "## Known exceptions (to remove)\n\n- `labkit.low` -> `labkit.sub`: example\n")
    assert layers == {"labkit": 0, "labkit.low": 0, "labkit.high": 1, "labkit.sub": 2}
    assert exceptions == {("labkit.low", "labkit.sub")}
    modules, graph = import_graph(pkg)
    assert graph["labkit.low"] == {"labkit.high": 2}
    assert graph["labkit.sub"] == {"labkit.sub.a": 1} and graph["labkit.sub.a"] == {"labkit.sub": 2}
    violations = order_violations(graph, modules, layers)
    assert [(a, b) for a, b, _ in violations] == [("labkit.low", "labkit.high")]
    assert ":2: labkit.low (layer 1) imports labkit.high (layer 2)" in violations[0][2]
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 3
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) is None
    assert unit_of("labkit.sub.a", layers) == "labkit.sub" and unit_of("labkit.nowhere", layers) is None
    assert excused_by("labkit.low", "labkit.sub", exceptions, layers) == ("labkit.low", "labkit.sub")
    assert excused_by("labkit.low", "labkit.high", exceptions, layers) is None


# --- No private names across modules ---------------------------------------------------------------------


def private_imports(root: Path) -> list[str]:
    """``module: from X import _name`` (or ``X._name`` read through an imported labkit module) for every
    private name one labkit module takes from another (docs/architecture.md: a name another module needs is
    public). ``labkit.checks._common`` is the checks' shared helper module and may be imported by name."""
    found = []
    for module, path in module_files(root).items():
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{module}: from {node.module} import {a.name}")
                    else:
                        aliases.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("labkit"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                found.append(f"{module}: {node.value.id}.{node.attr}")
    return found


def test_no_private_names_across_modules():
    assert private_imports(REPO / "labkit") == []


def test_private_import_detector_finds_one(tmp_path):
    pkg = tmp_path / "labkit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _secret():\n    return 1\n")
    (pkg / "b.py").write_text("from labkit.a import _secret\nfrom labkit import a\nx = a._secret()\n")
    assert private_imports(pkg) == ["labkit.b: from labkit.a import _secret", "labkit.b: a._secret"]
