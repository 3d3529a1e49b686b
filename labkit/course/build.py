"""Build the solution and student notebooks of each lab, and check that the committed ones are fresh."""

from __future__ import annotations

import copy
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from labkit.course.nbgrader_setup import nbgrader_api, nbgrader_failure
from labkit.course.sources import (
    import_nbformat,
    select_labs,
    ALLOWED_BESIDE_SOURCE,
    BEGIN_HIDDEN,
    discover_labs,
    find_repo_root,
    notebook_json,
    notebook_metadata,
    SOURCE_DIR,
    source_to_notebook,
    STUDENT_DIR,
)
from labkit.errors import LabkitError


@dataclass
class BuiltLab:
    lab: str
    solution_ipynb: str  # canonical JSON text
    student_ipynb: str


def _generate_student(lab: str, source_nb, root: Path):
    """Run nbgrader generate_assignment on one source notebook in the course folder ``root``;
    return the cleaned release notebook."""
    nbf = import_nbformat()
    (root / "source" / lab).mkdir(parents=True, exist_ok=True)
    nbf.write(source_nb, str(root / "source" / lab / f"{lab}.ipynb"))
    result = nbgrader_api(root).generate_assignment(lab, force=True, create=True)
    if not result.get("success"):
        raise LabkitError(f"nbgrader generate_assignment failed for {lab}:\n{nbgrader_failure(result)}")
    release = nbf.read(str(root / "release" / lab / f"{lab}.ipynb"), as_version=4)
    release.metadata = notebook_metadata(nbf)
    for cell in release.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    leaks = [
        m
        for m in ("### BEGIN SOLUTION", "### END SOLUTION", BEGIN_HIDDEN, "### END HIDDEN TESTS")
        if any(m in cell.source for cell in release.cells)
    ]
    if leaks:
        raise LabkitError(f"{lab}: the student notebook still contains {leaks}")
    return release


def _extra_files(repo_root: Path, lab: str) -> list[str]:
    folder = repo_root / SOURCE_DIR / lab
    expected = {f"{lab}.py", f"{lab}.ipynb"} | ALLOWED_BESIDE_SOURCE
    return sorted(p.name for p in folder.iterdir() if p.name not in expected)


# --- Written answers (issue 13): nbgrader manually graded markdown cells -----------------------------

WRITTEN_SOLUTION_RE = re.compile(r"^### BEGIN SOLUTION[ \t]*\n(.*?)^### END SOLUTION[ \t]*$", re.S | re.M)


def check_written_answers(nb, name: str = "notebook") -> None:
    """Rules for the written answers, beyond nbgrader's validator: a markdown cell that is a solution cell
    must be graded (nbgrader's "manually graded answer"), carry points, and hold the model answer *and* a
    rubric between ``### BEGIN SOLUTION`` / ``### END SOLUTION`` (generate_assignment replaces that region
    by "YOUR ANSWER HERE", so both stay instructor-only); the text outside it is shown to students."""
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader") or {}
        if cell.cell_type != "markdown" or not md.get("solution"):
            continue
        where = f"{name}, cell {i} ({md.get('grade_id', 'no grade_id')})"
        if not md.get("grade") or not md.get("points"):
            raise LabkitError(
                f'{where}: a written answer cell must be graded and carry points ("grade": true, "points": N)'
            )
        if md.get("locked"):
            raise LabkitError(f"{where}: a written answer cell must not be locked")
        found = WRITTEN_SOLUTION_RE.search(cell.source)
        if not found:
            raise LabkitError(
                f"{where}: put the model answer and its rubric between ### BEGIN SOLUTION and "
                "### END SOLUTION (each marker on its own line)"
            )
        if "rubric" not in found[1].lower() or not found[1].lower().replace("rubric", "").strip():
            raise LabkitError(
                f"{where}: the solution region needs a model answer and a **Rubric** "
                "(both are removed from the student notebook)"
            )


