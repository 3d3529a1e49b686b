"""What an autograded submission tells the instructor beyond its score: cells that failed, timed out, ran
out of memory or killed the kernel; code that tampers with the libraries; answers that are the library."""

from __future__ import annotations


MEMORY_ERRORS = (
    "MemoryError",
    "can't allocate memory",
    "Cannot allocate memory",
    "Unable to allocate",
    "std::bad_alloc",
    "out of memory",
)


def execution_report(
    nb, timeout: int | None = None, memory_limit_gb: float | None = None
) -> tuple[str | None, list[str]]:
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
            what += (
                " and ignored the interrupt: the kernel was restarted, the cells above re-run"
                if "restarted" in text
                else " and was interrupted"
            )
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
        tests = sum(
            1
            for c in not_run
            if (c.metadata.get("nbgrader") or {}).get("grade")
            and not (c.metadata.get("nbgrader") or {}).get("solution")
        )
        notes.append(
            f"the notebook ran longer than its time limit (--notebook-timeout) and grading ended it: "
            f"{len(not_run)} code cells were not run, {tests} of them test cells (scored 0)"
        )
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
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "setattr"
                and node.args
            ):
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
            notes.append(
                f"REVIEW cell {i}{f' ({gid})' if gid else ''}: replaces {', '.join(sorted(set(found)))} "
                "(monkeypatching; the checks do not rely on it, but look at this submission)"
            )
    return notes


def answer_notes(nb, release=None) -> list[str]:
    """REVIEW notes for answers that may be labkit's own and for reflection or hidden code in the
    student's cells: ``labkit.course.review.static_notes``, which reads the notebook as its kernel will
    run it. Without a release notebook there is nothing to compare with, and no note."""
    from labkit.course.review import static_notes

    if release is None:
        return []
    try:
        return static_notes(nb, release)
    except Exception as exc:  # a notebook the review cannot read is graded all the same, and looked at
        return [f"REVIEW: the static review could not read this notebook ({type(exc).__name__}: {str(exc)[:200]})"]


def review_notes(nb, release=None) -> list[str]:
    """Everything for the instructor to look at in a submission before it is graded (``tampering_notes``
    and ``answer_notes``); any of them turns a ``graded`` result into ``needs review``."""
    return tampering_notes(nb) + answer_notes(nb, release)
