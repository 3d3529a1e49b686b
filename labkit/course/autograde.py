"""nbgrader's part of grading one lab: prepare the course, autograde one submission, write feedback."""

from __future__ import annotations

import shutil
from pathlib import Path

from labkit.course.discover import read_submission
from labkit.course.forensics import execution_report, review_notes
from labkit.course.hidden_seeds import course_secret
from labkit.course.nbgrader_setup import nbgrader_api, temporary_env, nbgrader_failure, write_course_config
from labkit.course.restore import restore_submission
from labkit.course.review import dynamic_notes
from labkit.course.results import decide_status, GradeResult
from labkit.course.settings import GradingSettings
from labkit.course.sources import import_nbformat, SOURCE_DIR, source_to_notebook
from labkit.errors import LabkitError


def release_max_score(release) -> float | None:
    if release is None:
        return None
    # autograded points only: the test cells (written answers are graded by hand and reported apart)
    return float(
        sum(
            (c.metadata.get("nbgrader") or {}).get("points", 0)
            for c in release.cells
            if (c.metadata.get("nbgrader") or {}).get("grade")
            and c.cell_type == "code"
            and not (c.metadata.get("nbgrader") or {}).get("solution")
        )
    )


def quiet_warnings():
    import warnings

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    # nbgrader's SQLAlchemy "not in session" warnings and nbformat's duplicate-id notices (repaired here)
    # are noise for an instructor reading the per-student report.
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", message=".*Non-unique cell id.*")
    return ctx


def prepare_lab(repo_root: str, lab: str, course_dir: str, settings: GradingSettings | None = None) -> float:
    """A fresh nbgrader course for ``lab``: source notebook from the .py, release, gradebook, and the course's
    own nbgrader_config.py (so that nbgrader's formgrader grades it the way labkit does). Returns the lab's
    maximum autograded score."""
    nbf = import_nbformat()
    course = Path(course_dir)
    course.mkdir(parents=True, exist_ok=True)
    write_course_config(course, settings)
    course_secret(course)  # the hidden seeds' secret, made once here, before parallel grading reads it
    src = course / "source" / lab
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    nbf.write(source_to_notebook(Path(repo_root) / SOURCE_DIR / lab / f"{lab}.py"), str(src / f"{lab}.ipynb"))
    ctx = quiet_warnings()
    try:
        result = nbgrader_api(course).generate_assignment(lab, force=True, create=True)
    finally:
        ctx.__exit__(None, None, None)
    if not result.get("success"):
        raise LabkitError(f"nbgrader generate_assignment failed for {lab}:\n{nbgrader_failure(result)}")
    return release_max_score(nbf.read(str(course / "release" / lab / f"{lab}.ipynb"), as_version=4))


def feedback_lab(course_dir: str, lab: str) -> str | None:
    ctx = quiet_warnings()
    try:
        result = nbgrader_api(Path(course_dir)).generate_feedback(lab, force=True)
    finally:
        ctx.__exit__(None, None, None)
    return None if result.get("success") else nbgrader_failure(result)


def grade_one_submission(
    student: str, lab: str, path: str, course_dir: str, settings: GradingSettings | None = None
) -> GradeResult:
    """Restore, autograde and score one submission in the prepared course ``course_dir`` (runs in a worker
    process; never raises)."""
    res = GradeResult(student, lab)
    course = Path(course_dir)
    ctx = quiet_warnings()
    try:
        nbf = import_nbformat()
        release = nbf.read(str(course / "release" / lab / f"{lab}.ipynb"), as_version=4)
        solution_ids = [
            r.metadata["nbgrader"]["grade_id"]
            for r in release.cells
            if (r.metadata.get("nbgrader") or {}).get("solution")
        ]
        _grade_one(res, Path(path), course, release, solution_ids, settings or GradingSettings())
    except Exception as exc:  # never stop on one bad submission
        res.fail(f"grading error: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        ctx.__exit__(None, None, None)
    return res


def _grade_one(res: GradeResult, path: Path, course: Path, release, solution_ids, settings: GradingSettings) -> None:
    """Restore, autograde and score one submission, filling in ``res``."""
    from nbgrader.api import Gradebook

    nbf = import_nbformat()
    lab, student = res.lab, res.student
    try:  # a regular file, not a link, of bounded size (discover.read_submission), then nbformat
        nb = nbf.reads(read_submission(path).decode("utf-8"), as_version=4)
    except Exception as exc:  # not JSON, truncated upload, a link put there after discovery, ...
        res.max_score = release_max_score(release)
        res.fail(f"unreadable notebook {path.name}: {type(exc).__name__}: {str(exc)[:200]}")
        return
    try:
        res.notes += restore_submission(nb, release)
    except Exception as exc:  # restore is best effort; autograde still runs
        res.notes.append(f"could not restore metadata: {type(exc).__name__}: {exc}")
    review = review_notes(nb, release)
    res.notes += review
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
    # ``course`` is this task's own (``task.grade_task`` unpacks a private copy of the lab's template): its
    # gradebook has one writer, and the client merges the result into the class's course (``merge``).
    scored, needs_manual_test, execution = True, False, None
    with temporary_env(LABKIT_FAST="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"):
        result = nbgrader_api(course, settings, add_missing_cells=safe).autograde(lab, student, force=True, create=True)
        if not result.get("success"):
            scored = False
            log = nbgrader_failure(result)
            if "DeadKernelError" in log or "Kernel died" in log:
                res.notes.append("the kernel died and could not be brought back")
            res.notes.append("autograde failed: " + log.replace("\n", " | ")[-400:])
        try:
            with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
                needs_manual_test = read_scores(res, gb.find_submission(lab, student))
        except Exception:
            scored = False
            res.notes.append("no score recorded")
    graded = course / "autograded" / student / lab / f"{lab}.ipynb"
    if graded.exists():
        graded_nb = nbf.read(str(graded), as_version=4)
        execution, notes = execution_report(graded_nb, settings.timeout, settings.memory_limit_gb)
        res.notes += notes
        watched = dynamic_notes(graded_nb)  # what the student's functions ran while the grader called them
        res.notes += watched
        review = review + watched
    res.status = decide_status(
        scored=scored, execution=execution, needs_manual_test=needs_manual_test, review=bool(review)
    )


def read_scores(res: GradeResult, submission) -> bool:
    """Fill ``res``'s points from nbgrader's gradebook entry of a submitted notebook or assignment: autograded
    points (test cells) apart from the written answers' manual points. True when a test cell needs manual
    grading (for ``results.decide_status``)."""
    auto = auto_max = manual = manual_max = 0.0
    pending = needs_manual_test = False
    notebooks = getattr(submission, "notebooks", None) or [submission]
    for nb in notebooks:
        for g in nb.grades:
            if g.cell.cell_type == "markdown":  # a written answer: graded by a person
                manual_max += float(g.max_score)
                pending |= bool(g.needs_manual_grade)  # nbgrader scores an untouched answer 0 by itself
                manual += float(g.score)
            else:
                auto_max += float(g.max_score)
                auto += float(g.score)
                needs_manual_test |= bool(g.needs_manual_grade)
    res.score, res.max_score = auto, auto_max
    res.manual_max, res.manual_score = manual_max, (None if pending else manual)
    return needs_manual_test