def render_labs(repo_root: str | os.PathLike, labs: Sequence[str]) -> dict[str, BuiltLab]:
    """Both built forms of each lab, in memory (one temporary nbgrader course for all of them)."""
    repo_root = Path(repo_root)
    built = {}
    with tempfile.TemporaryDirectory(prefix="labkit-build-") as tmp:
        for lab in labs:
            source = source_to_notebook(repo_root / SOURCE_DIR / lab / f"{lab}.py")
            check_written_answers(source, f"{lab}.py")
            student = _generate_student(lab, copy.deepcopy(source), Path(tmp))
            built[lab] = BuiltLab(lab, notebook_json(source), notebook_json(student))
    return built


def build_notebooks(
    repo_root: str | os.PathLike | None = None, labs: Sequence[str] | None = None, *, verbose: bool = True
) -> list[Path]:
    """Build ``solutions/<lab>/<lab>.ipynb`` and ``notebooks/<lab>.ipynb`` for every lab (or ``labs``).

    Returns the paths written. Raises LabkitError on invalid metadata, nbgrader failures, or files
    beside a source notebook (nbgrader would copy them into the release).
    """
    repo_root = Path(repo_root) if repo_root else find_repo_root()
    chosen = select_labs(labs, discover_labs(repo_root))
    if not chosen:
        raise LabkitError(f"no labs found in {repo_root / SOURCE_DIR} (expected <lab>/<lab>.py)")
    written = []
    out_dir = repo_root / STUDENT_DIR
    out_dir.mkdir(exist_ok=True)
    for lab in chosen:
        extra = _extra_files(repo_root, lab)
        if extra:
            raise LabkitError(
                f"{SOURCE_DIR}/{lab}/ holds {extra}: only {lab}.py and {lab}.ipynb may be there "
                "(anything else would be copied into the student release)"
            )
    for lab, built in render_labs(repo_root, chosen).items():
        for path, text in (
            (repo_root / SOURCE_DIR / lab / f"{lab}.ipynb", built.solution_ipynb),
            (out_dir / f"{lab}.ipynb", built.student_ipynb),
        ):
            _write_atomic(path, text)
            written.append(path)
        if verbose:
            print(f"built {lab}: {SOURCE_DIR}/{lab}/{lab}.ipynb, {STUDENT_DIR}/{lab}.ipynb")
    return written


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _same_build(committed: str, built: str) -> bool:
    """The same notebook text, except perhaps ``language_info.version`` (the Python that built it)."""
    if committed == built:
        return True
    import json

    try:
        ours, theirs = json.loads(built), json.loads(committed)
        ours["metadata"]["language_info"]["version"] = theirs["metadata"]["language_info"]["version"]
    except (ValueError, KeyError, TypeError):
        return False
    return notebook_json(import_nbformat().from_dict(ours)) == committed


def check_notebooks_fresh(repo_root: str | os.PathLike | None = None, labs: Sequence[str] | None = None) -> list[str]:
    """What is out of date, as a list of messages (empty: everything is built and in sync)."""
    repo_root = Path(repo_root) if repo_root else find_repo_root()
    known = discover_labs(repo_root)
    problems = []
    chosen = select_labs(labs, known)
    for lab in chosen:
        extra = _extra_files(repo_root, lab)
        if extra:
            problems.append(f"{SOURCE_DIR}/{lab}/: unexpected files {extra} (they would ship to students)")
    try:
        rendered = render_labs(repo_root, chosen)
    except LabkitError as exc:
        return problems + [str(exc)]
    for lab, built in rendered.items():
        for rel, text in (
            (f"{SOURCE_DIR}/{lab}/{lab}.ipynb", built.solution_ipynb),
            (f"{STUDENT_DIR}/{lab}.ipynb", built.student_ipynb),
        ):
            path = repo_root / rel
            if not path.exists():
                problems.append(f"{rel} is missing: run `labkit build`")
            elif not _same_build(path.read_text(encoding="utf-8"), text):
                problems.append(f"{rel} is out of date with {SOURCE_DIR}/{lab}/{lab}.py: run `labkit build`")
    if not labs:
        for path in sorted((repo_root / STUDENT_DIR).glob("*.ipynb")) if (repo_root / STUDENT_DIR).is_dir() else []:
            if path.stem not in known:
                problems.append(f"{STUDENT_DIR}/{path.name} has no source in {SOURCE_DIR}/ (remove it)")
    return problems
