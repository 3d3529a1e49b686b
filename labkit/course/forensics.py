"""What an autograded submission tells the instructor beyond its score: cells that failed, timed out, ran
out of memory or killed the kernel; code that tampers with the libraries; answers that are the library."""

from __future__ import annotations


MEMORY_ERRORS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "Unable to allocate",
                 "std::bad_alloc", "out of memory")


def execution_report(nb, timeout: int | None = None, memory_limit_gb: float | None = None) -> tuple[str | None, list[str]]:
    """What went wrong while an autograded notebook ran: ``(status or None, notes)``, one note per code cell
    with an error output. Status: ``kernel died`` (a DeadKernelError output, see ``GuardedExecute``) before
    ``out of memory`` (an error that names a failed allocation)."""
    died = oom = False
    notes, not_run = [], []
    for i, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if cell.cell_type != "code" or not errors:
            continue
        if errors[0].get("ename") == "NotebookTimeout":  # ended with the notebook: one note for all of them
            not_run.append(cell)
            continue
        md = cell.metadata.get("nbgrader") or {}
        gid = md.get("grade_id")
        label = f"cell {i}" + (f" ({gid})" if gid else "")
        enames = [e.get("ename", "") for e in errors]
        text = " ".join(f"{e.get('ename', '')}: {e.get('evalue', '')}" for e in errors)
        if "DeadKernelError" in enames:
            died = True
            what = "the kernel died here (restarted, the cells above re-run)"
        elif "CellTimeoutError" in enames:
            what = f"timed out after {timeout} s" if timeout else "timed out"
            what += (" and ignored the interrupt: the kernel was restarted, the cells above re-run"
                     if "restarted" in text else " and was interrupted")
        elif any(m.lower() in text.lower() for m in MEMORY_ERRORS):
            oom = True
            cap = f"the {memory_limit_gb:g} GB memory cap" if memory_limit_gb else "the memory limit"
            what = f"reached {cap}: {_first_line(errors[0])}"
        else:
            what = _first_line(errors[-1] if errors[-1].get("ename") != "KeyboardInterrupt" else errors[0])
        if md.get("grade") and not md.get("solution"):
            notes.append(f"{label} failed: {what}")
        else:
            notes.append(f"{label}: {what}")
    if not_run:
        tests = sum(1 for c in not_run if (c.metadata.get("nbgrader") or {}).get("grade")
                    and not (c.metadata.get("nbgrader") or {}).get("solution"))
        notes.append(f"the notebook ran longer than its time limit (--notebook-timeout) and grading ended it: "
                     f"{len(not_run)} code cells were not run, {tests} of them test cells (scored 0)")
    status = "kernel died" if died else "out of memory" if oom else None
    return status, notes


def _first_line(error: dict) -> str:
    value = str(error.get("evalue", "")).strip().splitlines()
    return f"{error.get('ename', 'Error')}: {value[0][:200] if value else ''}".rstrip(": ")


# Names whose attributes an answer cell has no reason to replace: doing so is how a student (or a helper
# found online) would try to make a naive test pass (nbgrader #1379).
TAMPER_ROOTS = {"torch", "np", "numpy", "checks", "labkit", "math", "builtins", "_common", "sys", "importlib"}


def tampering_notes(nb) -> list[str]:
    """Notes for the instructor (never a score change): student-editable code cells that assign to an
    attribute of torch / numpy / the checks (``torch.allclose = ...``), or call ``setattr`` on them."""
    import ast

    notes = []
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader") or {}
        if cell.cell_type != "code" or md.get("locked"):
            continue
        source = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found = []
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and node.args:
                targets = [node.args[0]]
            for t in targets:
                root = t
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in TAMPER_ROOTS and root is not t:
                    found.append(ast.unparse(t))
                elif isinstance(root, ast.Name) and root.id in TAMPER_ROOTS and isinstance(node, ast.Call):
                    found.append(f"setattr({root.id}, ...)")
        if found:
            gid = md.get("grade_id")
            notes.append(f"REVIEW cell {i}{f' ({gid})' if gid else ''}: replaces {', '.join(sorted(set(found)))} "
                         "(monkeypatching; the checks do not rely on it, but look at this submission)")
    return notes


# Calls that let code reach what the checks or the grader hold by other routes than plain Python: an answer
# cell of these labs never needs them. They are reported, never executed, and do not change the score.
DYNAMIC_CALLS = {"exec", "eval", "compile", "__import__", "globals", "vars", "locals", "open", "breakpoint",
                 "setattr", "delattr"}
DYNAMIC_MODULES = {"importlib", "inspect", "ctypes", "subprocess", "socket", "urllib", "http", "requests",
                   "builtins", "pickle", "marshal", "multiprocessing", "base64", "codecs", "runpy", "site"}


