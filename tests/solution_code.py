"""The exercises of the labs, read from ``solutions/`` (shared by the tests of the checks).

    EXERCISES                      (lab, function name) -> the student's argument names
    CLASSES                        (lab, class name) -> the constructor's argument names (module exercises)
    test_calls(lab, name)          the visible and hidden test lines of that exercise, as source text
    solution_function(lab, name)   the instructor's solution itself, compiled from the lab's source
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source(lab: str) -> str:
    return (ROOT / "solutions" / lab / f"{lab}.py").read_text()


def _exercises() -> dict[tuple[str, str], list[str]]:
    found = {}
    for path in sorted(ROOT.glob("solutions/lab*/lab*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and "### BEGIN SOLUTION" in (ast.get_source_segment(source, node) or ""):
                found[(path.stem, node.name)] = [a.arg for a in node.args.args]
    return found


EXERCISES = _exercises()


def _classes() -> dict[tuple[str, str], list[str]]:
    found = {}
    for path in sorted(ROOT.glob("solutions/lab*/lab*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef) and "### BEGIN SOLUTION" in (ast.get_source_segment(source, node) or ""):
                init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
                found[(path.stem, node.name)] = [a.arg for a in init.args.args[1:]]
    return found


CLASSES = _classes()


def solution_namespace(lab: str, replace: dict[str, str] | None = None) -> dict:
    """Every top-level import, function and class of the lab's solution, run in one namespace (the classes
    use each other and the lab's functions). ``replace``: {text: new text} applied to the source first,
    to make a plausible wrong answer from the right one."""
    source = _source(lab)
    for old, new in (replace or {}).items():
        assert old in source, f"{lab}: {old!r} is not in the solution"
        source = source.replace(old, new)
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) or (
        isinstance(n, (ast.FunctionDef, ast.ClassDef)) and "### BEGIN SOLUTION" in (ast.get_source_segment(source, n) or ""))]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), f"solutions/{lab}.py", "exec"), namespace)  # noqa: S102
    return namespace


def test_calls(lab: str, name: str) -> list[str]:
    """The solution's test lines that grade ``name`` (visible and hidden): ``checks.check_x(name, ...)``."""
    calls = [line.strip() for line in _source(lab).splitlines() if re.match(rf"\s*checks\.check_\w+\({name}\b", line)]
    assert calls, f"{lab}: no test line calls a check with {name}"
    return calls


def solution_function(lab: str, name: str):
    """The solution's ``def name`` compiled with the lab's top-level imports and its other exercises (the code a
    student would write: a loop calls the student's own step)."""
    source = _source(lab)
    tree = ast.parse(source)
    exercises = {n for (lab_, n) in EXERCISES if lab_ == lab}
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
            or (isinstance(n, ast.FunctionDef) and (n.name == name or n.name in exercises))]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), f"solutions/{lab}.py", "exec"), namespace)  # noqa: S102
    return namespace[name]
