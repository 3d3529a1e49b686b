"""Grade a folder of submissions: find them, autograde each in its own kernel, report and write scores."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from labkit.course.nbgrader_setup import _api, _course_lock, _env, _failure
from labkit.course.restore import _norm, restore_submission
from labkit.course.sources import (
    _nbformat,
    _select,
    ALLOWED_BESIDE_SOURCE,
    DEFAULT_MEMORY_LIMIT_GB,
    DEFAULT_TIMEOUT,
    discover_labs,
    find_repo_root,
    SOURCE_DIR,
    source_to_notebook,
    STUDENT_DIR,
)
from labkit.errors import LabkitError


@dataclass
class Submission:
    student: str
    lab: str
    path: Path


@dataclass
class GradeResult:
    student: str
    lab: str
    score: float | None = None
    max_score: float | None = None
    status: str = "pending"  # graded | needs manual grading | kernel died | out of memory | failed | no submission
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        score = "-" if self.score is None else f"{self.score:g}/" + ("?" if self.max_score is None else f"{self.max_score:g}")
        notes = "; ".join(self.notes)
        return f"{self.student:<20} {self.lab:<20} {score:>9}  {self.status}" + (f"  ({notes})" if notes else "")


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@.-]+", "-", text).strip("-.") or "unknown"


def _lab_from_name(name: str, labs: Sequence[str]) -> str | None:
    low = name.lower()
    for lab in sorted(labs, key=len, reverse=True):
        if lab.lower() in low:
            return lab
    for lab in labs:
        prefix = lab.split("_")[0].lower()  # "lab01"
        if re.search(rf"(^|[^a-z0-9]){re.escape(prefix)}([^0-9]|$)", low):
            return lab
    return None


def _lab_from_content(path: Path, releases: dict) -> str | None:
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except Exception:
        return None
    ids = {((c.get("metadata") or {}).get("nbgrader") or {}).get("grade_id") for c in cells}
    texts = {_norm("".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", "")) for c in cells}
    best, best_score = None, 0
    for lab, rel in releases.items():
        score = sum(1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("grade_id") in ids)
        score += sum(1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("locked") and _norm(c.source) in texts)
        if score > best_score:
            best, best_score = lab, score
    return best


def find_submissions(submissions_dir: str | os.PathLike, labs: Sequence[str], releases: dict | None = None):
    """Find ``(submissions, problems)`` in either layout:

    * ``<student>/<lab>.ipynb`` or ``<student>/<lab>/<lab>.ipynb`` (nbgrader's submitted layout);
    * flat, as an LMS download: ``<student>_<anything>.ipynb``, the student id being everything before the
      first underscore, the lab found in the rest of the name (``lab01_forward`` or ``lab01``) or, failing
      that, from the notebook's content.

    When a student has several files for one lab the newest (by modification time) is graded.
    """
    root = Path(submissions_dir)
    if not root.is_dir():
        raise LabkitError(f"submissions folder {root} does not exist")
    found: dict[tuple[str, str], list[Path]] = {}
    problems: list[str] = []

    def add(student: str, path: Path, hint: str) -> None:
        lab = _lab_from_name(hint, labs) or (_lab_from_content(path, releases) if releases else None)
        if lab is None:
            problems.append(f"{path.relative_to(root)}: cannot tell which lab this is (name it <student>_<lab>.ipynb)")
            return
        found.setdefault((student, lab), []).append(path)

    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in ALLOWED_BESIDE_SOURCE:
            continue
        if entry.is_dir():
            student = _safe_id(entry.name)
            notebooks = [p for p in sorted(entry.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
            if not notebooks:
                problems.append(f"{entry.name}/: {_empty_folder_note(entry)}")
            for nbpath in notebooks:
                add(student, nbpath, str(nbpath.relative_to(entry)))
        elif entry.suffix == ".ipynb":
            student, _, rest = entry.stem.partition("_")
            add(_safe_id(student), entry, rest or entry.stem)
    subs = []
    for (student, lab), paths in sorted(found.items()):
        paths = sorted(paths, key=lambda p: p.stat().st_mtime)
        if len(paths) > 1:
            problems.append(f"{student}/{lab}: {len(paths)} files, grading the newest ({paths[-1].name})")
        subs.append(Submission(student, lab, paths[-1]))
    return subs, problems


def _empty_folder_note(folder: Path) -> str:
    others = sorted(p.name for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    if not others:
        return "empty folder, no notebook submitted"
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    return f"no notebook (.ipynb) in the folder, only {shown}"


def _empty_students(submissions_dir: Path, subs: Sequence[Submission]) -> list[tuple[str, str]]:
    """``(student, note)`` for each student folder in which no notebook was found."""
    graded = {s.student for s in subs}
    out = []
    for entry in sorted(Path(submissions_dir).iterdir()):
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in ALLOWED_BESIDE_SOURCE:
            if _safe_id(entry.name) not in graded and not any(
                    ".ipynb_checkpoints" not in p.parts for p in entry.rglob("*.ipynb")):
                out.append((_safe_id(entry.name), _empty_folder_note(entry)))
    return out


def grade_submissions(submissions_dir: str | os.PathLike, out_dir: str | os.PathLike, labs: Sequence[str] | None = None,
                      *, repo_root: str | os.PathLike | None = None, timeout: int = DEFAULT_TIMEOUT,
                      feedback: bool = True, jobs: int | None = None, verbose: bool = True,
                      memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB) -> list[GradeResult]:
    """Autograde every submission in ``submissions_dir``; write results under ``out_dir``:

        out_dir/nbgrader/<lab>/      one nbgrader course per lab (source, release, submitted, autograded,
                                     feedback, gradebook.db): open it with nbgrader for manual grading
        out_dir/scores.csv           student, lab, score, max_score, status, notes
        out_dir/feedback/<student>/<lab>.html

    Submissions are autograded in parallel processes (``jobs``, default: up to 4, one per CPU), each in its
    own kernel with a finite per-cell ``timeout`` and a memory cap of ``memory_limit_gb`` (0: none). One
    bad submission (unreadable file, infinite loop, dead kernel, memory blow-up) is reported and never
    stops the others. Status per submission: ``graded``, ``needs manual grading``, ``kernel died`` (scored
    from the cells that could run), ``out of memory`` (a cell hit the memory cap), ``failed`` (no score
    from nbgrader) or ``no submission`` (an empty student folder); the notes say what was repaired and
    which cells failed, timed out or look like tampering.
    """
    repo_root = Path(repo_root).resolve() if repo_root else find_repo_root()
    out_dir = Path(out_dir).resolve()
    chosen = _select(labs, discover_labs(repo_root))
    nbf = _nbformat()
    releases = {}  # the built student notebooks tell which lab an oddly named file is
    for lab in chosen:
        path = repo_root / STUDENT_DIR / f"{lab}.ipynb"
        if path.exists():
            releases[lab] = nbf.read(str(path), as_version=4)
    subs, problems = find_submissions(submissions_dir, chosen, releases)
    if verbose:
        for p in problems:
            print(f"note: {p}")
    empty = _empty_students(Path(submissions_dir), subs)
    active = [lab for lab in chosen if any(s.lab == lab for s in subs)]
    empty_labs = active or chosen[:1]
    jobs = max(1, min(jobs or min(4, os.cpu_count() or 1), len(subs) or 1))
    if os.name == "nt":  # no fcntl lock for the shared gradebook (see _course_lock): one at a time
        jobs = 1
    courses = {lab: str(out_dir / "nbgrader" / lab) for lab in set(active) | set(empty_labs)}

    with _workers(jobs) as run:
        prepared = dict(zip(active, run(_prepare_lab, [(str(repo_root), lab, courses[lab]) for lab in active])))
        tasks, results = [], []
        for s in sorted(subs, key=lambda s: (chosen.index(s.lab), s.student)):
            res = GradeResult(s.student, s.lab)
            results.append(res)
            if isinstance(prepared[s.lab], BaseException):
                res.status = "failed"
                res.notes.append(f"could not prepare {s.lab}: {str(prepared[s.lab])[-300:]}")
            else:
                tasks.append((res, (s.student, s.lab, str(s.path), courses[s.lab], timeout, memory_limit_gb)))

        def report(res: GradeResult) -> None:
            if verbose:
                print(res.line(), flush=True)

        for (res, args), done in zip(tasks, run(_grade_submission, [a for _, a in tasks], on_result=report)):
            if isinstance(done, BaseException):  # the worker process itself died
                res.status = "failed"
                res.notes.append(f"grading error: {type(done).__name__}: {str(done)[:300]}")
            else:
                res.score, res.max_score, res.status, res.notes = done.score, done.max_score, done.status, done.notes
        for lab in empty_labs:
            max_score = _max_score(releases.get(lab))
            for student, note in empty:
                res = GradeResult(student, lab, 0.0, max_score, "no submission", [note])
                results.append(res)
                report(res)
        graded_labs = [lab for lab in active if any(r.lab == lab and r.status not in ("failed", "no submission")
                                                    for r in results)]
        if feedback:
            for lab, warning in zip(graded_labs, run(_feedback_lab, [(courses[lab], lab) for lab in graded_labs])):
                if warning:
                    print(f"warning: feedback for {lab} failed: {warning}", file=sys.stderr)
    for r in results:
        html = out_dir / "nbgrader" / r.lab / "feedback" / r.student / r.lab / f"{r.lab}.html"
        if html.exists():
            (out_dir / "feedback" / r.student).mkdir(parents=True, exist_ok=True)
            shutil.copy2(html, out_dir / "feedback" / r.student / f"{r.lab}.html")
    write_scores_csv(results, out_dir / "scores.csv")
    if verbose:
        print(f"{len(results)} submissions, {sum(r.status == 'graded' for r in results)} graded; "
              f"scores in {out_dir / 'scores.csv'}")
    return results


def _max_score(release) -> float | None:
    if release is None:
        return None
    return float(sum((c.metadata.get("nbgrader") or {}).get("points", 0) for c in release.cells
                     if (c.metadata.get("nbgrader") or {}).get("grade")))


@contextlib.contextmanager
def _workers(jobs: int):
    """``run(fn, list_of_arg_tuples, on_result=None)`` -> results in order; an exception raised by a call
    is returned in its place. ``jobs`` > 1: calls run in that many spawned processes."""
    if jobs == 1:
        def run(fn, arglist, on_result=None):
            out = []
            for args in arglist:
                try:
                    out.append(fn(*args))
                except Exception as exc:
                    out.append(exc)
                if on_result and not isinstance(out[-1], BaseException):
                    on_result(out[-1])
            return out

        yield run
        return
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        def run(fn, arglist, on_result=None):
            futures = [pool.submit(fn, *args) for args in arglist]
            for fut in concurrent.futures.as_completed(futures):
                if on_result and fut.exception() is None:
                    on_result(fut.result())
            return [f.exception() if f.exception() is not None else f.result() for f in futures]

        yield run


def _quiet_warnings():
    import warnings

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    # nbgrader's SQLAlchemy "not in session" warnings and nbformat's duplicate-id notices (repaired here)
    # are noise for an instructor reading the per-student report.
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", message=".*Non-unique cell id.*")
    return ctx


def _prepare_lab(repo_root: str, lab: str, course_dir: str) -> float:
    """A fresh nbgrader course for ``lab``: source notebook from the .py, release, gradebook. Returns the
    lab's maximum score."""
    nbf = _nbformat()
    course = Path(course_dir)
    src = course / "source" / lab
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    nbf.write(source_to_notebook(Path(repo_root) / SOURCE_DIR / lab / f"{lab}.py"), str(src / f"{lab}.ipynb"))
    ctx = _quiet_warnings()
    try:
        result = _api(course).generate_assignment(lab, force=True, create=True)
    finally:
        ctx.__exit__(None, None, None)
    if not result.get("success"):
        raise LabkitError(f"nbgrader generate_assignment failed for {lab}:\n{_failure(result)}")
    return _max_score(nbf.read(str(course / "release" / lab / f"{lab}.ipynb"), as_version=4))


def _feedback_lab(course_dir: str, lab: str) -> str | None:
    ctx = _quiet_warnings()
    try:
        result = _api(Path(course_dir)).generate_feedback(lab, force=True)
    finally:
        ctx.__exit__(None, None, None)
    return None if result.get("success") else _failure(result)


def _grade_submission(student: str, lab: str, path: str, course_dir: str, timeout: int,
                      memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB) -> GradeResult:
    """Restore, autograde and score one submission in the prepared course ``course_dir`` (runs in a worker
    process; never raises)."""
    res = GradeResult(student, lab)
    course = Path(course_dir)
    ctx = _quiet_warnings()
    try:
        nbf = _nbformat()
        release = nbf.read(str(course / "release" / lab / f"{lab}.ipynb"), as_version=4)
        solution_ids = [r.metadata["nbgrader"]["grade_id"] for r in release.cells
                        if (r.metadata.get("nbgrader") or {}).get("solution")]
        _grade_one(res, Path(path), course, release, solution_ids, timeout, memory_limit_gb)
    except Exception as exc:  # never stop on one bad submission
        res.status = "failed"
        res.notes.append(f"grading error: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        ctx.__exit__(None, None, None)
    return res


def _grade_one(res: GradeResult, path: Path, course: Path, release, solution_ids, timeout: int,
               memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB) -> None:
    """Restore, autograde and score one submission, filling in ``res``."""
    from nbgrader.api import Gradebook

    nbf = _nbformat()
    lab, student = res.lab, res.student
    try:
        nb = nbf.read(str(path), as_version=4)
    except Exception as exc:  # not JSON, truncated upload, ...
        res.status, res.score, res.max_score = "failed", 0.0, _max_score(release)
        res.notes.append(f"unreadable notebook {path.name}: {type(exc).__name__}: {str(exc)[:200]}")
        return
    try:
        res.notes += restore_submission(nb, release)
    except Exception as exc:  # restore is best effort; autograde still runs
        res.notes.append(f"could not restore metadata: {type(exc).__name__}: {exc}")
    res.notes += tampering_notes(nb)
    target = course / "submitted" / student / lab
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    nbf.write(nb, str(target / f"{lab}.ipynb"))
    present = {(c.metadata.get("nbgrader") or {}).get("grade_id") for c in nb.cells}
    # add_missing_cells crashes (KeyError) when a solution cell is gone too: only enable it when safe.
    safe = all(g in present for g in solution_ids)
    # Fast mode, and one thread per kernel: submissions are graded in parallel processes, and torch's thread
    # pool slows down ten-fold on an oversubscribed CPU (measured: 4 s instead of 0.4 s per training step).
    # The course lock keeps nbgrader's gradebook to one writer; it is let go while the notebook executes.
    with _env(LABKIT_FAST="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"), _course_lock(course):
        result = _api(course, timeout=timeout, add_missing_cells=safe,
                      memory_limit_gb=memory_limit_gb).autograde(lab, student, force=True, create=True)
        if not result.get("success"):
            res.status = "failed"
            log = _failure(result)
            if "DeadKernelError" in log or "Kernel died" in log:
                res.notes.append("the kernel died and could not be brought back: scored as far as nbgrader got")
            res.notes.append("autograde failed: " + log.replace("\n", " | ")[-400:])
        try:
            with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
                s = gb.find_submission(lab, student)
                res.score, res.max_score = float(s.score), float(s.max_score)
                if res.status != "failed":
                    res.status = "needs manual grading" if s.needs_manual_grade else "graded"
        except Exception:
            res.status = "failed"
            res.notes.append("no score recorded")
    graded = course / "autograded" / student / lab / f"{lab}.ipynb"
    if graded.exists():
        status, notes = execution_report(nbf.read(str(graded), as_version=4), timeout, memory_limit_gb)
        res.notes += notes
        if status and res.status != "failed":
            res.status = status


MEMORY_ERRORS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "Unable to allocate",
                 "std::bad_alloc", "out of memory")


def execution_report(nb, timeout: int | None = None, memory_limit_gb: float | None = None) -> tuple[str | None, list[str]]:
    """What went wrong while an autograded notebook ran: ``(status or None, notes)``, one note per code cell
    with an error output. Status: ``kernel died`` (a DeadKernelError output, see ``GuardedExecute``) before
    ``out of memory`` (an error that names a failed allocation)."""
    died = oom = False
    notes = []
    for i, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if cell.cell_type != "code" or not errors:
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


def write_scores_csv(results: Iterable[GradeResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "lab", "score", "max_score", "status", "notes"])
        for r in results:
            w.writerow([r.student, r.lab, "" if r.score is None else f"{r.score:g}",
                        "" if r.max_score is None else f"{r.max_score:g}", r.status, "; ".join(r.notes)])