def _labkit_aliases(nb) -> dict[str, str]:
    """``{name: module}`` for every name the notebook binds to a labkit module (``from labkit import
    diffusion``, ``from labkit.checks import lab01_forward as checks``, ``import labkit``)."""
    import ast

    aliases: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_python_only(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "labkit":
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "labkit"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "labkit":
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _python_only(source: str) -> str:
    return "\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!")))


def _dotted(node) -> str | None:
    import ast

    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


def _scan(tree, aliases) -> tuple[set[str], set[str]]:
    """(labkit names used, dynamic features used) in one parsed cell or function body."""
    import ast

    uses, dynamic = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and not isinstance(getattr(node, "ctx", None), ast.Store):
            name = _dotted(node)
            root = name.split(".")[0] if name else None
            if root in aliases:
                uses.add(aliases[root] + name[len(root):])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC_CALLS:
            dynamic.add(node.func.id + "()")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant):
            dynamic.add("getattr() with a computed name")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in DYNAMIC_MODULES:
                    dynamic.add(f"import {m}")
                if m.split(".")[0] == "labkit":
                    uses.add(m)
        if isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr.endswith("__") \
                and node.attr not in ("__init__", "__name__", "__class__"):
            dynamic.add(f"dunder attribute {node.attr}")
    # the longest names only ("labkit.diffusion.q_sample", not also "labkit.diffusion")
    uses = {u for u in uses if not any(v != u and v.startswith(u + ".") for v in uses)}
    return uses, dynamic


def _bound_names(tree) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def answer_notes(nb, release=None) -> list[str]:
    """REVIEW notes for code the student wrote that may not be the student's own answer:

    * an answer cell that uses labkit, which holds the reference answers (``diffusion.q_sample`` where the
      exercise is to write ``q_sample``), or reaches for dynamic code, files, processes or the network
      (``exec``, ``open``, ``importlib``, ``subprocess``...);
    * a cell outside an answer cell that binds an exercise's name (``q_sample = diffusion.q_sample`` further
      down would replace the answer before the test runs), or defines a helper that uses labkit and is
      called from an answer cell;
    * a cell that is not in the lab as released and uses dynamic code.

    The answer still gets the points the checks gave it; the instructor decides."""
    import ast

    from labkit.course.restore import stub_names, normalise_source

    given, exercises = set(), set()
    if release is not None:
        for c in release.cells:
            if c.cell_type == "code":
                given.add(normalise_source(c.source))
                if (c.metadata.get("nbgrader") or {}).get("solution"):
                    exercises.update(stub_names(c.source))
    aliases = _labkit_aliases(nb)
    parsed = []
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader") or {}
        if cell.cell_type != "code" or md.get("locked") or (md.get("grade") and not md.get("solution")):
            continue
        try:
            parsed.append((i, md, cell, ast.parse(_python_only(cell.source))))
        except SyntaxError:
            continue
    called = set()  # names an answer cell reads
    for _, md, _, tree in parsed:
        if md.get("solution"):
            called |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    notes = []
    for i, md, cell, tree in parsed:
        gid = md.get("grade_id")
        where = f"cell {i}" + (f" ({gid})" if gid else "")
        if md.get("solution"):
            uses, dynamic = _scan(tree, aliases)
            if uses:
                notes.append(f"REVIEW {where}: the answer uses labkit ({', '.join(sorted(uses)[:6])}), which "
                             "holds the reference answers: check that it does not just call the function it should write")
            if dynamic:
                notes.append(f"REVIEW {where}: uses {', '.join(sorted(dynamic)[:6])} (not needed for any exercise)")
            continue
        # a statement that binds an exercise's name to something built from labkit or dynamic code (a plain
        # second definition, e.g. a copied answer cell, is the student's own code and graded as such)
        rebinds = set()
        for stmt in tree.body:
            names = _bound_names(stmt) & exercises
            if names and any(_scan(stmt, aliases)):
                rebinds |= names
        if rebinds:
            notes.append(f"REVIEW {where}: binds {', '.join(sorted(rebinds))} outside its answer cell "
                         "(the test would grade that instead of the answer)")
        helpers = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in called:
                if _scan(node, aliases)[0]:
                    helpers.append(node.name)
        if helpers:
            notes.append(f"REVIEW {where}: {', '.join(sorted(helpers))} uses labkit and is called by an answer")
        if normalise_source(cell.source) not in given:
            dynamic = _scan(tree, aliases)[1]
            if dynamic:
                notes.append(f"REVIEW {where}: uses {', '.join(sorted(dynamic)[:6])} (not needed for any exercise)")
    return notes


def review_notes(nb, release=None) -> list[str]:
    """Everything for the instructor to look at in a submission before it is graded (``tampering_notes``
    and ``answer_notes``); any of them turns a ``graded`` result into ``needs review``."""
    return tampering_notes(nb) + answer_notes(nb, release)
