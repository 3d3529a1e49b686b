"""The exercises of the labs, read from ``solutions/`` (shared by the tests of the checks).

    EXERCISES                      (lab, function name) -> the student's argument names
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


def test_calls(lab: str, name: str) -> list[str]:
    """The solution's test lines that grade ``name`` (visible and hidden): ``checks.check_x(name, ...)``."""
    calls = [line.strip() for line in _source(lab).splitlines() if re.match(rf"\s*checks\.check_\w+\({name}\b", line)]
    assert calls, f"{lab}: no test line calls a check with {name}"
    return calls


def solution_function(lab: str, name: str):
    """The solution's ``def name`` compiled with the lab's top-level imports and its other exercises (the code a
    student would write: lab 04's training loop calls the student's loss, step, label dropout and EMA)."""
    source = _source(lab)
    tree = ast.parse(source)
    exercises = {n for (l, n) in EXERCISES if l == lab}
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
            or (isinstance(n, ast.FunctionDef) and n.name in exercises)]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), f"solutions/{lab}.py", "exec"), namespace)  # noqa: S102
    return namespace[name]
